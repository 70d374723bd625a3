"""Length-prefixed msgpack frames over stream sockets.

Every message between processes (intake <-> worker, worker <-> worker) is one
frame: a 4-byte big-endian length, then the msgpack bytes of
:func:`ddir.ir.codec.packb`. A :class:`FrameBuffer` collects received bytes
and hands out whole frames; bytes of a later frame stay buffered for the next
read, so a fast sender never confuses a slow receiver.
"""

from __future__ import annotations

import struct

from ..ir.codec import packb, unpackb

HEADER = struct.Struct(">I")
MAX_FRAME = 2 ** 32 - 1


class PeerLost(Exception):
    """The process at the other end closed its socket (it exited or died)."""


def frame(obj) -> bytes:
    return framed(packb(obj))


def framed(payload: bytes) -> bytes:
    """``payload`` (msgpack bytes) with its length in front."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"message of {len(payload)} bytes is too large to send")
    return HEADER.pack(len(payload)) + payload


_CHUNK = 1 << 18


class FrameBuffer:
    __slots__ = ("data", "scratch")

    def __init__(self) -> None:
        self.data = bytearray()
        # recv_into a reused buffer: sock.recv(n) allocates n bytes per call,
        # which for large n costs more than the round trip itself.
        self.scratch = memoryview(bytearray(_CHUNK))

    def fill(self, sock) -> None:
        """Append what ``sock`` has (blocking until something); PeerLost at
        end of stream. BlockingIOError passes through for non-blocking use."""
        n = sock.recv_into(self.scratch)
        if not n:
            raise PeerLost()
        self.data += self.scratch[:n]

    def take(self):
        """The next whole frame's payload (bytes), or None if incomplete."""
        data = self.data
        if len(data) < 4:
            return None
        (n,) = HEADER.unpack_from(data)
        if len(data) < 4 + n:
            return None
        payload = bytes(data[4:4 + n])
        del data[:4 + n]
        return payload


def send_message(sock, obj) -> None:
    sock.sendall(frame(obj))


def recv_message(sock, buffer: FrameBuffer):
    """Block until one whole message arrives; PeerLost on end of stream."""
    while True:
        payload = buffer.take()
        if payload is not None:
            return unpackb(payload)
        buffer.fill(sock)
