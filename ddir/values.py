"""The DDIR value model (SPEC A1, D1): Int, Float, String, Tuple, Variant, List.

Values are native, hashable Python objects so that dictionaries keyed by
rows are cheap:

* ``Int``     -> ``int`` (never ``bool``: code that computes truth values
                  must produce ``1``/``0``);
* ``Float``   -> :class:`Float`, a ``float`` subclass with bit equality;
* ``String``  -> ``str`` (valid Unicode: no lone surrogates);
* ``Tuple``   -> ``tuple``;
* ``List``    -> :class:`List`, a ``tuple`` subclass;
* ``Variant`` -> :class:`Variant`, a ``tuple`` subclass ``(tag, payload)``.

The subclasses override equality so that ``List((1,)) != (1,)`` and
``Variant(0, ()) != (0, ())``: Python tries a subclass's ``__eq__`` first even
when it is the right operand, so mixed comparisons are safe in both
directions and inside nested tuples.

The *total order* of SPEC A1/D1 is not Python's order; use :func:`order_key`
wherever order matters (min, collect, printing): Int < Float < String <
Tuple < Variant < List, Floats by IEEE 754 totalOrder, Strings by their
UTF-8 bytes (which for valid Unicode is Python's code point order).
"""

from __future__ import annotations

import json
import re
import struct
from json.decoder import scanstring as _scanstring
from math import copysign as _copysign, isfinite as _isfinite, isnan as _isnan
from itertools import chain
from operator import itemgetter
from typing import Any

__all__ = [
    "List", "Variant", "Float", "Value", "order_key", "compare", "truthy",
    "format_value", "to_json", "rows_to_json", "from_json", "parse_printed", "ValueSyntaxError",
    "ValueTooDeepError", "value_depth", "value_problem", "INT_MIN", "INT_MAX", "as_value",
    "valid_string", "format_float", "format_string", "float_order",
]

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1


