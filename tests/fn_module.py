"""Python functions for tests/test_functions.py (SPEC C5): `ddir
--functions tests/fn_module.py`, `ddir.Server(functions=fn_module)`."""
import sys

from ddir import List, Variant


def score(x):
    """Int -> Int."""
    return x * 10 + 1


def pair(a, b):
    return (a, b)


def is_even(x):
    return x % 2 == 0  # a bool: the Int 1 or 0


def returns_list(n):
    return List(range(n))


def returns_variant(x):
    return Variant(1, (x,)) if x % 2 else Variant(0, ())


def raises(x):
    if x == 3:
        raise ValueError("three is bad")
    return x


def returns_float(x):
    return x / 2


def returns_str(x):
    return str(x)


def returns_none(x):
    return None


def returns_big(x):
    return 2 ** 70


def nested_bad(x):
    return (x, [x])  # a Python list inside: not a value


def exits(x):
    sys.exit(1)  # must not stop a worker


def interrupts(x):
    raise KeyboardInterrupt  # its own, not a Ctrl-C: must not stop the server


def slow_loop(n):
    """Loops n * 10,000 times (bounded): a slow function only delays the tick."""
    acc = 0
    for i in range(n * 10_000):
        acc = (acc + i) % 1_000_003
    return acc


def _private(x):
    return x


CONSTANT = 7  # not callable: not a function
