"""The syntax tree both program syntaxes parse to (terms live in
:mod:`ddir.terms.ast`). Every node carries ``loc = (line, col)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..terms.ast import Term

Loc = tuple  # (line, col), 1-based


@dataclass(frozen=True)
class Splice:
    """A projection field that is exactly ``$n``: splices row ``n``'s fields."""
    n: int


Field = Union[Splice, Term]


@dataclass(frozen=True)
class Proj:
    """``(k1, ..., km ; v1, ..., vn)`` (SPEC A4). ``bare``: the key and the
    val are each one field used as it is, not wrapped in a Tuple: ``|
    value(t)`` (SPEC D2) is ``Proj((Row(0),), (t,), bare=True)``."""
    key: tuple
    val: tuple
    bare: bool = False


# ------------------------------------------------------------ collections

@dataclass(frozen=True)
class Input:
    n: int
    loc: Loc
    shape: object = None  # its ascription `: (K ; V)` (a shapes.RowShape), if any


@dataclass(frozen=True)
class Import:
    name: str
    loc: Loc     # the `import` keyword
    at: Loc      # its string literal: where a bad or unknown trace name is reported
    shape: object = None  # its ascription, if any


@dataclass(frozen=True)
class Ref:
    name: str
    loc: Loc


@dataclass(frozen=True)
class FieldRef:
    """``scope::field``."""
    scope: str
    field: str
    loc: Loc


@dataclass(frozen=True)
class Concat:
    """Multiset union; subtraction is represented by a ``negate`` Op part."""
    parts: tuple
    loc: Loc


# Operator kinds of :class:`Op` and what they carry.
LINEAR_KINDS = ("map", "filter", "negate", "flatmap", "lift_iter", "inspect", "value")
REDUCERS = ("min", "distinct", "count", "collect")
OP_KINDS = LINEAR_KINDS + REDUCERS + ("join", "arrange", "enter_at")


@dataclass(frozen=True)
class Op:
    """One collection operator applied to ``source`` (and ``other`` for join).

    ``term`` for filter/flatmap/enter_at, ``proj`` for map/join/value
    (``value(t)`` is a bare projection, see :class:`Proj`), ``label`` for
    inspect.
    """
    kind: str
    source: object
    loc: Loc
    other: object = None
    term: Optional[Term] = None
    proj: Optional[Proj] = None
    label: Optional[str] = None


# ------------------------------------------------------------ statements

@dataclass(frozen=True)
class Let:
    name: str
    expr: object
    loc: Loc


@dataclass(frozen=True)
class Var:
    name: str
    expr: object
    loc: Loc
    shape: object = None  # its ascription, if any


@dataclass(frozen=True)
class Export:
    name: str
    expr: object
    loc: Loc
    shape: object = None  # its ascription, if any


@dataclass(frozen=True)
class ScopeDecl:
    name: str
    body: tuple
    loc: Loc


@dataclass(frozen=True)
class Program:
    """A parsed file: root statements; ``file``/``source`` for error messages."""
    file: str
    body: tuple
    source: str = field(default="", compare=False, repr=False)
