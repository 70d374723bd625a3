"""Command-line options: one parser for `ddir`, `ddir serve` and `ddir connect`.

Each command declares its options as tables (numbers with their range, texts
with what they name, flags); every option then takes the same forms:
``--name VALUE`` and ``--name=VALUE``, ``-w N`` and ``-wN`` for a one-letter
number, and gets the same messages. Anything else that starts with ``-``
(but ``-`` itself, standard input) is an unknown option; the rest are
positional arguments, in order.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line: printed as ``error: ...`` with exit status 2."""


WORKERS = {"-w": ("workers", 1, 64), "--workers": ("workers", 1, 64)}
MAX_ROUNDS = {"--max-rounds": ("max_rounds", 1, 10 ** 9)}
MAX_MEMORY = {"--max-memory": ("max_memory", "a size in bytes (e.g. 512M, 4G)")}

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(option: str, text: str) -> int:
    """``4G``, ``512M``, ``65536``, ``1.5G`` (binary units; a trailing ``B``
    or ``iB`` is allowed) -> bytes, at least 1 MiB."""
    t = text.strip().upper()
    for tail in ("IB", "B"):
        if t.endswith(tail) and t[:-len(tail)][-1:] in _UNITS and t[:-len(tail)][-1:] != "":
            t = t[:-len(tail)]
            break
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] != "" else ""
    digits = t[:-1] if unit else t
    try:
        n = int(float(digits) * _UNITS[unit])
    except ValueError:
        n = -1
    if not digits or n < (1 << 20):
        raise UsageError(f"{option} needs a size of at least 1M (bytes, or with K, M, G, T), "
                         f"got `{text}`")
    return n


def parse(argv: list, defaults: dict, numbers: dict | None = None, texts: dict | None = None,
          flags: dict | None = None) -> tuple:
    """``(opts, positional)``: ``defaults`` updated from ``argv``.

    ``numbers``: option -> (key, lowest, highest); ``texts``: option ->
    (key, what it names, for "needs ..."); ``flags``: option -> key (set True)."""
    numbers, texts, flags = numbers or {}, texts or {}, flags or {}
    opts = dict(defaults)
    positional = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if not eq and len(a) > 2 and a[:2] in numbers and not a.startswith("--"):
            name, eq, value = a[:2], "=", a[2:]  # -w4
        if not eq and (name in numbers or name in texts):
            if i + 1 >= len(argv):
                raise UsageError(_needs(name, numbers, texts))
            i += 1
            value, eq = argv[i], "="
        if eq and name in numbers:
            key, low, high = numbers[name]
            opts[key] = number(name, value, low, high)
        elif eq and name in texts:
            if not value:
                raise UsageError(_needs(name, numbers, texts))
            opts[texts[name][0]] = value
        elif a in flags:
            opts[flags[a]] = True
        elif a.startswith("-") and a != "-":
            raise UsageError(f"unknown option {a}")
        else:
            positional.append(a)
        i += 1
    return opts, positional


def _needs(name: str, numbers: dict, texts: dict) -> str:
    if name in numbers:
        return f"{name} needs a number"
    return f"{name} needs {texts[name][1]}"


def number(option: str, text: str, low: int, high: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{option} needs a number from {low} to {high}, got `{text}`") from None
    if not low <= n <= high:
        raise UsageError(f"{option} needs a number from {low} to {high}, got {n}")
    return n


def mpi_or_workers(opts: dict) -> dict:
    """``-w N`` and ``--mpi`` exclude each other: with MPI the workers are the
    job's ranks (``mpiexec -n N``). Without either, one worker."""
    if opts["mpi"] and opts["workers"] is not None:
        raise UsageError("--mpi takes its workers from the MPI job (mpiexec -n N): drop -w")
    if opts["workers"] is None:
        opts["workers"] = 1
    return opts
