"""Shapes (SPEC D2): what a value looks like, declared in a program.

A shape is ``int`` (alias ``u64``), ``float``, ``string``, a tuple
``(s1, ..., sn)`` (``()`` is unit), ``List(s)``, a sum (a ``type``'s
constructors in tag order, each with its payload's shape; ``Option(s)`` is
``None | Some s`` and ``Result(a, b)`` is ``Ok a | Err b``). A collection's
ascription ``: (K ; V)`` is a :class:`RowShape`.

Shapes are frozen dataclasses of strings and tuples, so the IR carries them
(:class:`ddir.ir.nodes.Program` ``shapes``) through the codec unchanged. Two
sums are the same shape when their lanes are (their type and constructor
names are for messages only), as in the reference.

:func:`check` tells whether a value fits a shape: ``None``, or ``(path,
problem)`` for the first part that does not (``path`` like ``[1][0]``,
``.Some`` for a variant's payload). It runs where data enters (``feed``,
``load``, ``feed_many``), never in a worker. :func:`parse_shape` and
:func:`parse_rows` read shape text outside a program (tests, the API).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..values import Float, List, Variant, format_value, kind_name

__all__ = ["Shape", "PrimShape", "TupleShape", "ListShape", "SumShape", "RowShape", "INT",
           "FLOAT", "STRING", "UNIT", "show", "check", "check_row", "row_problem",
           "parse_shape", "parse_rows", "ShapeError", "make", "option", "result",
           "PRIM_NAMES", "SHAPE_FUNCTIONS", "first_misfit", "misfit_message"]


class Shape:
    """Base of every shape (frozen dataclasses, hashable)."""

    __slots__ = ()


@dataclass(frozen=True)
class PrimShape(Shape):
    kind: str  # "int" | "float" | "string"


@dataclass(frozen=True)
class TupleShape(Shape):
    fields: tuple


@dataclass(frozen=True)
class ListShape(Shape):
    elem: Shape


@dataclass(frozen=True)
class SumShape(Shape):
    """``lanes``: the payload shape of each tag. ``name`` (the type, as a
    message shows it) and ``ctors`` (constructor names by tag) do not take
    part in equality."""
    lanes: tuple
    name: str = field(default="", compare=False)
    ctors: tuple = field(default=(), compare=False)


@dataclass(frozen=True)
class RowShape(Shape):
    """``(K ; V)``: the shape of every row's key and val."""
    key: Shape
    val: Shape


INT = PrimShape("int")
FLOAT = PrimShape("float")
STRING = PrimShape("string")
UNIT = TupleShape(())

PRIM_NAMES = {"int": INT, "u64": INT, "float": FLOAT, "string": STRING}
SHAPE_FUNCTIONS = {"List": 1, "Option": 1, "Result": 2}


class ShapeError(ValueError):
    """A shape that cannot be built; ``at`` is the index of the name or
    argument at fault (for the caller to locate)."""

    def __init__(self, message: str, at: int = 0):
        super().__init__(message)
        self.at = at


def option(s: Shape) -> SumShape:
    return SumShape((UNIT, s), f"Option({show(s)})", ("None", "Some"))


def result(a: Shape, b: Shape) -> SumShape:
    return SumShape((a, b), f"Result({show(a)}, {show(b)})", ("Ok", "Err"))


def make(name: str, args, types: dict) -> Shape:
    """The shape written ``name`` (``args`` None) or ``name(args...)``;
    ``types`` maps the names of earlier ``type`` declarations to their
    :class:`SumShape`. :class:`ShapeError` for an unknown name or a wrong
    argument count (``at``: 0 the name, i+1 argument i)."""
    if args is None:
        if name in PRIM_NAMES:
            return PRIM_NAMES[name]
        if name in types:
            return types[name]
        if name in SHAPE_FUNCTIONS:
            n = SHAPE_FUNCTIONS[name]
            raise ShapeError(f"`{name}` takes {n} shape{'s' if n > 1 else ''}: "
                             f"write `{name}({', '.join('s' * n)})`")
        raise ShapeError(_unknown(name, types))
    if name not in SHAPE_FUNCTIONS:
        if name in PRIM_NAMES or name in types:
            raise ShapeError(f"`{name}` takes no arguments")
        raise ShapeError(_unknown(name, types))
    n = SHAPE_FUNCTIONS[name]
    if len(args) != n:
        raise ShapeError(f"`{name}` takes {n} shape{'s' if n > 1 else ''}, got {len(args)}")
    if name == "List":
        return ListShape(args[0])
    if name == "Option":
        return option(args[0])
    return result(args[0], args[1])