class List(tuple):
    """A DDIR List: a sequence, distinct from a Tuple with the same items."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is List and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return tuple.__hash__(self) ^ 0x4C157

    def __repr__(self) -> str:
        return f"List({list(self)!r})"


class Variant(tuple):
    """A DDIR Variant: ``Variant(tag, payload)``; ``v.tag``, ``v.payload``."""

    __slots__ = ()

    def __new__(cls, tag: int, payload: Any) -> "Variant":
        return tuple.__new__(cls, (tag, payload))

    @property
    def tag(self) -> int:
        return self[0]

    @property
    def payload(self) -> Any:
        return self[1]

    def __eq__(self, other: object) -> bool:
        return type(other) is Variant and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return tuple.__hash__(self) ^ 0x7A41A

    def __repr__(self) -> str:
        return f"Variant({self[0]!r}, {self[1]!r})"

    def __getnewargs__(self):  # keeps copy/deepcopy working
        return (self[0], self[1])


class Float(float):
    """A DDIR Float (SPEC D1): an IEEE 754 double that is a value of its own.

    A ``float`` subclass so arithmetic is native, but equality and hashing
    are by the bits: ``Float(1.0) != 1`` (an Int and a Float are different
    values, as ``List((1,)) != (1,)``), ``Float(-0.0) != Float(0.0)`` and
    ``Float("nan") == Float("nan")`` (totalOrder tells them apart, and a
    row must equal itself to consolidate). Every NaN is made the one quiet
    NaN of its sign, so equal-looking NaNs are equal. Arithmetic on Floats
    gives plain ``float``: builtins wrap their results in ``Float``.
    A DDIR String is a plain ``str`` (it equals nothing else)."""

    __slots__ = ()

    def __new__(cls, x=0.0) -> "Float":
        x = float(x)
        if x != x:  # one NaN per sign
            x = _NEG_NAN if _copysign(1.0, x) < 0 else _NAN
        return float.__new__(cls, x)

    def __eq__(self, other: object) -> bool:
        return type(other) is Float and _BITS.pack(self) == _BITS.pack(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(_BITS.pack(self)) ^ 0xF10A7

    def __repr__(self) -> str:
        if _isnan(self):
            return f"Float({format_float(self)!r})"
        return f"Float({float.__repr__(self)})"

    def __getnewargs__(self):
        return (float(self),)


_BITS = struct.Struct("<d")
_NAN = float("nan")
_NEG_NAN = -float("nan")


Value = Any  # int | Float | str | tuple | List | Variant


def value_problem(v: object, max_depth: int, python: bool = False):
    """None when ``v`` is a DDIR value nested at most ``max_depth`` levels
    (Ints in i64, Floats, Strings that are valid Unicode, tuples, Lists,
    Variants whose tag is an Int in 0..INT_MAX); else ``(problem, part)``,
    the first problem found, for the caller to word: ``("int", i)`` an Int
    outside i64, ``("deep", None)``, ``("tag", tag)``, ``("string", s)`` a
    str with a lone surrogate, or ``("type", obj)`` an object that is not a
    value. With ``python``, a plain Python ``float`` is accepted too (the
    caller then makes it a :class:`Float` with :func:`as_value`). Iterative,
    so any depth is checked safely. The one value check of every way in
    (API arguments, a function's result, a cursor token's fields)."""
    stack = [(v, 1)]
    while stack:
        x, depth = stack.pop()
        t = type(x)
        if t is int:
            if not INT_MIN <= x <= INT_MAX:
                return ("int", x)
            continue
        if t is Float:
            continue
        if t is str:
            if not valid_string(x):
                return ("string", x)
            continue
        if python and isinstance(x, float):
            continue
        if depth > max_depth:
            return ("deep", None)
        if t is tuple or t is List:
            stack.extend((y, depth + 1) for y in x)
        elif t is Variant:
            tag = x[0]
            if type(tag) is not int or not 0 <= tag <= INT_MAX:
                return ("tag", tag)
            stack.append((x[1], depth + 1))
        else:
            return ("type", x)
    return None


def valid_string(s: str) -> bool:
    """Whether ``s`` is valid Unicode (no lone surrogate, which UTF-8
    cannot encode): the one rule for a DDIR String."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_value(v: Value) -> Value:
    """``v`` with every plain Python ``float`` inside made a :class:`Float`
    (``v`` itself when there is none). For values that passed
    :func:`value_problem` with ``python=True``, so nested at most that deep."""
    t = type(v)
    if t is int or t is str or t is Float:
        return v
    if t is tuple:
        items = tuple(as_value(x) for x in v)
        return v if all(a is b for a, b in zip(items, v)) else items
    if t is List:
        items = tuple(as_value(x) for x in v)
        return v if all(a is b for a, b in zip(items, v)) else List(items)
    if t is Variant:
        payload = as_value(v[1])
        return v if payload is v[1] else Variant(v[0], payload)
    if isinstance(v, float):
        return Float(v)
    return v


# ---------------------------------------------------------------- order

def order_key(v: Value):
    """A Python-comparable key realising the total order of SPEC A1/D1.

    Int < Float < String < Tuple < Variant < List; tuples and lists compare
    element-wise with a proper prefix smaller (exactly Python's tuple
    comparison of the keys). A Float's key is its IEEE 754 totalOrder as a
    signed integer (-nan < -inf < ... < -0.0 < 0.0 < ... < inf < nan); a
    String's is the str itself: for valid Unicode, code point order is the
    order of the UTF-8 bytes.
    """
    t = type(v)
    if t is int:
        return (0, v)
    if t is tuple:
        return (3, tuple(order_key(x) for x in v))
    if t is Float:
        return (1, float_order(v))
    if t is str:
        return (2, v)
    if t is Variant:
        return (4, v[0], order_key(v[1]))
    if t is List:
        return (5, tuple(order_key(x) for x in v))
    raise TypeError(f"not a DDIR value: {v!r}")


_I64 = struct.Struct("<q")


def float_order(x: float) -> int:
    """IEEE 754 totalOrder of ``x`` as a signed 64-bit integer: the bits
    as a signed integer, with the magnitude bits flipped for negatives."""
    i = _I64.unpack(_BITS.pack(x))[0]
    return i ^ 0x7FFF_FFFF_FFFF_FFFF if i < 0 else i


