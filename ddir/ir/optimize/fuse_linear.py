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


# Each flatmap opens a nested loop in the generated function, and Python
# compiles at most 20 nested blocks: longer runs of flatmaps are split.
MAX_FUSED_FLATMAPS = 6


def _flatmaps(steps) -> int:
    return sum(isinstance(s, N.FlatMapStep) for s in steps)


def fuse_linear(program: N.Program) -> N.Program:
    uses = consumers(program)
    nodes = {n.id: n for n in program.nodes}
    # A chain's head (its first node) -> [steps so far, flatmaps among them,
    # input, name]; built as lists and turned into nodes once, so a chain
    # of 10,000 steps costs linear time.
    chains: dict = {}
    tail_of: dict = {}  # id of a chain's current last node -> its head
    for n in program.nodes:  # inputs come before readers, so chains grow left to right
        if not isinstance(n, N.LinearNode):
            continue
        src_id = n.inputs[0]
        src = nodes[src_id]
        head = tail_of.pop(src_id, None)
        if head is not None and uses[src_id] == 1 and src.scope == n.scope and \
                chains[head][1] + _flatmaps(n.steps) <= MAX_FUSED_FLATMAPS:
            chain = chains.pop(head)
            chain[0].extend(n.steps)
            chain[1] += _flatmaps(n.steps)
            chain[2].append(n)
            chains[n.id] = chain
        else:
            chains[n.id] = [list(n.steps), _flatmaps(n.steps), [n]]
        tail_of[n.id] = n.id
    changed: dict = {}
    redirect: dict = {}
    for last_id, (steps, _, members) in chains.items():
        if len(members) == 1:
            continue
        first, last = members[0], members[-1]
        changed[last_id] = replace(last, inputs=first.inputs, steps=tuple(steps),
                                   name=next((m.name for m in reversed(members) if m.name), None))
        for m, reader in zip(members, members[1:]):
            changed[m.id] = None
            redirect[m.id] = reader.id
    if not changed:
        return program
    return rebuild(program, changed, redirect)
