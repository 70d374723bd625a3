"""Fuse chains of linear operators into one node.

``a | key(...) | filter(...) | map(...)`` becomes one LinearNode whose steps
run in one generated Python loop per batch, instead of three operators each
materialising an intermediate batch. A node is folded into its reader only
when that reader is its sole use (otherwise the intermediate collection is
needed by someone else and fusing would compute it twice).
"""

from __future__ import annotations

from dataclasses import replace

from .. import nodes as N
from .rewrite import consumers, rebuild


def fuse_linear(program: N.Program) -> N.Program:
    uses = consumers(program)
    nodes = {n.id: n for n in program.nodes}
    changed: dict = {}
    redirect: dict = {}
    for n in program.nodes:  # inputs come before readers, so chains grow left to right
        if not isinstance(n, N.LinearNode):
            continue
        cur = changed.get(n.id, n)
        src_id = cur.inputs[0]
        src = changed.get(src_id, nodes[src_id])
        if (isinstance(src, N.LinearNode) and uses[src_id] == 1 and src.scope == cur.scope):
            fused = replace(cur, inputs=src.inputs, steps=src.steps + cur.steps,
                            name=cur.name or src.name)
            changed[src_id] = None
            redirect[src_id] = n.id
            changed[n.id] = fused
    if not changed:
        return program
    return rebuild(program, changed, redirect)
