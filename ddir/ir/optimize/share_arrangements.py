"""Share identical arrangements: one ArrangeNode per (scope, input).

Two joins (or a join and a reduce) over the same collection then read one
trace instead of maintaining two copies of the same index.
"""

from __future__ import annotations

from .. import nodes as N
from .rewrite import rebuild


def share_arrangements(program: N.Program) -> N.Program:
    first: dict = {}
    changed: dict = {}
    redirect: dict = {}
    for n in program.nodes:
        if isinstance(n, N.ArrangeNode):
            key = (n.scope, n.inputs)
            if key in first:
                changed[n.id] = None
                redirect[n.id] = first[key]
            else:
                first[key] = n.id
    if not changed:
        return program
    return rebuild(program, changed, redirect)
