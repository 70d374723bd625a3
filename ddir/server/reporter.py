"""Rank 0's reporter: says once why an MPI job ended, even when the launcher
kills rank 0 before rank 0 can.

When a rank dies by a signal, MPICH's process manager (hydra) SIGKILLs every
other rank at once: its proxy calls ``killpg`` on each rank's process group
(every rank is a session leader). Rank 0 notices the lost rank on its
lifeline at the same moment, and in most trials was killed before its
``error:`` line was out. So rank 0 starts this small process (``python -I -S
reporter.py FD``, no ddir, no MPI) in a session of its own, out of hydra's
reach. It holds:

* one end of a socket pair whose other end only rank 0 holds (``FD``);
* a duplicate of rank 0's end of every worker's lifeline, which it watches
  for the peer's hang-up (``EPOLLRDHUP``) without reading: the data on them
  is rank 0's;
* rank 0's stdout. Hydra's proxy forwards a rank's output until every copy
  of its stdout and stderr is closed, so what this process writes reaches
  the user before ``mpiexec`` returns.

It is the only writer of the line that ends the job, so the line comes out
once:

* rank 0 sends ``L`` + length + line when it finds a rank lost or failed:
  the reporter prints it, answers ``A`` and exits;
* rank 0 sends ``C`` once MPI is finalized (every rank got that far, so
  none was lost): the reporter exits without a word. Not earlier: a rank
  lost while the others finalize still gets rank 0 killed;
* rank 0 sends ``F`` when it gives up waiting for Finalize: the reporter
  prints the line of a worker whose lifeline hung up, if one did, and exits;
* rank 0's end closes with neither (rank 0 was killed): the reporter prints
  the line for the first worker whose lifeline it saw hang up, or, if none
  had, rank 0's own, and exits. Hang-ups after rank 0's end closed are the
  launcher's doing (it kills the others when rank 0 dies) and do not count.
  "After" is the kernel's order, not the order this process happens to look
  in (see :class:`_Poller`): under load it may find them all at once.

First ``rank 0 -> reporter``: a big-endian u32 length and JSON
``{"fds": {rank: fd}, "lines": {rank: line}}``, the lines already rendered as
the session prints errors (text or ``--json``). It never outlives rank 0:
it exits as soon as rank 0's end closes (and its copies of the lifelines
close with it, so the workers then see rank 0 gone).
"""

import json
import os
import select
import socket
import struct
import sys

_LEN = struct.Struct(">I")


def _write(line: str) -> None:
    data = (line + "\n").encode("utf-8", "replace")
    while data:
        try:
            data = data[os.write(1, data):]
        except InterruptedError:
            continue
        except OSError:  # nobody reads any more: nothing to do
            return


class _Tell:
    """The socket from rank 0 and what it has sent so far."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.buffer = bytearray()
        self.closed = False

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except InterruptedError:
            return
        except OSError:
            data = b""
        if data:
            self.buffer += data
        else:
            self.closed = True

    def message(self):
        """``("C",)``, ``("L", line)``, or None until one is complete."""
        if not self.buffer:
            return None
        kind = self.buffer[:1]
        if kind in (b"C", b"F"):
            return (kind.decode(),)
        if kind == b"L" and len(self.buffer) >= 1 + _LEN.size:
            (length,) = _LEN.unpack_from(self.buffer, 1)
            if len(self.buffer) >= 1 + _LEN.size + length:
                line = bytes(self.buffer[1 + _LEN.size:1 + _LEN.size + length])
                return ("L", line.decode("utf-8", "replace"))
        return None


def _read_init(tell: _Tell):
    while len(tell.buffer) < _LEN.size or \
            len(tell.buffer) < _LEN.size + _LEN.unpack_from(tell.buffer)[0]:
        if tell.closed:
            return None
        tell.read()
    (length,) = _LEN.unpack_from(tell.buffer)
    init = json.loads(bytes(tell.buffer[_LEN.size:_LEN.size + length]))
    del tell.buffer[:_LEN.size + length]
    return init


def main(argv: list) -> int:
    tell = _Tell(int(argv[1]))
    init = _read_init(tell)
    if init is None:  # rank 0 was gone before it said anything
        return 0
    lines = {int(rank): line for rank, line in init["lines"].items()}
    ranks = {int(fd): int(rank) for rank, fd in init["fds"].items()}
    poller = _Poller(tell.sock.fileno(), ranks)
    lost: list = []  # ranks whose lifeline hung up before rank 0's end closed
    while True:
        message = tell.message()
        if message is not None:
            if message[0] == "L":
                _write(message[1])
                try:
                    tell.sock.sendall(b"A")
                except OSError:
                    pass
            elif message[0] == "F" and lost:
                _write(lines[lost[0]])
            return 0
        if tell.closed:  # rank 0 is gone without a word
            line = lines.get(lost[0] if lost else 0)
            if line is not None:
                _write(line)
            return 0
        for fd in poller.wait():
            if fd not in ranks:
                tell.read()
            elif not (tell.buffer or tell.closed):  # after rank 0's word or end: no count
                poller.unregister(fd)
                lost.append(ranks[fd])


class _Poller:
    """Waits for rank 0's end (input, hang-up) and the workers' hang-ups,
    and returns the ready fds in the order they became ready. With epoll
    that is the kernel's order (its ready list is first in, first out), so
    a worker that died first is told from the ones the launcher killed with
    rank 0, even when this process ran late and finds them all ready at
    once. Elsewhere poll's order is the fds' (a worker's first)."""

    def __init__(self, tell: int, workers):
        self.epoll = getattr(select, "epoll", None)
        if self.epoll is not None:
            self.poller = select.epoll()
            self.poller.register(tell, select.EPOLLIN)
            for fd in workers:
                self.poller.register(fd, select.EPOLLRDHUP)
        else:
            self.poller = select.poll()
            self.poller.register(tell, select.POLLIN)
            for fd in workers:
                self.poller.register(fd, getattr(select, "POLLRDHUP", 0))
            self.tell = tell

    def wait(self) -> list:
        try:
            events = self.poller.poll()
        except InterruptedError:
            return []
        fds = [fd for fd, _ in events]
        if self.epoll is None:  # no order: a worker's hang-up before rank 0's end
            fds.sort(key=lambda fd: fd == self.tell)
        return fds

    def unregister(self, fd: int) -> None:
        self.poller.unregister(fd)  # a hang-up stays ready: once is enough


if __name__ == "__main__":
    sys.exit(main(sys.argv))
