"""The scope-tree IR (SPEC A7): what lowering produces and the engine builds.

A :class:`Program` is a flat tuple of nodes plus a tuple of scopes. Each
node lives in one scope and reads other nodes of the *same* scope by id;
data crosses scope boundaries only through :class:`Enter` (parent -> child,
appends an iteration coordinate 0) and :class:`Leave` (child -> parent, drops
it). Each scope lists its items in execution order: its own nodes and its
child scopes, every item after everything it reads. Var feedback is the
only cycle: a :class:`VarNode` carries, one iteration later, the value of its
body node (``Scope.vars``).

Everything is a frozen dataclass of ints, strings, tuples, values and term
trees, so it is hashable, comparable and msgpack-serializable
(:mod:`ddir.ir.codec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..lang.ast import Proj, Splice  # noqa: F401  (re-exported: part of the IR)
# shapes travel in the IR (Program.shapes); the codec knows them from here
from ..lang.shapes import ListShape, PrimShape, RowShape, SumShape, TupleShape  # noqa: F401
from ..terms.ast import Term

Loc = tuple  # (line, col)


# ------------------------------------------------------------ linear steps
# Steps of a fused linear chain; each knows where it came from so a term
# error names its own operator.

@dataclass(frozen=True)
class MapStep:
    proj: Proj
    loc: Loc
    op: str = "map"


@dataclass(frozen=True)
class FilterStep:
    term: Term
    loc: Loc
    op: str = "filter"


@dataclass(frozen=True)
class NegateStep:
    loc: Loc
    op: str = "negate"


@dataclass(frozen=True)
class FlatMapStep:
    term: Term
    loc: Loc
    op: str = "flatmap"


@dataclass(frozen=True)
class LiftIterStep:
    loc: Loc
    op: str = "lift_iter"


@dataclass(frozen=True)
class InspectStep:
    label: str
    loc: Loc
    op: str = "inspect"


# ------------------------------------------------------------ nodes

@dataclass(frozen=True)
class Node:
    id: int
    scope: int
    inputs: tuple
    loc: Loc
    name: Optional[str]  # the let/var it defines, for `explain` only


@dataclass(frozen=True)
class InputNode(Node):
    n: int


@dataclass(frozen=True)
class ImportNode(Node):
    trace: str


@dataclass(frozen=True)
class LinearNode(Node):
    steps: tuple


@dataclass(frozen=True)
class ConcatNode(Node):
    pass


@dataclass(frozen=True)
class ArrangeNode(Node):
    pass


@dataclass(frozen=True)
class ExchangeNode(Node):
    """Moves every row to the worker owning its key (a no-op with one
    worker); placed by :mod:`ddir.ir.optimize.place_exchanges`."""


@dataclass(frozen=True)
class JoinNode(Node):
    """inputs = (left arrange, right arrange)."""
    proj: Proj


@dataclass(frozen=True)
class ReduceNode(Node):
    """inputs = (arrange,)."""
    reducer: str


@dataclass(frozen=True)
class EnterAtNode(Node):
    term: Term


@dataclass(frozen=True)
class VarNode(Node):
    pass


@dataclass(frozen=True)
class EnterNode(Node):
    """inputs = (node in the parent scope,)."""


@dataclass(frozen=True)
class LeaveNode(Node):
    """inputs = (node in a child scope,)."""


@dataclass(frozen=True)
class Scope:
    id: int
    parent: int  # -1 for the root
    name: str
    depth: int
    order: tuple  # ("node", id) | ("scope", id), in execution order
    vars: tuple   # (var node id, body node id)


@dataclass(frozen=True)
class Program:
    file: str
    nodes: tuple   # indexed by id (ids are dense after renumbering)
    scopes: tuple  # indexed by id; scopes[0] is the root
    inputs: tuple  # sorted input numbers
    imports: tuple  # sorted trace names
    exports: tuple  # (name, arrange node id), sorted by name
    # the declared shapes (SPEC D2): ("input", n, RowShape), ("import", trace,
    # RowShape), ("export", name, RowShape), sorted; checked where data enters
    # (server.registry), never by the engine
    shapes: tuple = ()

    def shape(self, kind: str, name):
        """The declared :class:`RowShape` of input ``n`` / import / export
        ``name``, or None."""
        for k, n, s in self.shapes:
            if k == kind and n == name:
                return s
        return None

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id]


NODE_KINDS = {
    InputNode: "input", ImportNode: "import", LinearNode: "linear", ConcatNode: "concat",
    ArrangeNode: "arrange", ExchangeNode: "exchange", JoinNode: "join", ReduceNode: "reduce",
    EnterAtNode: "enter_at", VarNode: "var", EnterNode: "enter", LeaveNode: "leave",
}
STEP_KINDS = (MapStep, FilterStep, NegateStep, FlatMapStep, LiftIterStep, InspectStep)