def compare(a: Value, b: Value) -> int:
    """-1, 0 or 1 by the total order."""
    if type(a) is int and type(b) is int:
        return (a > b) - (a < b)
    ka, kb = order_key(a), order_key(b)
    return (ka > kb) - (ka < kb)


def truthy(v: Value) -> bool:
    """A nonzero Int is true; every other value is false (a Float, even
    ``1.0``, and a String, even ``"1"``: SPEC A1's rule, unchanged by D1)."""
    return type(v) is int and v != 0


# ---------------------------------------------------------------- text form

def format_value(v: Value) -> str:
    t = type(v)
    if t is int:
        return str(v)
    if t is tuple:
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    if t is Float:
        return format_float(v)
    if t is str:
        return format_string(v)
    if t is List:
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if t is Variant:
        tag, payload = v
        if type(payload) is tuple or type(payload) is List:
            return f"#{tag}{format_value(payload)}"
        return f"#{tag}:{format_value(payload)}"
    raise TypeError(f"not a DDIR value: {v!r}")


def format_float(x: float) -> str:
    """SPEC D1: the shortest text that reads back as the same double, always
    with a `.`, an exponent or a name, so never an Int: ``1.0``, ``-0.0``,
    ``1.5``, ``1e+300``, ``1e-05``, ``inf``, ``-inf``, ``nan``, ``-nan``
    (Python's ``repr``, which gives both NaNs as ``nan``)."""
    if _isnan(x):
        return "-nan" if _copysign(1.0, x) < 0 else "nan"
    return float.__repr__(x)


# Characters a printed String escapes: `"`, `\`, and every character that is
# not printable (controls, line and paragraph separators, unassigned and
# private code points...), so a printed value is one line of visible text.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\b": "\\b", "\f": "\\f"}


