"""ddir over MPI (SPEC C7): ``mpiexec -n N ddir --mpi ...``.

Every rank is a worker, and worker ``w`` is rank ``w``; rank 0 also runs the
intake, with worker 0 in its own process as ``-w 1`` has it. So the shards,
and every output, are those of ``-w N``. Two communicators, duplicates of
``COMM_WORLD``, keep the two planes apart:

* **control**: the sequencer's messages, point to point from rank 0 to each
  worker rank, and their replies back, as msgpack bytes (never pickle).
  Point to point and not ``Bcast``: the stream mixes broadcasts with
  ``stage`` messages for one owner only, and MPI keeps the order of the
  messages between two ranks on one communicator and tag (as the control
  socket of ``-w N`` does), whereas a ``Bcast`` would need every rank to know
  in advance that the next message is one.
* **data**: the engine's exchange (:class:`MpiExchange`), by collectives.

Waiting is polling: a blocking MPI call spins at full speed (MPICH does),
which on a machine with fewer cores than ranks takes the CPU from the rank
with work, and at an idle prompt keeps every core busy. :func:`_wait` tests
the request, yields the CPU while the wait is young, then sleeps in growing
steps. It also lets rank 0 notice a lost rank (:mod:`ddir.server.lifeline`)
while it waits. The line that says so is printed by rank 0's reporter
(:mod:`ddir.server.reporter`), a process that MPICH's ``mpiexec`` does not
kill with the ranks.

mpi4py is optional (``pip install 'ddir[mpi]'``); it is imported only here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

from ..ir.codec import packb, unpackb
from . import lifeline
from .cluster import WorkerDied
from .collective import ByteExchange
from .worker import Worker

INSTALL_HINT = "pip install 'ddir[mpi]'"
REPORTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reporter.py")
REPORT_TIMEOUT = 5.0  # how long rank 0 waits for the reporter to print its line
_CONTROL, _REPLY = 1, 2
# Messages of the rank loop itself, not the Worker's.
_CLOSE = ("mpi_close",)  # this server is over: start afresh (another may follow)
_EXIT = ("mpi_exit",)    # the job is over


class MpiUnavailable(Exception):
    """mpi4py or an MPI library is missing (one line, saying what to install)."""


def _load():
    try:
        import mpi4py
        mpi4py.rc.thread_level = "serialized"  # `serve` calls MPI from its sequencer thread
        mpi4py.rc.finalize = False             # Ranks.finalize does it, every rank together
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as e:
        raise MpiUnavailable(f"--mpi needs mpi4py and an MPI library ({e}): "
                             f"{INSTALL_HINT}") from None
    return MPI


def launched_rank() -> int:
    """This process's rank as the launcher set it, without loading MPI (0 if
    not launched by one): only rank 0 should say that MPI is missing."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


_finalized = False
FINALIZE_TIMEOUT = 10.0


def _finalize_mpi(MPI) -> None:
    """``MPI_Finalize`` with the GIL released. mpi4py's ``Finalize`` holds
    it, so while a lost rank kept Finalize waiting (``-disable-auto-cleanup``)
    the guard's timer thread could never run, and the rank hung for good;
    ctypes releases the GIL around a foreign call. The symbol is looked up
    through mpi4py's extension, which links the MPI library."""
    try:
        import ctypes
        finalize = ctypes.CDLL(MPI.__file__).MPI_Finalize
    except (ImportError, OSError, AttributeError):
        MPI.Finalize()
        return
    finalize.argtypes, finalize.restype = [], ctypes.c_int
    finalize()