def _unknown(name: str, types: dict) -> str:
    known = ", ".join(f"`{t}`" for t in types)
    more = f"; the types declared so far are {known}" if known else ""
    return (f"unknown shape `{name}` (a shape is int, u64, float, string, (...), List(s), "
            f"Option(s), Result(a, b) or an earlier `type`{more})")


# ------------------------------------------------------------ text form

def show(s: Shape) -> str:
    """The text of a shape, as a program would write it."""
    if isinstance(s, PrimShape):
        return s.kind
    if isinstance(s, TupleShape):
        return "(" + ", ".join(show(f) for f in s.fields) + ")"
    if isinstance(s, ListShape):
        return f"List({show(s.elem)})"
    if isinstance(s, SumShape):
        if s.name:
            return s.name
        return "<" + " | ".join(f"#{i} {show(x)}" for i, x in enumerate(s.lanes)) + ">"
    if isinstance(s, RowShape):
        return f"({show(s.key)} ; {show(s.val)})"
    raise TypeError(s)


# ------------------------------------------------------------ checking

def _kind(v) -> str:
    name = kind_name(v)
    return ("an " if name == "Int" else "a ") + name


def _shown(v) -> str:
    try:
        text = format_value(v)
    except Exception:  # not a value at all: say what it is
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check(value, shape: Shape, path: str = ""):
    """None when ``value`` fits ``shape``; else ``(path, problem)`` for the
    first part that does not."""
    s = shape
    v = value
    t = type(v)
    if isinstance(s, PrimShape):
        want = int if s.kind == "int" else Float if s.kind == "float" else str
        if t is want:
            return None
        return path, f"{_shown(v)} is {_kind(v)}, not {'an' if s.kind == 'int' else 'a'} {s.kind}"
    if isinstance(s, TupleShape):
        if t is not tuple:
            return path, f"{_shown(v)} is {_kind(v)}, not a Tuple {show(s)}"
        if len(v) != len(s.fields):
            return path, f"{_shown(v)} has {len(v)} field{'s' * (len(v) != 1)}, not {len(s.fields)}"
        for i, (x, f) in enumerate(zip(v, s.fields)):
            if type(x) is int and f is INT:  # the common case, without a call
                continue
            bad = check(x, f, f"{path}[{i}]")
            if bad is not None:
                return bad
        return None
    if isinstance(s, ListShape):
        if t is not List:
            return path, f"{_shown(v)} is {_kind(v)}, not a List"
        if s.elem is INT:
            for i, x in enumerate(v):
                if type(x) is not int:
                    return check(x, INT, f"{path}[{i}]")
            return None
        for i, x in enumerate(v):
            bad = check(x, s.elem, f"{path}[{i}]")
            if bad is not None:
                return bad
        return None
    if isinstance(s, SumShape):
        if t is not Variant:
            return path, f"{_shown(v)} is {_kind(v)}, not a {show(s)}"
        tag, payload = v
        if tag >= len(s.lanes):
            return path, (f"{_shown(v)} has tag {tag}, but {show(s)} has "
                          f"{len(s.lanes)} constructor{'s' * (len(s.lanes) != 1)}")
        name = s.ctors[tag] if tag < len(s.ctors) else f"#{tag}"
        return check(payload, s.lanes[tag], f"{path}.{name}")
    raise TypeError(s)


