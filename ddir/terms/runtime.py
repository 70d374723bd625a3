"""Runtime semantics of scalar terms (SPEC A3, A8): the primitive operations
shared by the compiled code and the reference interpreter.

Every failure raises :class:`TermError` with a message a user can act on;
the engine drops the row and counts the error per operator.
"""

from __future__ import annotations

from math import copysign, isfinite, isnan

from ..values import (INT_MAX, INT_MIN, Float, List, Variant, as_value, format_value, kind_name,
                      order_key, value_problem)

MASK64 = (1 << 64) - 1


class TermError(Exception):
    """A runtime error inside a scalar term (wrong type, index, no arm, overflow)."""


def _show(v) -> str:
    text = format_value(v)
    return text if len(text) <= 40 else text[:37] + "..."


_kind = kind_name  # terms see values only


def check_int(v, what: str) -> int:
    if type(v) is not int:
        raise TermError(f"{what} needs an Int, got {_kind(v)} {_show(v)}")
    return v


def _fit(n: int, op: str) -> int:
    if INT_MIN <= n <= INT_MAX:
        return n
    raise TermError(f"integer overflow in `{op}`")


def add(a, b):
    if type(a) is int and type(b) is int:
        n = a + b
        if INT_MIN <= n <= INT_MAX:
            return n
        raise TermError("integer overflow in `+`")
    check_int(a, "`+`")
    return check_int(b, "`+`")


def sub(a, b):
    if type(a) is int and type(b) is int:
        n = a - b
        if INT_MIN <= n <= INT_MAX:
            return n
        raise TermError("integer overflow in `-`")
    check_int(a, "`-`")
    return check_int(b, "`-`")


def mul(a, b):
    if type(a) is int and type(b) is int:
        return _fit(a * b, "*")
    check_int(a, "`*`")
    return check_int(b, "`*`")


def neg(a):
    return _fit(-check_int(a, "unary `-`"), "-")


ARITH = {"+": add, "-": sub, "*": mul}


def lt(a, b) -> int:
    if type(a) is int and type(b) is int:
        return 1 if a < b else 0
    return 1 if order_key(a) < order_key(b) else 0


def le(a, b) -> int:
    if type(a) is int and type(b) is int:
        return 1 if a <= b else 0
    return 1 if order_key(a) <= order_key(b) else 0


def eq(a, b) -> int:
    return 1 if a == b else 0


def ne(a, b) -> int:
    return 0 if a == b else 1


COMPARE = {
    "==": eq,
    "!=": ne,
    "<": lt,
    "<=": le,
    ">": lambda a, b: lt(b, a),
    ">=": lambda a, b: le(b, a),
}


def truthy(v) -> bool:
    return type(v) is int and v != 0


def index(v, i: int):
    t = type(v)
    if t is tuple or t is List:
        if 0 <= i < len(v):
            return v[i]
        raise TermError(f"index {i} out of range for {_kind(v)} {_show(v)} of length {len(v)}")
    raise TermError(f"`[{i}]` needs a Tuple or List, got {_kind(v)} {_show(v)}")


def fields(v):
    """The fields of a spliced row (SPEC A4): a Tuple or a List."""
    t = type(v)
    if t is tuple:
        return v
    if t is List:
        return tuple(v)
    raise TermError(f"cannot splice {_kind(v)} {_show(v)}: only a Tuple or List has fields")


def inject(tag, payload):
    if type(tag) is not int or tag < 0:
        raise TermError(f"a variant tag must be a non-negative Int, got {_show(tag)}")
    return Variant(tag, payload)


def length(v) -> int:
    """Fields of a Tuple, items of a List, characters (code points) of a String."""
    t = type(v)
    if t is tuple or t is List or t is str:
        return len(v)
    raise TermError(f"`len` needs a Tuple, List or String, got {_kind(v)} {_show(v)}")


# ------------------------------------------------------------ Floats and Strings (SPEC D1)
#
# The Float builtins take Floats only (an Int is converted with `float(i)`,
# as in the reference) and follow IEEE 754 double arithmetic: `fdiv(1.0,
# 0.0)` is inf, `fdiv(0.0, 0.0)` a NaN, never a term error. A NaN that
# arithmetic makes is the positive NaN (IEEE leaves its sign open, and CPUs
# differ), so results are the same on every machine; `fneg` flips the sign
# of a NaN as of any other Float.

_NAN = Float("nan")


def check_float(v, what: str) -> float:
    if type(v) is not Float:
        raise TermError(f"{what} needs a Float, got {_kind(v)} {_show(v)}")
    return float(v)


def _float_result(x: float) -> Float:
    return _NAN if isnan(x) else Float(x)