def format_string(s: str) -> str:
    """SPEC D1: ``"New York"``, with JSON-style escapes (``\\"``, ``\\\\``,
    ``\\n``, ``\\u0001``); printable characters beyond ASCII are written as
    themselves (``"café"``). The result is a JSON string literal."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            n = ord(ch)
            if n > 0xFFFF:  # a surrogate pair, as JSON writes it
                n -= 0x10000
                out.append(f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}")
            else:
                out.append(f"\\u{n:04x}")
    out.append('"')
    return "".join(out)


class ValueSyntaxError(ValueError):
    """A malformed printed value; ``pos`` is the 0-based offset of the problem;
    ``in_string``: the problem is inside a String literal."""

    def __init__(self, message: str, pos: int, in_string: bool = False):
        super().__init__(message)
        self.pos = pos
        self.in_string = in_string


class ValueTooDeepError(ValueSyntaxError):
    """A printed value nested deeper than the ``max_depth`` it was parsed with."""


def value_depth(v: Value) -> int:
    """How deeply ``v`` nests: 0 for an Int, a Float or a String, 1 + the
    deepest item for a Tuple, List or Variant. Iterative, so any depth is
    measured safely."""
    deepest = 0
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        t = type(x)
        if t is int or t is str or t is Float:
            deepest = max(deepest, d)
        elif t is Variant:
            stack.append((x[1], d + 1))
        else:
            deepest = max(deepest, d + 1)
            stack.extend((y, d + 1) for y in x)
    return deepest


def kind_name(v) -> str:
    """The variant of a value for messages (``Int``, ``Float``, ``String``,
    ``Tuple``, ``List``, ``Variant``); the Python type's name for anything
    that is not a value."""
    name = _KIND_NAMES.get(type(v))
    return name if name is not None else type(v).__name__


_KIND_NAMES = {int: "Int", Float: "Float", str: "String", tuple: "Tuple", List: "List",
               Variant: "Variant"}


OUTSIDE, QUOTE, INSIDE = 0, 1, 2


def string_mask(text: str) -> list:
    """For each character of ``text``: ``OUTSIDE`` a string literal,
    ``QUOTE`` (the quotes that open and close one) or ``INSIDE`` it
    (backslash escapes included; an unterminated one runs to the end).
    The one scanner behind everything that must look past Strings in a
    command line or a printed value (splitting words, finding `--`,
    compacting a value)."""
    mask = [OUTSIDE] * len(text)
    if '"' not in text:
        return mask
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                mask[i] = QUOTE
                continue
            mask[i] = INSIDE
        elif ch == '"':
            in_string = True
            mask[i] = QUOTE
    return mask


def parse_printed(text: str, max_depth: int | None = None) -> Value:
    """Parse the printed form (``format_value``'s output) back to a value.

    Whitespace between tokens is allowed, so both ``(1, 2)`` and ``(1,2)``
    work. The parser keeps its open containers on an explicit stack, so deep
    nesting costs no Python recursion; with ``max_depth``, a value nested
    deeper (see :func:`value_depth`) raises :class:`ValueTooDeepError`.
    """
    p = _Scanner(text)
    # Open containers, innermost last: [close, items] for `(`/`[`, or
    # ["#", tag] for a variant waiting for its payload.
    stack: list = []

    def open_one() -> None:
        if max_depth is not None and len(stack) >= max_depth:
            raise ValueTooDeepError(f"nested more than {max_depth} levels deep", p.pos)

    while True:
        ch = p.peek()
        if ch in ("(", "["):
            open_one()
            p.pos += 1
            close = ")" if ch == "(" else "]"
            if p.peek() != close:
                stack.append([close, []])
                continue  # read the first item
            p.pos += 1
            value = () if close == ")" else List()
        elif ch == "#":
            open_one()
            p.pos += 1
            tag_pos = p.pos
            tag = p.integer()
            if tag < 0:
                raise ValueSyntaxError("a variant tag must be non-negative", tag_pos)
            nxt = p.peek()
            if nxt == ":":
                p.pos += 1
            elif nxt not in ("(", "["):
                raise ValueSyntaxError(f"expected `(`, `[` or `:` after the variant tag, "
                                       f"found {p.found()}", p.pos)
            stack.append(["#", tag])
            continue  # read the payload
        elif ch == "-" or ch.isdigit() or ch in ("i", "n"):
            value = p.number()
        elif ch == '"':
            value = p.string()
        else:
            raise ValueSyntaxError(f"expected a value, found {p.found()}", p.pos)
        # A value is complete: close every container it completes.
        while stack:
            frame = stack[-1]
            if frame[0] == "#":
                stack.pop()
                value = Variant(frame[1], value)
                continue
            frame[1].append(value)
            nxt = p.peek()
            if nxt == ",":
                p.pos += 1
                break  # read the next item
            if nxt != frame[0]:
                raise ValueSyntaxError(f"expected `,` or `{frame[0]}`, found {p.found()}", p.pos)
            p.pos += 1
            stack.pop()
            value = tuple(frame[1]) if frame[0] == ")" else List(frame[1])
        else:
            break
    if p.peek():
        raise ValueSyntaxError(f"unexpected {p.found()} after the value", p.pos)
    return value


# An Int (no group matched), a named Float (group 1) or a Float with a
# fraction (group 2) and/or an exponent (group 3).
_NUMBER = re.compile(r"(-?(?:inf|nan))(?![A-Za-z0-9_])|-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


_STRING_PROBLEMS = {
    "Unterminated string starting at": "a string without its closing `\"`",
    "Invalid control character at": "a control character inside a string (write it as an "
                                     "escape: `\\n`, `\\t`, `\\u0001`)",
    "Invalid \\escape": "an unknown escape in a string (escapes are `\\\"`, `\\\\`, `\\/`, "
                        "`\\b`, `\\f`, `\\n`, `\\r`, `\\t`, `\\uXXXX`)",
    "Invalid \\uXXXX escape": "a `\\u` escape needs four hex digits",
}


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        """The next non-blank character ('' at the end), skipping blanks."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def found(self) -> str:
        ch = self.peek()
        return f"`{ch}`" if ch else "end of value"

    def number(self):
        """An Int or a Float (``1.5``, ``-0.0``, ``1e+300``, ``inf``,
        ``-inf``, ``nan``, ``-nan``) at the current position."""
        self.peek()
        start = self.pos
        m = _NUMBER.match(self.text, start)
        if m is None or m.end() == start:
            raise ValueSyntaxError(f"expected a value, found {self.found()}", start)
        if m.group(1) is None and m.group(2) is None and m.group(3) is None:
            return self.integer()
        self.pos = m.end()
        word = m.group(1)
        if word is not None:
            x = float(word)  # `nan` and `-nan` keep their sign
            if word.startswith("-"):
                x = -abs(x) if not _isnan(x) else _NEG_NAN
            return Float(x)
        return Float(float(m.group(0)))

    def string(self) -> str:
        """A String in the printed form (a JSON string literal)."""
        self.peek()
        start = self.pos
        try:
            s, end = _scanstring(self.text, start + 1, True)
        except ValueError as e:  # json's JSONDecodeError: its msg and pos
            msg = getattr(e, "msg", str(e))
            what = _STRING_PROBLEMS.get(msg, msg[:1].lower() + msg[1:])
            raise ValueSyntaxError(what, getattr(e, "pos", start), in_string=True) from None
        if not valid_string(s):
            raise ValueSyntaxError("a string cannot hold a lone surrogate (\\ud800-\\udfff "
                                   "not in a pair)", start, in_string=True)
        self.pos = end
        return s

    def integer(self) -> int:
        self.peek()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] == "-":
            self.pos += 1
        digits = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        if self.pos == digits:
            self.pos = start
            raise ValueSyntaxError(f"expected an integer, found {self.found()}", start)
        n = int(self.text[start:self.pos])
        if not INT_MIN <= n <= INT_MAX:
            raise ValueSyntaxError(f"integer {n} does not fit in 64 bits", start)
        return n