def leave(code: int) -> None:
    """End this process with ``code``. After MPI is finalized this must be
    the C library's ``exit``: MPICH tells ``mpiexec`` that the rank ended in
    order from a C exit handler, which ``os._exit`` skips, and a rank that
    vanishes without it makes ``mpiexec`` kill the others (seen 1 run in 3).
    Python's own teardown is still skipped (see ``ddir.cli.entry``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if _finalized:
        import ctypes
        ctypes.CDLL(None).exit(code)
    os._exit(code)


# ---------------------------------------------------------------- waiting

# A waiting rank polls (yielding the CPU) for a while, then sleeps in
# growing naps up to NAP_MAX (IDLE_MAX between commands), with the kernel's
# timer slack cut so that a nap of 20 us is not 70. Measured on 2 cores
# (bench/RESULTS.md): with a core per rank, polling for 50 ms keeps small
# ticks as fast as -w N; with more ranks than cores, polling takes the CPU
# from the ranks with work, and 0.2 ms is better. DDIR_MPI_SPIN (seconds)
# overrides the choice.
SPIN_OWN_CORE = 0.05
SPIN_SHARED_CORE = 0.0002
SPIN = SPIN_SHARED_CORE
NAP_MAX = 0.0002
IDLE_MAX = 0.001


def _choose_spin(world, MPI) -> float:
    here = world.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this host (every rank calls it)
    local = here.Get_size()
    here.Free()
    if "DDIR_MPI_SPIN" in os.environ:
        try:
            return max(0.0, float(os.environ["DDIR_MPI_SPIN"]))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return SPIN_OWN_CORE if local <= cores else SPIN_SHARED_CORE


def _fine_timers() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(29, 1000)  # PR_SET_TIMERSLACK: 1 us
        except (OSError, AttributeError):
            pass


def _wait(ready, nap_max: float = NAP_MAX, check=None):
    """Call ``ready()`` until it returns something other than None/False."""
    result = ready()
    if result:
        return result
    start = time.monotonic()
    nap = 0.0
    while True:
        if time.monotonic() - start < SPIN:
            os.sched_yield()
        else:
            if check is not None:
                check()
            nap = min(nap * 1.5 if nap else 20e-6, nap_max)
            time.sleep(nap)
        result = ready()
        if result:
            return result


# ---------------------------------------------------------------- the exchange

SLOT = 512      # bytes per peer in a collective's first round
_HEAD = struct.Struct("<qq")  # payload length, "some rank sends more than a slot"
_ROOM = SLOT - _HEAD.size


class MpiExchange(ByteExchange):
    """The engine's exchange over MPI collectives.

    Each step is one ``Alltoall`` (``Allgather`` for agree_min) of fixed
    slots, which hold every small payload whole, so the receiver needs no
    separate round to learn the sizes; only when some rank sends more than a
    slot does a second round (``Alltoallv``/``Allgatherv``) carry the rest,
    and every rank knows from the first round whether one follows. Measured
    on 2 to 4 ranks (bench/mpi_transport.py): twice as fast as a round of
    counts plus ``Alltoallv``, as fast as point-to-point sends, and one call
    (MPI picks the algorithm for many ranks)."""

    def __init__(self, comm, MPI, check=None):
        self.comm, self.MPI, self.check = comm, MPI, check
        self.index, self.peers = comm.Get_rank(), comm.Get_size()
        self.steps = 0
        n = self.peers
        self._send = bytearray(n * SLOT)
        self._recv = bytearray(n * SLOT)

    def alltoall(self, payloads: list) -> list:
        n, MPI = self.peers, self.MPI
        self.steps += 1
        more = any(p is not None and len(p) > _ROOM for p in payloads)
        for p, data in enumerate(payloads):
            if p == self.index:
                continue
            at = p * SLOT
            _HEAD.pack_into(self._send, at, len(data), more)
            head = data[:_ROOM]
            self._send[at + _HEAD.size:at + _HEAD.size + len(head)] = head
        self._complete(self.comm.Ialltoall([self._send, SLOT, MPI.BYTE],
                                           [self._recv, SLOT, MPI.BYTE]))
        lengths, received = self._firsts()
        if more or any(flag for _, flag in lengths):
            sizes = [0 if p == self.index else max(0, len(payloads[p]) - _ROOM) for p in range(n)]
            tails = [b"" if p == self.index else payloads[p][_ROOM:] for p in range(n)]
            counts = [0 if p == self.index else max(0, lengths[p][0] - _ROOM) for p in range(n)]
            rest = bytearray(sum(counts))
            self._complete(self.comm.Ialltoallv([b"".join(tails), sizes, _displs(sizes), MPI.BYTE],
                                                [rest, counts, _displs(counts), MPI.BYTE]))
            at = 0
            for p in range(n):
                if counts[p]:
                    received[p] += rest[at:at + counts[p]]
                    at += counts[p]
        return [None if p == self.index else bytes(received[p]) for p in range(n)]

    def allgather(self, payload: bytes) -> list:
        n, MPI = self.peers, self.MPI
        self.steps += 1
        more = len(payload) > _ROOM
        mine = bytearray(SLOT)
        _HEAD.pack_into(mine, 0, len(payload), more)
        mine[_HEAD.size:_HEAD.size + min(len(payload), _ROOM)] = payload[:_ROOM]
        self._complete(self.comm.Iallgather([mine, SLOT, MPI.BYTE], [self._recv, SLOT, MPI.BYTE]))
        lengths, received = self._firsts()
        if more or any(flag for _, flag in lengths):
            counts = [0 if p == self.index else max(0, lengths[p][0] - _ROOM) for p in range(n)]
            counts[self.index] = max(0, len(payload) - _ROOM)
            rest = bytearray(sum(counts))
            self._complete(self.comm.Iallgatherv([payload[_ROOM:], counts[self.index], MPI.BYTE],
                                                 [rest, counts, _displs(counts), MPI.BYTE]))
            at = 0
            for p in range(n):
                if counts[p] and p != self.index:
                    received[p] += rest[at:at + counts[p]]
                at += counts[p]
        return [None if p == self.index else bytes(received[p]) for p in range(n)]

    def _firsts(self) -> tuple:
        """Each peer's (length, more) and the part of its payload in its slot."""
        lengths, received = [], []
        view = self._recv
        for p in range(self.peers):
            if p == self.index:
                lengths.append((0, False))
                received.append(None)
                continue
            at = p * SLOT
            length, more = _HEAD.unpack_from(view, at)
            lengths.append((length, more))
            received.append(bytearray(view[at + _HEAD.size:at + _HEAD.size + min(length, _ROOM)]))
        return lengths, received

    def _complete(self, request) -> None:
        _wait(request.Test, check=self.check)


