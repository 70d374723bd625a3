"""Stateless peek cursors (SPEC C4): tokens and the leases behind them.

A token is self-contained: the msgpack of ``[version, trace, seq, epoch,
has_key, key, after, offset, total, limit]`` (``seq`` tells a trace from one
of the same name published again after a drop; ``after`` is the last
``(key, val)`` returned, None before the first row), followed by an HMAC
(SHA-256, 16 bytes) under a per-server random secret, all base64url without
padding: one whitespace-free command-line token. No session holds it.

What the server does hold is a *lease* per (trace, epoch): while one is held,
the workers compact that trace only up to ``epoch - 1``, so its history before
``epoch`` stays readable (as an importer's catch-up reads it). A page renews
the lease; a lease unused for :data:`LEASE_SECONDS` is released. The clock is
injectable (``Cursors(clock=...)``) for tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time

from ..errors import CursorError
from ..ir.codec import packb, unpackb

LEASE_SECONDS = 60.0
MAC_BYTES = 16
VERSION = 1


def _secret() -> bytes:
    """A random secret per server; ``DDIR_CURSOR_SECRET`` fixes it (so that
    the tests' outputs, tokens included, are the same in every run)."""
    fixed = os.environ.get("DDIR_CURSOR_SECRET")
    return fixed.encode() if fixed else os.urandom(32)


class Cursors:
    def __init__(self, clock=time.monotonic, lease_seconds: float = LEASE_SECONDS,
                 secret: bytes | None = None):
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.secret = secret if secret is not None else _secret()
        self.leases: dict = {}   # (trace, epoch) -> {owner: last used}

    # ------------------------------------------------------------ tokens

    def encode(self, trace: str, seq: int, epoch: int, has_key: bool, key, after,
               offset: int, total: int, limit: int) -> str:
        payload = packb([VERSION, trace, seq, epoch, has_key, key,
                         None if after is None else list(after), offset, total, limit])
        mac = hmac.new(self.secret, payload, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> tuple:
        """(trace, seq, epoch, has_key, key, after, offset, total, limit), or
        :class:`CursorError` for a token this server did not issue."""
        bad = CursorError("invalid cursor: the token is damaged or was not issued by this server")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise bad from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(
                mac, hmac.new(self.secret, payload, hashlib.sha256).digest()[:MAC_BYTES]):
            raise bad
        try:
            fields = unpackb(payload)
            version, trace, seq, epoch, has_key, key, after, offset, total, limit = fields
        except Exception:  # signed by us, so only another version's format
            raise bad from None
        if version != VERSION:
            raise bad
        return (trace, seq, epoch, has_key, key, None if after is None else tuple(after),
                offset, total, limit)

    # ------------------------------------------------------------ leases

    def expire(self) -> None:
        """Release the leases unused for ``lease_seconds``."""
        now = self.clock()
        for lease in list(self.leases):
            users = self.leases[lease]
            for owner in [o for o, used in users.items() if now - used >= self.lease_seconds]:
                del users[owner]
            if not users:
                del self.leases[lease]

    def held(self, trace: str, epoch: int) -> bool:
        self.expire()
        return (trace, epoch) in self.leases

    def renew(self, trace: str, epoch: int, owner=None) -> None:
        self.leases.setdefault((trace, epoch), {})[owner] = self.clock()

    def release_trace(self, trace: str) -> None:
        for lease in [lease for lease in self.leases if lease[0] == trace]:
            del self.leases[lease]

    def release_owner(self, owner) -> None:
        """A client went away: its uses of the leases end (others' remain)."""
        for lease in list(self.leases):
            self.leases[lease].pop(owner, None)
            if not self.leases[lease]:
                del self.leases[lease]

    def active(self) -> list:
        """``[[trace, epoch], ...]`` of the held leases, for the workers."""
        self.expire()
        return sorted([t, e] for t, e in self.leases)