def to_float(v) -> Float:
    """``float(i)``: the Float nearest to an Int."""
    return Float(check_int(v, "`float`"))


def fadd(a, b) -> Float:
    return _float_result(check_float(a, "`fadd`") + check_float(b, "`fadd`"))


def fsub(a, b) -> Float:
    return _float_result(check_float(a, "`fsub`") - check_float(b, "`fsub`"))


def fmul(a, b) -> Float:
    return _float_result(check_float(a, "`fmul`") * check_float(b, "`fmul`"))


def fdiv(a, b) -> Float:
    x, y = check_float(a, "`fdiv`"), check_float(b, "`fdiv`")
    if y == 0.0:  # IEEE 754, where Python raises ZeroDivisionError
        if x == 0.0 or isnan(x):
            return _NAN
        return Float(copysign(float("inf"), x) * copysign(1.0, y))
    return _float_result(x / y)


def fneg(a) -> Float:
    return Float(-check_float(a, "`fneg`"))


def fint(a) -> int:
    """A Float truncated toward zero to an Int; a non-finite Float or one
    beyond i64 is a term error."""
    x = check_float(a, "`fint`")
    if not isfinite(x):
        raise TermError(f"`fint` of {format_value(a)} (not a finite Float)")
    n = int(x)
    if not INT_MIN <= n <= INT_MAX:
        raise TermError(f"`fint` of {format_value(a)} does not fit in 64 bits")
    return n


def idiv(a, b) -> int:
    """Int division truncating toward zero; ``0`` when ``b`` is 0 (as the
    reference). ``idiv(INT_MIN, -1)`` leaves i64: an overflow term error."""
    a, b = check_int(a, "`idiv`"), check_int(b, "`idiv`")
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    return _fit(q if (a < 0) == (b < 0) else -q, "idiv")


# The most items (List) or characters (String) `append` makes: a fold that
# doubles its accumulator would otherwise take all memory in a few dozen
# rows (`collect` has the same bound).
MAX_APPEND = 10_000_000


def append(a, b):
    """``append(a, b)``: List + List, or String + String."""
    ta, tb = type(a), type(b)
    if ta is List and tb is List:
        if len(a) + len(b) > MAX_APPEND:
            raise TermError(f"`append` would make a List of more than {MAX_APPEND} items")
        return List(a + b)
    if ta is str and tb is str:
        if len(a) + len(b) > MAX_APPEND:
            raise TermError(f"`append` would make a String of more than {MAX_APPEND} characters")
        return a + b
    raise TermError(f"`append` needs two Lists or two Strings, got {_kind(a)} {_show(a)} "
                    f"and {_kind(b)} {_show(b)}")


def utf8_bytes(v) -> List:
    """``bytes(s)``: a String's UTF-8 bytes as a List of Ints."""
    if type(v) is not str:
        raise TermError(f"`bytes` needs a String, got {_kind(v)} {_show(v)}")
    return List(v.encode("utf-8"))


def from_utf8(v) -> str:
    """``utf8(l)``: the String whose UTF-8 bytes are the List of Ints ``l``."""
    if type(v) is not List:
        raise TermError(f"`utf8` needs a List of byte Ints, got {_kind(v)} {_show(v)}")
    for i, b in enumerate(v):
        if type(b) is not int or not 0 <= b <= 255:
            raise TermError(f"`utf8`: item {i} of the List is not a byte (0..255): {_show(b)}")
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError as e:
        raise TermError(f"`utf8`: invalid UTF-8 at byte {e.start}") from None


def istag(tag: int, v) -> int:
    return 1 if type(v) is Variant and v[0] == tag else 0


def as_list(v, what: str):
    if type(v) is not List:
        raise TermError(f"{what} needs a List, got {_kind(v)} {_show(v)}")
    return v


def fold(items, init, step):
    acc = init
    for item in as_list(items, "`fold`"):
        acc = step(item, acc)
    return capped(acc, "`fold`")


# A value computed by a term nests at most twice as deep as one on the
# command line (lang.value_token.MAX_VALUE_DEPTH): an operator may wrap values
# that are at that limit (a join's `list($0)`, a `collect`), and printing,
# hashing and ordering values (recursive, like Python's own tuple hash) stay
# far from the recursion limit (they fail from about 350 levels). A printed
# value deeper than 100 levels is refused if fed back, with the command
# line's message.
MAX_NESTING = 200


class TooDeep(TermError):
    """A computed value would nest more than :data:`MAX_NESTING` levels."""


