"""What the engine needs from other workers, and which worker owns a key.

With N workers every dataflow runs as N shards. The engine never talks to
processes itself: a dataflow is given an :class:`Exchange` (the server's
mesh implements it) and uses exactly two collective operations, which every
shard calls in the same order:

* ``swap(tag, batches, note)``: send ``batches[w]`` to worker ``w``; get back
  the batch every worker sent here (one list per worker, our own included)
  and the least of every worker's ``note`` (``None`` = nothing): a note rides
  along for free, which the scheduler uses to learn the next time;
* ``agree_min(t)``: the least of every worker's ``t`` (``None`` = nothing).

Keys are owned by a *stable* hash: the CRC-32 of the key's msgpack bytes, the
same in every process and every run (``hash()`` of a ``str`` is not).
"""

from __future__ import annotations

import os
from zlib import crc32

from ..ir.codec import packb

# Tests set DDIR_CHECK_OWNERS=1: every arrangement then checks that each row
# it stores is on the worker owning its key (what join and reduce rely on),
# so a row staged on the wrong worker fails loudly instead of going missing.
CHECK_OWNERS = os.environ.get("DDIR_CHECK_OWNERS") == "1"


def shard_of(key, shards: int) -> int:
    """The worker (0..shards-1) that owns ``key``."""
    if shards == 1:
        return 0
    return crc32(packb(key)) % shards


def least(values):
    """The least value that is not None (None if there is none)."""
    best = None
    for v in values:
        if v is not None and (best is None or v < best):
            best = v
    return best


def split_by_owner(rows, shards: int, boxes: list | None = None) -> list:
    """``boxes[w]``: the rows (key, ...) owned by worker ``w``, appended to
    ``boxes`` when given (one list per worker)."""
    if boxes is None:
        boxes = [[] for _ in range(shards)]
    for row in rows:
        boxes[shard_of(row[0], shards)].append(row)
    return boxes


class MisplacedRow(RuntimeError):
    """A row reached an arrangement on a worker that does not own its key."""


def check_owners(rows, index: int, shards: int) -> None:
    for row in rows:
        owner = shard_of(row[0], shards)
        if owner != index:
            raise MisplacedRow(f"key {row[0]!r} is owned by worker {owner} but arrived at worker {index}")


class Exchange:
    """The collective operations a sharded dataflow uses (see module doc)."""

    index: int = 0   # this worker
    peers: int = 1   # how many workers

    def swap(self, tag, batches: list, note=None) -> tuple:
        """(batches received, least note)."""
        raise NotImplementedError

    def agree_min(self, value):
        raise NotImplementedError