def check_row(key, val, shape: RowShape):
    """None when the row fits; else ``(path, problem)`` with the path
    starting at ``key`` or ``val``."""
    bad = check(key, shape.key, "key")
    if bad is None:
        bad = check(val, shape.val, "val")
    return bad


def row_problem(key, val, shape: RowShape) -> str | None:
    """None, or the words of why the row does not fit: ``key[1]: "x" is a
    String, not an int (the shape is ((int, int) ; ()))``."""
    bad = check_row(key, val, shape)
    if bad is None:
        return None
    path, problem = bad
    return f"{path}: {problem} (the shape is {show(shape)})"


# ------------------------------------------------------------ shape text

def parse_shape(text: str, types: dict | None = None) -> Shape:
    """A shape from its text (``(int, List(int))``); ``types``: declared
    sums by name. :class:`ShapeError` on anything else."""
    p = _TextParser(text, types or {})
    s = p.shape()
    p.end()
    return s


def parse_rows(text: str, types: dict | None = None) -> RowShape:
    """``(K ; V)`` from its text."""
    p = _TextParser(text, types or {})
    p.expect("(")
    key = p.shape()
    p.expect(";")
    val = p.shape()
    p.expect(")")
    p.end()
    return RowShape(key, val)


class _TextParser:
    def __init__(self, text: str, types: dict):
        import re
        self.tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\S", text)
        self.i = 0
        self.types = types

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self):
        tok = self.peek()
        if tok is None:
            raise ShapeError("unexpected end of shape")
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise ShapeError(f"expected `{tok}`, got `{got}`")

    def end(self) -> None:
        if self.peek() is not None:
            raise ShapeError(f"unexpected `{self.peek()}` after the shape")

    def shape(self) -> Shape:
        tok = self.next()
        if tok == "(":
            fields = []
            if self.peek() != ")":
                fields.append(self.shape())
                while self.peek() == ",":
                    self.next()
                    fields.append(self.shape())
            self.expect(")")
            return TupleShape(tuple(fields))
        if not (tok[0].isalpha() or tok[0] == "_"):
            raise ShapeError(f"expected a shape, got `{tok}`")
        args = None
        if self.peek() == "(":
            self.next()
            args = [self.shape()]
            while self.peek() == ",":
                self.next()
                args.append(self.shape())
            self.expect(")")
        return make(tok, args, self.types)


# ------------------------------------------------------------ batches

def first_misfit(batch, shape: RowShape):
    """``(i, key, val, path, problem)`` for the first row (1-based ``i``)
    of ``batch`` that does not fit ``shape``, or None. ``batch``: a list of
    ``(key, val, diff)`` rows, or columns of Ints (``keys``/``vals`` lists
    of arrays, ``rows()``: then every row has one structure, and only its
    arities and the shape are compared), or anything with ``rows()``."""
    if isinstance(batch, list):
        rows = batch
    else:
        keys, vals = getattr(batch, "keys", None), getattr(batch, "vals", None)
        if isinstance(keys, list) and isinstance(vals, list) and _all_ints(shape.key, len(keys)) \
                and _all_ints(shape.val, len(vals)) and _int_columns(keys + vals):
            return None
        rows = batch.rows()
    for i, row in enumerate(rows, 1):
        key, val = row[0], row[1]
        bad = check_row(key, val, shape)
        if bad is not None:
            return (i, key, val) + bad
    return None


def _all_ints(s: Shape, n: int) -> bool:
    return isinstance(s, TupleShape) and len(s.fields) == n and all(f == INT for f in s.fields)


def _int_columns(columns: list) -> bool:
    return all(getattr(getattr(c, "dtype", None), "kind", "") in "iu" and
               getattr(c, "dtype", None) is not None for c in columns)


def misfit_message(bad, shape: RowShape, single: bool) -> str:
    """The words for :func:`first_misfit`'s answer."""
    i, key, val, path, problem = bad
    row = f"{_shown(key)} ; {_shown(val)}"
    which = f"the row {row}" if single else f"row {i} ({row})"
    return f"{which} does not fit the shape {show(shape)}: at {path}, {problem}"
