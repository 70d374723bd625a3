"""The engine's two collective operations as tagged msgpack payloads.

:class:`ddir.engine.exchange.Exchange` asks for ``swap`` and ``agree_min``.
What crosses between workers for them is the same whatever carries the
bytes: one msgpack payload per peer, ``(tag, body)``. The tag (the operator
and time being swapped, or ``"min"``) must match on both sides: every worker
takes the same collective steps in the same order, so a mismatch is a bug,
reported as such instead of silently mixing batches.

A transport implements two byte-level steps:

* ``alltoall(payloads)``: ``payloads[p]`` (bytes) to each peer ``p`` (our
  own entry is ``None``); returns the payload every peer sent here
  (``None`` at our own index);
* ``allgather(payload)``: the same bytes to every peer; returns every
  peer's (``None`` at our own index).

The socket mesh (:mod:`ddir.server.mesh`) and MPI (:mod:`ddir.server.mpi`)
are the two transports.

Every payload also carries the sender's stop bits (a cancel, the memory
budget: :mod:`ddir.engine.limits`); after a step every worker ORs them into
its ``limits.agreed``, so all workers know the same bits at the same step.
"""

from __future__ import annotations

from ..engine.exchange import Exchange, least
from ..ir.codec import packb, unpackb


class ExchangeOutOfStep(RuntimeError):
    pass


class ByteExchange(Exchange):
    steps = 0  # collective steps taken (for benchmarks); transports count them
    limits = None  # the worker's ddir.engine.limits.Limits, whose bits ride along

    def swap(self, tag, batches: list, note=None) -> tuple:
        limits = self.limits
        bits = limits.local if limits is not None else 0
        payloads = [None if p == self.index else packb((tag, (batches[p], note, bits)))
                    for p in range(self.peers)]
        received = self.alltoall(payloads)
        out, notes = [], [note]
        for p in range(self.peers):
            if p == self.index:
                out.append(batches[p])
            else:
                batch, other, theirs = self.payload(tag, p, received[p])
                out.append(batch)
                notes.append(other)
                bits |= theirs
        if limits is not None:
            limits.agreed |= bits
        return out, least(notes)

    def agree_min(self, value):
        limits = self.limits
        bits = limits.local if limits is not None else 0
        received = self.allgather(packb(("min", (value, bits))))
        values = [value]
        for p, b in enumerate(received):
            if p != self.index:
                other, theirs = self.payload("min", p, b)
                values.append(other)
                bits |= theirs
        if limits is not None:
            limits.agreed |= bits
        return least(values)

    def payload(self, tag, peer: int, data: bytes):
        """The body of ``peer``'s payload, which must carry ``tag``."""
        got_tag, body = unpackb(data)
        if got_tag != tag:
            raise ExchangeOutOfStep(f"worker {self.index} expected {tag!r} from worker {peer}, "
                                    f"got {got_tag!r}")
        return body

    # ------------------------------------------------------------ transport

    def alltoall(self, payloads: list) -> list:
        raise NotImplementedError

    def allgather(self, payload: bytes) -> list:
        raise NotImplementedError
