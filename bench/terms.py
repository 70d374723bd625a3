"""Compiled terms vs the reference interpreter, per row, in one run.

    python bench/terms.py
"""

from __future__ import annotations

import time

from ddir.lang.parser import parse_term
from ddir.terms.compile import compile_term
from ddir.terms.interp import evaluate

TERMS = ["$0[0] + $1[1] * 2", "if($0[0] < $1[0], tuple($0[0], $1[0]), list($1[1]))",
         "fold(list($0[0], $1[0], $1[1]), 0, ^0 + ^1)", "hash(8, $0[0], $1[1])"]


def main(rows: int = 100_000) -> None:
    data = [((i, i + 1), (i % 7, i % 11)) for i in range(rows)]
    for src in TERMS:
        term = parse_term(src)
        fn = compile_term(term, 2)
        t0 = time.perf_counter()
        for k, v in data:
            fn(k, v)
        compiled = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k, v in data:
            evaluate(term, (k, v))
        interpreted = time.perf_counter() - t0
        print(f"{src:55s} compiled {compiled / rows * 1e9:7.0f} ns/row   "
              f"interpreted {interpreted / rows * 1e9:7.0f} ns/row   ({interpreted / compiled:4.1f}x)")


if __name__ == "__main__":
    main()
