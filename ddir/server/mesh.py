"""The worker-to-worker mesh: one socket pair per pair of workers.

The socket transport of :class:`ddir.server.collective.ByteExchange`. Each collective step sends
exactly one frame to every peer and reads exactly one frame from every peer.
Sockets are non-blocking and driven by one selector, sending and receiving
at the same time: two workers swapping large batches would deadlock if each
blocked in ``sendall`` while the other did the same.

What the frames carry (tagged msgpack payloads) is
:class:`ddir.server.collective.ByteExchange`'s; this module only moves them.
"""

from __future__ import annotations

import selectors

from ..engine.exchange import least
from .collective import ByteExchange
from .wire import FrameBuffer, PeerLost, frame, framed

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


STAR_FROM = 4  # from this many workers on, agree_min gathers at worker 0


class Mesh(ByteExchange):
    def __init__(self, index: int, peers: int, sockets: dict):
        """``sockets``: peer index -> connected socket to that worker."""
        self.index = index
        self.peers = peers
        self.sockets = sockets
        self.buffers = {p: FrameBuffer() for p in sockets}
        self.selector = selectors.DefaultSelector()
        for p, sock in sockets.items():
            sock.setblocking(False)
            self.selector.register(sock, _READ, p)
        self.steps = 0

    # ------------------------------------------------------------ ByteExchange

    def alltoall(self, payloads: list) -> list:
        received = self._transfer({p: framed(data)
                                   for p, data in enumerate(payloads) if p != self.index})
        return [received.get(p) for p in range(self.peers)]

    def allgather(self, payload: bytes) -> list:
        data = framed(payload)
        received = self._transfer({p: data for p in self.sockets})
        return [received.get(p) for p in range(self.peers)]

    def agree_min(self, value):
        if self.peers < STAR_FROM:  # everyone tells everyone: one hop
            return super().agree_min(value)
        # Many workers: gather at worker 0, which answers everyone. Two hops,
        # but 2(N-1) messages instead of N(N-1).
        # The stop bits ride along as in ByteExchange (ddir.engine.limits).
        limits = self.limits
        bits = limits.local if limits is not None else 0
        if self.index != 0:
            received = self._transfer({0: frame(("min", (value, bits)))}, expect={0})
            best, bits = self.payload("least", 0, received[0])
        else:
            received = self._transfer({}, expect=set(self.sockets))
            values = [value]
            for p, b in received.items():
                other, theirs = self.payload("min", p, b)
                values.append(other)
                bits |= theirs
            best = least(values)
            answer = frame(("least", (best, bits)))
            self._transfer({p: answer for p in self.sockets}, expect=set())
        if limits is not None:
            limits.agreed |= bits
        return best

    # ------------------------------------------------------------ transport

    def _transfer(self, frames: dict, expect=None) -> dict:
        """Send ``frames[p]`` to each peer in ``frames`` and receive one frame
        from each peer in ``expect`` (default: every peer)."""
        expect = self.sockets.keys() if expect is None else expect
        self.steps += 1
        unsent = {}
        for p, data in frames.items():
            view = memoryview(data)
            sent = self._send(p, view)
            if sent < len(view):
                unsent[p] = view[sent:]
                self.selector.modify(self.sockets[p], _READ | _WRITE, p)
        received = {}
        for p in expect:
            payload = self.buffers[p].take()
            if payload is not None:
                received[p] = payload
        while unsent or len(received) < len(expect):
            for key, mask in self.selector.select():
                p = key.data
                if mask & _WRITE and p in unsent:
                    view = unsent[p]
                    sent = self._send(p, view)
                    if sent < len(view):
                        unsent[p] = view[sent:]
                    else:
                        del unsent[p]
                        self.selector.modify(self.sockets[p], _READ, p)
                if mask & _READ:
                    # Always read, even past this step's frame: the peer may be
                    # blocked sending us its next one while we still send ours.
                    buf = self.buffers[p]
                    try:
                        buf.fill(self.sockets[p])
                    except BlockingIOError:
                        continue
                    except (PeerLost, ConnectionResetError):
                        raise PeerLost(f"worker {p} is gone") from None
                    if p in expect and p not in received:
                        payload = buf.take()
                        if payload is not None:
                            received[p] = payload
        return received

    def _send(self, peer: int, view) -> int:
        try:
            return self.sockets[peer].send(view)
        except BlockingIOError:
            return 0
        except (BrokenPipeError, ConnectionResetError):
            raise PeerLost(f"worker {peer} is gone") from None