def _displs(counts: list) -> list:
    out, at = [], 0
    for c in counts:
        out.append(at)
        at += c
    return out


# ---------------------------------------------------------------- the job

class Ranks:
    """This process's place in the MPI job: its rank, the communicators and
    its lifelines. Made once per process, by every rank, at start-up."""

    def __init__(self):
        MPI = _load()
        self.MPI = MPI
        world = MPI.COMM_WORLD
        self.rank, self.size = world.Get_rank(), world.Get_size()
        self.control = world.Dup()
        self.data = world.Dup()
        self.hub = self.line = None
        self.reporter = None        # rank 0: (process, socket), see start_reporter
        self._tell = threading.Lock()
        global SPIN
        SPIN = _choose_spin(world, MPI)
        _fine_timers()
        if self.size > 1:
            # MPICH's mpiexec, told not to clean up, signals SIGUSR1 to the
            # survivors of a lost rank, which kills a process that has no
            # handler for it before it can say why: the lifelines do that.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            self._connect(world)

    def _connect(self, world) -> None:
        """Open the lifelines. Rank 0 tells every rank where it listens
        (a fixed-size Bcast of msgpack bytes), each connects."""
        info = bytearray(1024)
        if self.rank == 0:
            server, port, secret = lifeline.listen()
            packed = packb((self.MPI.Get_processor_name(), port, secret))
            info[:4] = len(packed).to_bytes(4, "big")
            info[4:4 + len(packed)] = packed
        world.Bcast([info, self.MPI.BYTE], root=0)
        host, port, secret = unpackb(bytes(info[4:4 + int.from_bytes(info[:4], "big")]))
        try:
            if self.rank == 0:
                self.hub = lifeline.Hub(server, secret, self.size - 1)
            else:
                same = host == self.MPI.Get_processor_name()
                self.line = lifeline.Line(host, port, secret, self.rank, same)
        except lifeline.LifelineError as e:  # the launcher then ends the other ranks
            print(f"error: {e}", file=sys.stderr, flush=True)
            os._exit(2)

    # ------------------------------------------------------------ the reporter

    def start_reporter(self, render) -> None:
        """Rank 0 of a job of several ranks: start the process that prints
        the line ending the job (:mod:`ddir.server.reporter`), out of the
        launcher's reach. ``render(message)`` is the line the session prints
        for an error ``message``. Without it (it could not start) rank 0
        prints for itself, as before, and may lose the race."""
        if self.hub is None or self.reporter is not None:
            return
        mine, theirs = socket.socketpair()
        fds = {rank: sock.fileno() for rank, sock in self.hub.sockets.items()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMI_")}  # not a rank
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", REPORTER, str(theirs.fileno())],
                pass_fds=[theirs.fileno(), *fds.values()], stdin=subprocess.DEVNULL,
                start_new_session=True, env=env)
        except OSError:
            mine.close()
            return
        finally:
            theirs.close()
        init = json.dumps({"fds": fds, "lines": {rank: render(lost_message(rank))
                                                  for rank in range(self.size)}}).encode()
        try:
            mine.sendall(struct.pack(">I", len(init)) + init)
        except OSError:
            mine.close()
            return
        self.reporter = (process, mine)

    def report(self, line: str) -> bool:
        """Rank 0: have the reporter print ``line`` (the job ends). False:
        there is no reporter, print it yourself."""
        data = line.encode("utf-8", "replace")
        with self._tell:
            if self.reporter is None:
                return False
            _, sock = self.reporter
            try:
                sock.sendall(b"L" + struct.pack(">I", len(data)) + data)
                sock.settimeout(REPORT_TIMEOUT)
                return sock.recv(1) == b"A"
            except socket.timeout:
                return True  # slow, but it has the line: printing it here could make two
            except OSError:
                return False

    def _quiet_reporter(self) -> None:
        """Rank 0, the job ended in order: the reporter leaves without a word."""
        process = self._tell_reporter(b"C")
        if process is not None:
            try:
                process.wait(timeout=REPORT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def _tell_reporter(self, word: bytes):
        """Send the reporter its last word (``C`` or ``F``); its process."""
        with self._tell:
            if self.reporter is None:
                return None
            process, sock = self.reporter
            self.reporter = None
            try:
                sock.sendall(word)
            except OSError:
                pass
            return process

    # ------------------------------------------------------------ control plane

    def send(self, rank: int, data: bytes) -> None:
        self.control.Send([data, self.MPI.BYTE], dest=rank, tag=_CONTROL)

    def receive(self, source: int, tag: int, nap_max: float, check=None) -> tuple:
        """The next message from ``source`` (or any rank) with ``tag``:
        (bytes, the rank that sent it)."""
        MPI = self.MPI
        status = MPI.Status()
        message = _wait(lambda: self.control.Improbe(source=source, tag=tag, status=status),
                        nap_max, check)
        data = bytearray(status.Get_count(MPI.BYTE))
        message.Recv([data, MPI.BYTE])
        return bytes(data), status.Get_source()

    def finish(self) -> None:
        """Rank 0, at the end: tell every worker rank to exit, and finalize
        MPI with them (then leave through :func:`leave`)."""
        if self.rank == 0 and self.size > 1:
            data = packb((0, _EXIT))
            for rank in range(1, self.size):
                self.send(rank, data)
        self.finalize()

    def finalize(self) -> None:
        """Every rank: the job ends in order (the lifelines close quietly)."""
        global _finalized
        if self.hub is not None:
            self.hub.closing = True
        if self.line is not None:
            self.line.closing = True  # rank 0 may be gone before this rank is
        # Finalize is collective: a rank that never reaches it (killed while
        # mpiexec was told not to clean up) would hold this one forever.
        guard = threading.Timer(FINALIZE_TIMEOUT, self._give_up)
        guard.daemon = True
        guard.start()
        _finalize_mpi(self.MPI)
        guard.cancel()
        _finalized = True
        # Only now: every rank reached Finalize, so none was lost before it
        # (one lost after it ends nothing). Rank 0 killed until here, by the
        # launcher reacting to a lost rank, still has its line printed.
        self._quiet_reporter()

    def _give_up(self) -> None:
        print(f"ddir: MPI did not finalize within {FINALIZE_TIMEOUT:.0f} s; leaving",
              file=sys.stderr, flush=True)
        self._tell_reporter(b"F")  # it names a rank that was lost, if one was
        os._exit(lifeline.EXIT_PEER_LOST)

    # ------------------------------------------------------------ worker ranks

    def serve(self, functions: dict | None = None) -> None:
        """A worker rank's life: run the messages rank 0 sends, one server
        after another, until told to exit. Never returns."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as -w N: Ctrl-C is the intake's
        exchange = MpiExchange(self.data, self.MPI)
        while True:
            worker = Worker(self.rank, self.size, exchange, functions=functions)
            while True:
                data, _ = self.receive(0, _CONTROL, IDLE_MAX)
                seq, message = unpackb(data)
                if message == _EXIT:
                    self.finalize()
                    leave(0)
                if message == _CLOSE:
                    break
                try:
                    reply = worker.execute(message)
                except Exception as e:  # a bug: report it; rank 0 ends the job
                    traceback.print_exc(file=sys.stderr)
                    self.line.fail(f"{type(e).__name__}: {e}")
                if reply is not None:
                    self.control.Send([packb((seq, reply)), self.MPI.BYTE], dest=0, tag=_REPLY)


def lost_message(rank: int) -> str:
    """What the user reads when MPI rank ``rank`` is gone without a word."""
    return f"worker {rank} died (MPI rank {rank} is gone); the server stops"


class MpiCluster:
    """Rank 0's cluster: the same verbs as :class:`ddir.server.cluster.ProcessCluster`,
    with worker 0 run here and workers 1..N-1 on the other ranks."""

    def __init__(self, ranks: Ranks, on_death=None, functions: dict | None = None):
        self.ranks = ranks
        self.shards = ranks.size
        self.on_death = on_death  # called once with the message; may not return
        self.dead: str | None = None
        self._lock = threading.Lock()
        self._reporting = threading.Lock()  # held while on_death runs
        self._seq = 0
        self._closed = False
        exchange = MpiExchange(ranks.data, ranks.MPI, check=self._check) if self.shards > 1 else None
        # Only worker 0 reads the cancel byte; the other ranks learn of a
        # cancel from it with the next collective step (ddir.engine.limits).
        self.flag = bytearray(1)
        self.worker = Worker(0, self.shards, exchange, functions=functions, flag=self.flag)
        if ranks.hub is not None:
            ranks.hub.watch(self._lost)

    def cancel(self, on: bool = True) -> None:
        """Ask the workers to stop the running command (any thread)."""
        self.flag[0] = on

    def broadcast(self, message) -> list:
        data = self._stamp(message)
        for rank in range(1, self.shards):
            self.ranks.send(rank, data)
        mine = self._here(message)
        replies = [mine] + [None] * (self.shards - 1)
        for _ in range(1, self.shards):
            payload, rank = self.ranks.receive(self.ranks.MPI.ANY_SOURCE, _REPLY, NAP_MAX,
                                               self._check)
            seq, reply = unpackb(payload)
            if seq != self._seq:  # a bug: the ranks are out of step
                raise WorkerDied(self._died(f"worker {rank} failed: answered message {seq} "
                                            f"while {self._seq} was expected; the server stops"))
            replies[rank] = reply
        return replies

    def send(self, shard: int, message) -> None:
        if shard == 0:
            self._stamp(message)
            self._here(message)
        else:
            self.ranks.send(shard, self._stamp(message))

    def _stamp(self, message) -> bytes:
        self._check()
        self._seq += 1
        return packb((self._seq, message))

    def _here(self, message):
        """Worker 0's part. An exception is a bug, as in a worker process:
        the server cannot go on (the other ranks may be waiting on us)."""
        try:
            return self.worker.execute(message)
        except WorkerDied:
            raise
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            raise WorkerDied(self._died(f"worker 0 failed: {type(e).__name__}: {e}; "
                                        "the server stops")) from None

    # ------------------------------------------------------------ failure

    def _check(self) -> None:
        if self.dead is not None:
            raise WorkerDied(self.dead)

    def _lost(self, rank: int, text: str) -> None:
        """From the lifeline thread: worker ``rank`` is gone or failed."""
        self._died(f"worker {rank} failed: {text}; the server stops" if text
                   else lost_message(rank))

    def _died(self, message: str) -> str:
        with self._lock:
            if self.dead is not None:
                return self.dead
            if self.on_death is not None:
                self._reporting.acquire()  # before anyone can see `dead`: see close
            self.dead = message
        if self.on_death is not None:
            try:
                self.on_death(message)
            finally:
                self._reporting.release()
        return message

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """This server is over. The worker ranks start afresh for the next
        one (:meth:`Ranks.finish` ends them). A cluster that lost a rank
        cannot be closed in order: the job ends (MPI cannot go on without it)."""
        if self._closed:
            return
        self._closed = True
        if self.dead is not None:
            # The lifeline thread may be reporting the loss (on_death ends the
            # process): an Abort now would end the job before the line is
            # out, as mpiexec does not wait for the reporter's output then.
            if self._reporting.acquire(timeout=REPORT_TIMEOUT + 5.0):
                self._reporting.release()
            self.ranks.MPI.COMM_WORLD.Abort(lifeline.EXIT_PEER_LOST)
        data = packb((self._seq + 1, _CLOSE))
        for rank in range(1, self.shards):
            self.ranks.send(rank, data)
