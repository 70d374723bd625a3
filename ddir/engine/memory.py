"""Keep Python's cyclic garbage collector off the engine's data.

Traces hold millions of small tuples and lists that live for many ticks and
never form cycles. Each full collection walks all of them: 15-23% of run
time, and 170-490 ms pauses in ticks that otherwise take 1-2 ms. After a
tick, everything that survived it is long-lived, so it is *frozen*: moved to
the collector's permanent generation, which no collection scans. Freed
objects are still freed by reference counting; only cyclic garbage among
frozen objects would stay (the engine's data has none). ``gc.freeze`` moves
list heads, so it costs O(1).
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

# The young generation's threshold while the engine runs: a tick allocates
# tuples by the hundred thousand, and at Python's default (700) it paid a
# young collection every 700 of them and an old one as the heap grew
# (~10 ms of a 70 ms first tick of a 1,000-edge closure). Cycles are still
# collected, only less often.
RUNNING_THRESHOLD = 50_000


_running = 0              # engine runs in progress (several threads may run servers)
_saved = None             # the collector's thresholds before the first of them
_lock = threading.Lock()


@contextmanager
def running():
    """Around a run of the engine: fewer collections while it allocates.
    Runs may overlap (two in-process servers in two threads): the first
    raises the threshold, the last restores what was there before."""
    global _running, _saved
    with _lock:
        if not _running:
            _saved = gc.get_threshold()
            gc.set_threshold(max(_saved[0], RUNNING_THRESHOLD), *_saved[1:])
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if not _running:
                # What survived the run is long-lived (see settle): frozen
                # now, before the default threshold returns, the first
                # allocation after it would pay a young collection of up to
                # RUNNING_THRESHOLD objects (~0.4 ms at the end of a deep tick).
                gc.freeze()
                gc.set_threshold(*_saved)


def settle() -> None:
    """Call when a command that built engine state is done."""
    gc.freeze()