# ---------------------------------------------------------------- JSON form

def to_json(v: Value):
    """The JSON-compatible form of SPEC Part B and D1 (``json.dumps`` it):
    a finite Float is a JSON number (a ``float``, which ``json`` writes with
    a `.` or an exponent), a non-finite one ``{"float": "inf"}`` (``-inf``,
    ``nan``, ``-nan``), so the output is always valid JSON; a String is a
    JSON string."""
    t = type(v)
    if t is int or t is str:
        return v
    if t is tuple:
        return [to_json(x) for x in v]
    if t is Float:
        return float(v) if _isfinite(v) else {"float": format_float(v)}
    if t is List:
        return {"list": [to_json(x) for x in v]}
    if t is Variant:
        return {"tag": v[0], "val": to_json(v[1])}
    raise TypeError(f"not a DDIR value: {v!r}")


def rows_to_json(rows) -> list:
    """``[(key, val, diff)]`` in JSON form. Rows whose keys and vals are all
    flat Tuples of Ints already are it (``json`` writes a tuple as a list),
    which a few C-level passes confirm; the others convert value by value."""
    if _flat_ints(list(map(itemgetter(0), rows))) and _flat_ints(list(map(itemgetter(1), rows))):
        return rows
    return [[to_json(k), to_json(v), d] for k, v, d in rows]


def _flat_ints(values: list) -> bool:
    return set(map(type, values)) <= {tuple} and set(map(type, chain.from_iterable(values))) <= {int}


_NAMED_FLOATS = {"inf", "-inf", "nan", "-nan"}


def from_json(j) -> Value:
    """Inverse of :func:`to_json` (accepts already-decoded JSON). A JSON
    number with a fraction or an exponent decodes as a ``float``, and so is a
    Float; a JSON string is a String."""
    if isinstance(j, bool):
        raise ValueError("booleans are not DDIR values")
    if isinstance(j, int):
        return j
    if isinstance(j, float):
        return Float(j)
    if isinstance(j, str):
        if not valid_string(j):
            raise ValueError("a string cannot hold a lone surrogate")
        return j
    if isinstance(j, list):
        return tuple(from_json(x) for x in j)
    if isinstance(j, dict):
        if set(j) == {"list"}:
            return List(from_json(x) for x in j["list"])
        if set(j) == {"tag", "val"}:
            return Variant(j["tag"], from_json(j["val"]))
        if set(j) == {"float"} and j["float"] in _NAMED_FLOATS:
            return parse_printed(j["float"])
    raise ValueError(f"not the JSON form of a DDIR value: {json.dumps(j)}")
