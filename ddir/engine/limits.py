"""What may stop a tick before its end (SPEC E3): a cancel, or the memory budget.

Each worker has one :class:`Limits`, shared by its dataflows. Two reasons to
stop, as bits:

* ``CANCEL``: the intake asked for it (``ddir.Server.cancel()``, Ctrl-C,
  SIGTERM) by setting a byte every worker can read: a ``bytearray`` for a
  worker in the intake's process, a shared anonymous ``mmap`` made before
  the worker processes are forked. It holds for the rest of the command.
* ``MEMORY``: the worker's memory would pass its budget: the resident set
  above what the process held when the budget was set (a forked worker
  starts with the intake's pages, which are not its own), read from
  ``/proc/self/statm``. Checked before an operator materialises many rows
  (:meth:`Limits.allow`: a join knows how many pairs it will make before it
  makes them) and, sampled at most every ``SAMPLE_EVERY`` seconds, at every
  round of every scope. It holds for one dataflow's run: the program fails,
  the next one starts afresh.

Stopping must not break the lock-step of the workers (every worker takes
the same collective steps, :mod:`ddir.engine.exchange`). So ``local`` (what
this worker wants) rides along with every collective step, and after one
every worker knows ``agreed``, the OR of all of them: the same value on
every worker at the same step. A scope that agrees on its times with the
other workers stops only on ``agreed``, at the top of a round, so all of
them stop at the same round; a scope that runs its times alone (no
exchange in it) may stop on its own ``local`` too, as it may on the
iteration bound. A stopped scope gives up its times like a scope that hit
``--max-rounds`` (:class:`ddir.engine.scope.NonConvergence`): the program
fails, its traces keep their contents from before the tick.
"""

from __future__ import annotations

import os
from time import monotonic

CANCEL = 1
MEMORY = 2

CANCELLED = "the tick was cancelled"

# How often a round of a scope reads the resident set (a read of
# /proc/self/statm costs ~5 us; a round of a deep loop ~1 ms).
SAMPLE_EVERY = 0.01
# An operator about to allocate less than this (or a sixteenth of the
# budget, if smaller) goes ahead without reading the resident set: many of
# them add up only across rounds, where the sampling sees them.
FREE_BYTES = 32 << 20

# What a join's pair costs, once made, consolidated and stored downstream
# (measured on `a | join(a, ($1, $2 ;))` at -w 1 and -w 2): about 400 bytes
# as Python tuples, 8 bytes per field and per index array on columns.
ROW_PAIR_BYTES = 400


def column_pair_bytes(fields: int) -> int:
    """Bytes a columnar join pair costs with ``fields`` int64 fields read
    (key and both vals): the index arrays, the gathered and projected
    columns, the copies of the exchange and the arrangement."""
    return 8 * (4 * fields + 10)


class OverBudget(Exception):
    """Raised by a columnar step that would pass the memory budget."""


class Limits:
    """One worker's stop bits and memory budget (see the module doc)."""

    def __init__(self, flag=None) -> None:
        self.flag = flag        # byte 0 set: the intake asks to cancel (None: not readable here)
        self.budget = None      # bytes the worker may add to its resident set; None: no bound
        self.label = ""         # how the budget was given, for the message
        self.base = 0           # the resident set when the budget was set
        self.free = FREE_BYTES  # allocations below this are not checked one by one
        self.local = 0          # CANCEL | MEMORY: what this worker wants
        self.agreed = 0         # the OR of every worker's `local` as of the last collective step
        self.due = 0.0          # monotonic time of the next sample
        self.last = None        # what the last sample of this run read (None: none yet)

    # ------------------------------------------------------------ setting up

    def set_budget(self, budget: int | None, label: str = "") -> None:
        self.budget, self.label = budget, label
        self.base = resident() if budget is not None else 0
        self.free = FREE_BYTES if budget is None else min(FREE_BYTES, budget // 16)

    def reset(self) -> None:
        """A new command: nothing asked yet (every worker gets every
        command that runs dataflows, so ``agreed`` stays the same everywhere)."""
        self.local = self.agreed = 0
        self.due = 0.0
        self.last = None

    def begin(self) -> None:
        """A dataflow starts running: a memory stop was the last one's
        (every worker runs the same dataflows in the same order)."""
        self.local &= ~MEMORY
        self.agreed &= ~MEMORY
        self.last = None

    # ------------------------------------------------------------ checks

    def poll(self) -> None:
        """Read the cancel byte and the resident set (a round does this
        at most every ``SAMPLE_EVERY`` seconds)."""
        self.due = monotonic() + SAMPLE_EVERY
        flag = self.flag
        if flag is not None and flag[0]:
            self.local |= CANCEL
        if self.budget is not None:
            used = resident() - self.base
            grown = used - self.last if self.last is not None else 0
            self.last = used
            # Stop also when two more intervals growing as fast would pass
            # the budget: a loop that doubles its rows each round allocates
            # in its next round what all earlier rounds did together, so a
            # stop at the first sample past the budget came at up to twice it
            # (bench/abuse.py, attack 6g: 1.2 GB per worker on 512 MB).
            if used > self.budget or used + 2 * max(grown, 0) > self.budget:
                self.local |= MEMORY

    def allow(self, nbytes: int) -> bool:
        """Whether an operator may allocate ``nbytes`` more; if not, this
        worker wants to stop (``MEMORY``) and the caller makes nothing."""
        if self.local & MEMORY:
            return False
        if self.budget is None or nbytes < self.free:
            return True
        if resident() - self.base + nbytes <= self.budget:
            return True
        self.local |= MEMORY
        return False

    def reason(self, bits: int) -> str:
        """The failure message of a program stopped by ``bits``."""
        if bits & CANCEL:
            return CANCELLED
        return memory_message(self.label)


def memory_message(label: str) -> str:
    return f"the tick needed more than the memory budget ({label})"


# ---------------------------------------------------------------- measuring

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm = (None, None)  # (pid, fd): /proc/self/statm names the pid that opened it


def resident() -> int:
    """This process's resident set in bytes (0 where /proc is missing)."""
    global _statm
    pid, fd = _statm
    if pid != os.getpid():
        try:
            fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            fd = -1
        _statm = (os.getpid(), fd)
    if fd < 0:
        return 0
    try:
        return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def machine_memory() -> int | None:
    """The memory this machine gives us: MemTotal, or the cgroup's limit
    if that is lower (None where neither can be read)."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
        break
    return total


DEFAULT_SHARE = 0.8  # of the machine's memory, when --max-memory is not given


def default_budget() -> int | None:
    total = machine_memory()
    return None if total is None else int(total * DEFAULT_SHARE)


def format_size(n: int) -> str:
    """``512M``, ``1.5G``, ``65536``: binary units, as ``--max-memory`` takes them."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            if n % size == 0:
                return f"{n // size}{unit}"
            return f"{n / size:.1f}{unit}"
    return str(n)


def budget_label(total: int, given: bool) -> str:
    """How a failure names the budget: the same for any number of workers."""
    if given:
        return f"--max-memory {format_size(total)}"
    return f"--max-memory {format_size(total)} by default"


def trim() -> None:
    """Hand freed memory back to the system (glibc keeps it otherwise), after
    a program failed and its state was let go."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
