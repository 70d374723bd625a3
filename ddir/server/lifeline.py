"""Liveness between the ranks of an MPI job, outside MPI.

MPI offers no portable way to learn that a rank died. MPICH's ``mpiexec``
kills the whole job when one rank dies by a signal (and prints its own
banner); without that (``-disable-auto-cleanup``, other launchers) the
survivors wait in their next collective forever, and MPICH's fault-tolerance
mode asserts at start-up. So each worker rank keeps one TCP connection to
rank 0, opened at start-up (the same model as the control sockets of
``-w N``):

* end of stream at rank 0: that worker's process is gone;
* text, then end of stream, from a worker: it hit a bug; the text says which.
  The worker then waits for rank 0 to act, so that its own exit cannot make
  the launcher kill rank 0 before the error is printed;
* end of stream at a worker: rank 0 is gone, and the worker exits.

Rank 0's reporter (:mod:`ddir.server.reporter`) holds copies of rank 0's
ends and watches them too, without reading: when the launcher kills rank 0
right after a rank died, it still prints the line.

Ranks on rank 0's host connect over loopback, others to rank 0's host name
(the names given to ``mpiexec -hosts`` must resolve for MPI anyway). A random
secret, passed through MPI, keeps a stranger from taking a worker's place
while rank 0 listens (only during start-up).
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import struct
import threading
import time

CONNECT_TIMEOUT = 30.0  # seconds for every worker to connect at start-up
FATAL_GRACE = 10.0      # how long a failed worker waits for rank 0 to end the job
EXIT_PEER_LOST = 3      # a worker whose rank 0 vanished
EXIT_FATAL = 4          # a worker that hit a bug and was not stopped in time

_HELLO = struct.Struct(">I16s")  # rank, secret


class LifelineError(Exception):
    """The lifelines could not be set up (one line, for the user)."""


def listen() -> tuple:
    """Rank 0: a listening socket on every interface, and (port, secret)."""
    if socket.has_dualstack_ipv6():
        server = socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
        server = socket.create_server(("", 0))
    return server, server.getsockname()[1], secrets.token_bytes(16)


class Hub:
    """Rank 0's ends of every worker's lifeline, and the thread watching them."""

    def __init__(self, server: socket.socket, secret: bytes, workers: int):
        self.sockets: dict = {}   # rank -> socket
        self.texts: dict = {}     # rank -> what it sent before closing
        self.closing = False
        self._on_lost = None      # called (rank, text) from the watching thread
        self._lost: list = []     # losses seen before anyone watched
        self._lock = threading.Lock()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            while len(self.sockets) < workers:
                server.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    sock, _ = server.accept()
                except socket.timeout:
                    missing = sorted(set(range(1, workers + 1)) - set(self.sockets))
                    raise LifelineError(
                        f"MPI rank{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))} did not connect to rank 0 within "
                        f"{CONNECT_TIMEOUT:.0f} s (see the README on firewalls)") from None
                hello = _read_exactly(sock, _HELLO.size, deadline)
                rank, sent = _HELLO.unpack(hello) if hello else (0, b"")
                if not secrets.compare_digest(sent, secret) or not 1 <= rank <= workers \
                        or rank in self.sockets:
                    sock.close()  # not one of ours
                    continue
                sock.settimeout(None)
                self.sockets[rank] = sock
        finally:
            server.close()
        self.texts = {rank: bytearray() for rank in self.sockets}
        threading.Thread(target=self._watch, name="ddir-lifelines", daemon=True).start()

    def _watch(self) -> None:
        selector = selectors.DefaultSelector()
        for rank, sock in self.sockets.items():
            selector.register(sock, selectors.EVENT_READ, rank)
        live = set(self.sockets)
        while live:
            for key, _ in selector.select():
                rank = key.data
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.texts[rank] += data
                    continue
                selector.unregister(key.fileobj)
                live.discard(rank)
                if not self.closing:
                    self._report(rank, self.texts[rank].decode("utf-8", "replace"))

    def _report(self, rank: int, text: str) -> None:
        with self._lock:
            call = self._on_lost
            if call is None:
                self._lost.append((rank, text))
                return
        call(rank, text)

    def watch(self, on_lost) -> None:
        """Call ``on_lost(rank, text)`` for each worker lost, including any
        lost before this call (a worker may fail while it starts)."""
        with self._lock:
            self._on_lost, pending, self._lost = on_lost, self._lost, []
        for rank, text in pending:
            on_lost(rank, text)


class Line:
    """A worker rank's end of its lifeline."""

    def __init__(self, host: str, port: int, secret: bytes, rank: int, same_host: bool):
        target = "localhost" if same_host else host
        try:
            self.sock = socket.create_connection((target, port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise LifelineError(f"MPI rank {rank} cannot reach rank 0 at {target} port {port}: "
                                f"{e.strerror or e} (see the README on firewalls)") from None
        self.sock.settimeout(None)
        self.sock.sendall(_HELLO.pack(rank, secret))
        self.closing = False  # set when this rank is told to exit: rank 0 may go first
        threading.Thread(target=self._watch, name="ddir-lifeline", daemon=True).start()

    def _watch(self) -> None:
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        if not self.closing:
            os._exit(EXIT_PEER_LOST)  # rank 0 is gone: nobody will send work again

    def fail(self, text: str) -> None:
        """Report a bug to rank 0 and wait for it to end the job."""
        try:
            self.sock.sendall(text.encode("utf-8", "replace"))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        time.sleep(FATAL_GRACE)  # the watching thread exits first when rank 0 goes
        os._exit(EXIT_FATAL)


def _read_exactly(sock, n: int, deadline: float) -> bytes | None:
    data = b""
    while len(data) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