def capped(v, what: str):
    """``v``, or a :class:`TermError` when it nests more than
    :data:`MAX_NESTING` levels. Iterative; Ints cost one type check."""
    if type(v) is int:
        return v
    stack = [(v, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        x, depth = pop()
        if depth > MAX_NESTING:
            raise TooDeep(f"{what} would nest more than {MAX_NESTING} levels deep")
        t = type(x)
        if t is tuple or t is List:
            for y in x:
                if type(y) is not int:
                    push((y, depth + 1))
        elif t is Variant:
            if type(x[1]) is not int:
                push((x[1], depth + 1))
    return v


def case_scrutinee(v):
    if type(v) is not Variant:
        raise TermError(f"`case` needs a Variant, got {_kind(v)} {_show(v)}")
    return v


def no_arm(v):
    raise TermError(f"no `case` arm for tag {v[0]} (value {_show(v)})")


def no_row(n: int):
    raise TermError(f"`${n}` does not exist here")


def splitmix64(x: int) -> int:
    """SPEC A8, wrapping u64 arithmetic, bit-exact."""
    x = (x * 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def hash_ints(bound: int, keys) -> int:
    """SPEC A8 ``hash(bound, k1, ..., kn)`` on Python ints."""
    acc = 0xCBF29CE484222325
    for k in keys:
        acc = splitmix64(acc ^ (k & MASK64))
    h = acc >> 1
    return h % bound if bound > 0 else h


def hash_term(bound, *keys) -> int:
    check_int(bound, "`hash` bound")
    for k in keys:
        check_int(k, "`hash` key")
    return hash_ints(bound, keys)


def bit_length_u64(v) -> int:
    """``bits`` of SPEC A5 (enter_at): bit length as an unsigned 64-bit number."""
    return (check_int(v, "`enter_at`") & MASK64).bit_length()


# ------------------------------------------------------------ Python functions (SPEC C5)

MAX_RESULT_DEPTH = 100  # as a value on the command line (lang.value_token.MAX_VALUE_DEPTH)
_SHOWN = 200            # at most this much of a function's exception message


def call_function(name: str, fn, *args):
    """``@name(args...)``: call ``fn`` and check that it returned a value.
    Anything it raises, and anything it returns that is not a value, is a
    :class:`TermError` (the row is dropped and counted, SPEC A3), so a
    function can never stop a worker. ``None`` for ``fn``: no such function
    (the install check makes this unreachable)."""
    if fn is None:
        raise TermError(f"unknown function `@{name}`")
    try:
        result = fn(*args)
    # SystemExit and KeyboardInterrupt too: a worker outlives sys.exit(), and a
    # real Ctrl-C never lands here (a command defers it until it has finished,
    # ddir.server.interrupts), so this one is the function's own
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        text = str(e)
        if len(text) > _SHOWN:
            text = text[:_SHOWN - 3] + "..."
        raise TermError(f"`@{name}` raised {type(e).__name__}" + (f": {text}" if text else "")) \
            from None
    if type(result) is int:
        if INT_MIN <= result <= INT_MAX:
            return result
    elif type(result) is bool:  # a predicate's answer is the Int 1 or 0 (top level only)
        return 1 if result else 0
    check_result(name, result)
    return as_value(result)  # a Python float, anywhere in it, is a Float


def check_result(name: str, result) -> None:
    """Raise :class:`TermError` unless ``result`` is a value: Ints in i64,
    floats, valid Unicode strs, tuples, :class:`List`, :class:`Variant`
    (non-negative Int tag), nested at most :data:`MAX_RESULT_DEPTH` levels."""
    problem = value_problem(result, MAX_RESULT_DEPTH, python=True)
    if problem is None:
        return
    kind, part = problem
    if kind == "int":
        raise TermError(f"`@{name}` returned an integer that does not fit in 64 bits: "
                        f"{_clip(str(part))}")
    if kind == "deep":
        raise TermError(f"`@{name}` returned a value nested more than {MAX_RESULT_DEPTH} "
                        "levels deep")
    if kind == "tag":
        raise TermError(f"`@{name}` returned a Variant whose tag is not a non-negative "
                        f"Int: {_clip(repr(part))}")
    what = "" if part is result else " inside its result"
    if kind == "string":
        raise TermError(f"`@{name}` returned a str with a lone surrogate{what} (a String must "
                        "be valid Unicode)")
    raise TermError(f"`@{name}` returned {_python_kind(part)}{what}, not a value (an int, "
                    "a float, a str, a tuple, a ddir.List or a ddir.Variant)")


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _python_kind(v) -> str:
    if v is None:
        return "None"
    t = type(v)
    if t in (float, str, bytes):  # a repr that shows no object address
        return f"a Python {t.__name__} {_clip(repr(v))}"
    return f"a Python {t.__name__}"
