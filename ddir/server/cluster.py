"""Where the workers run: in the intake process (``-w 1``) or as N processes.

Both clusters take worker messages (:mod:`ddir.server.worker`) and have the
same two verbs: ``broadcast`` (every worker, one reply each, in worker order)
and ``send`` (one worker, no reply: a ``stage`` for the owner of the key).

:class:`ProcessCluster` is the sequencer: it stamps every message with a
sequence number and writes it to each worker's control socket, so every
worker sees the messages in the same order (a worker refuses one that goes
backwards). Workers are forked before any thread starts; they ignore SIGINT
(Ctrl-C at the terminal reaches the whole process group, and a tick must not
be torn in half) and die with the intake. A worker that dies is noticed at
once, by a monitor thread when the intake is idle or by the intake when it
is waiting for replies, and reported once through ``on_death``.

Every cluster can be asked to ``cancel`` the command it runs, from any
thread: it sets a byte that its workers read at every round of their scopes
(:mod:`ddir.engine.limits`): a ``bytearray`` for a worker in this process, a
shared anonymous ``mmap`` made before the worker processes are forked.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback

from ..ir.codec import unpackb
from .mesh import Mesh
from .wire import FrameBuffer, PeerLost, frame, recv_message, send_message
from .worker import Worker

EXIT_PEER_LOST = 3   # a worker that stopped because another one vanished
EXIT_FATAL = 4       # a worker that hit a bug and reported it


# The intake ends of the control sockets of every live cluster in this
# process: a worker forked later inherits them and must close them, or an
# older cluster's workers would never see their control stream end.
_INTAKE_ENDS: set = set()


class WorkerDied(Exception):
    """A worker process is gone; the cluster cannot go on."""


class LocalCluster:
    """The single worker, called directly: no processes, no serialisation."""

    shards = 1

    def __init__(self, functions: dict | None = None) -> None:
        self.flag = bytearray(1)
        self.worker = Worker(functions=functions, flag=self.flag)

    def cancel(self, on: bool = True) -> None:
        """Ask the worker to stop the running command (``on=False``: the
        command is over, nothing is asked)."""
        self.flag[0] = on

    def broadcast(self, message) -> list:
        return [self.worker.execute(message)]

    def send(self, shard: int, message) -> None:
        self.worker.execute(message)

    def close(self) -> None:
        pass


class ProcessCluster:
    def __init__(self, shards: int, on_death=None, functions: dict | None = None):
        self.shards = shards
        self.on_death = on_death   # called once with the message; may not return
        self.dead: str | None = None
        self.fatal: dict = {}      # worker -> the error it reported before exiting
        self._seq = 0
        self._closing = False
        self._lock = threading.Lock()
        import mmap
        import multiprocessing  # here, not at the top: `-w 1` never needs it (~20 ms of start)
        self.flag = mmap.mmap(-1, mmap.PAGESIZE)  # shared with every worker (see cancel)
        _allow_open_files(2 * shards * shards + 64)  # every socket exists in here at first
        context = multiprocessing.get_context("fork")
        control = [socket.socketpair() for _ in range(shards)]
        mesh = {(i, j): socket.socketpair() for i in range(shards) for j in range(i + 1, shards)}
        every = [s for pair in control for s in pair] + [s for pair in mesh.values() for s in pair]
        self.processes = []
        for w in range(shards):
            peers = {j: mesh[(min(w, j), max(w, j))][0 if w < j else 1]
                     for j in range(shards) if j != w}
            inherited = every + list(_INTAKE_ENDS)
            process = context.Process(target=_worker_main, name=f"ddir-worker-{w}", daemon=True,
                                      args=(w, shards, control[w][1], peers, inherited, os.getpid(),
                                            functions, self.flag))
            process.start()
            self.processes.append(process)
        self.controls = [pair[0] for pair in control]
        _INTAKE_ENDS.update(self.controls)
        for s in every:
            if s not in self.controls:
                s.close()
        self.buffers = [FrameBuffer() for _ in range(shards)]
        self.selector = selectors.DefaultSelector()
        for w, sock in enumerate(self.controls):
            self.selector.register(sock, selectors.EVENT_READ, w)
        threading.Thread(target=self._monitor, name="ddir-worker-monitor", daemon=True).start()

    # ------------------------------------------------------------ verbs

    def cancel(self, on: bool = True) -> None:
        """Ask every worker to stop the running command (any thread)."""
        self.flag[0] = on

    def broadcast(self, message) -> list:
        data = self._stamp(message)
        for w in range(self.shards):
            self._send(w, data)
        return self._gather()

    def send(self, shard: int, message) -> None:
        self._send(shard, self._stamp(message))

    def _stamp(self, message) -> bytes:
        if self.dead is not None:
            raise WorkerDied(self.dead)
        self._seq += 1
        return frame((self._seq, message))

    def _send(self, w: int, data: bytes) -> None:
        try:
            self.controls[w].sendall(data)
        except OSError:
            raise WorkerDied(self._died()) from None

    def _gather(self) -> list:
        replies = [None] * self.shards
        missing = set(range(self.shards))
        for w in list(missing):
            payload = self.buffers[w].take()
            if payload is not None:
                replies[w] = self._reply(w, payload)
                missing.discard(w)
        while missing:
            try:
                ready = self.selector.select()
            except (OSError, ValueError):  # sockets closed under us: a death is being reported
                raise WorkerDied(self._died()) from None
            for key, _ in ready:
                w = key.data
                buf = self.buffers[w]
                try:
                    buf.fill(self.controls[w])
                except (PeerLost, OSError):
                    raise WorkerDied(self._died()) from None
                if w in missing:
                    payload = buf.take()
                    if payload is not None:
                        replies[w] = self._reply(w, payload)
                        missing.discard(w)
        return replies

    def _reply(self, w: int, payload: bytes):
        seq, reply = unpackb(payload)
        if isinstance(reply, dict) and "fatal" in reply:
            self.fatal[w] = reply["fatal"]
            raise WorkerDied(self._died())
        if seq != self._seq:
            self.fatal[w] = f"answered message {seq} while {self._seq} was expected"
            raise WorkerDied(self._died())
        return reply

    # ------------------------------------------------------------ failure

    def _monitor(self) -> None:
        import multiprocessing.connection
        multiprocessing.connection.wait([p.sentinel for p in self.processes])
        if not self._closing:
            self._died()

    def _died(self) -> str:
        """Describe the failure, stop every worker, report once."""
        with self._lock:
            if self.dead is not None:
                return self.dead
            # Let the culprit's exit status arrive, and the error a failing
            # worker sent before exiting (the intake thread reads it; the
            # monitor may see the exit first).
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not self._settled():
                time.sleep(0.01)
            self.dead = self._describe()
            self._stop_all(grace=0)
            if self.on_death is not None:
                self.on_death(self.dead)
            return self.dead

    def _settled(self) -> bool:
        culprits = self._culprits()
        return bool(culprits) and (
            any(w in self.fatal for w in culprits)
            or all(self.processes[w].exitcode != EXIT_FATAL for w in culprits))

    def _culprits(self) -> list:
        return [w for w, p in enumerate(self.processes)
                if w in self.fatal or p.exitcode not in (None, 0, EXIT_PEER_LOST)]

    def _describe(self) -> str:
        culprits = self._culprits()
        if not culprits:
            return "a worker process stopped unexpectedly; the server stops"
        w = min(culprits, key=lambda c: (c not in self.fatal, c))  # one that said why, first
        code = self.processes[w].exitcode
        if w in self.fatal:
            what = f"failed: {self.fatal[w]}"
        elif code is not None and code < 0:
            what = f"died (killed by {signal.Signals(-code).name})"
        else:
            what = f"exited with status {code}"
        return f"worker {w} {what}; the server stops"

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop every worker (end of input, exit, Ctrl-C): no orphans."""
        self._closing = True
        self._stop_all(grace=2.0)

    def _stop_all(self, grace: float) -> None:
        self.flag[0] = 1  # a worker in the middle of a tick stops it at its next round
        for sock in self.controls:
            _INTAKE_ENDS.discard(sock)
            try:
                sock.close()  # a worker reading its control socket exits at end of stream
            except OSError:
                pass
        deadline = time.monotonic() + grace
        for p in self.processes:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.exitcode is None:
                p.kill()
        for p in self.processes:
            p.join(1.0)


def _allow_open_files(needed: int) -> None:
    """Raise the soft limit on open files (often 1024) towards the hard one:
    -w 64 needs about 8200 descriptors while the mesh is being built."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def name_process(title: str) -> None:
    """What `ps` and `top` show for this process (issue 26: every worker
    looked exactly like the server, `ddir serve -w 3 --port 0`). The
    command line with ``setproctitle``; else at least the kernel's short
    name (``prctl(PR_SET_NAME)``, 15 bytes: what `top` and `ps -e` show)."""
    try:
        from setproctitle import setproctitle
        setproctitle(title)
        return
    except ImportError:
        pass
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _worker_main(index: int, shards: int, control, peers: dict, inherited: list,
                 parent: int, functions: dict | None = None, flag=None) -> None:
    """``functions``: the callables of ``--functions`` (SPEC C5), inherited
    through the fork: the module was imported in the intake before it."""
    for s in inherited:  # keep only our own sockets, so a peer's death reads as end of stream
        if s is not control and s not in peers.values():
            s.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    name_process(f"ddir worker {index}/{shards}")
    worker = Worker(index, shards, Mesh(index, shards, peers) if shards > 1 else None,
                    functions=functions, flag=flag)
    buffer = FrameBuffer()
    last = 0
    while True:
        try:
            seq, message = recv_message(control, buffer)
        except (PeerLost, OSError):
            os._exit(0)  # the intake closed our socket or is gone: shut down
        try:
            if seq <= last:
                raise RuntimeError(f"message {seq} arrived after message {last}")
            last = seq
            reply = worker.execute(message)
        except PeerLost:
            os._exit(EXIT_PEER_LOST)
        except Exception as e:  # a bug: report it, then stop (peers see us go)
            text = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
            try:
                send_message(control, (seq, {"fatal": text}))
            except OSError:
                pass
            os._exit(EXIT_FATAL)
        if reply is not None:
            try:
                send_message(control, (seq, reply))
            except OSError:
                os._exit(0)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker if the intake dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)
