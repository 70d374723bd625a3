import json

import pytest
from hypothesis import given, settings, strategies as st

from ddir.lang.value_token import ValueTokenError, parse_value_token
from ddir.values import (Float, List, Variant, float_order, format_value, from_json, order_key,
                         parse_printed, rows_to_json, to_json)

ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# SPEC D1: every double (both zeros, both infinities, NaNs of either sign)
floats = st.floats(allow_nan=True, allow_infinity=True).map(Float) | st.sampled_from(
    [Float(0.0), Float(-0.0), Float("nan"), Float("-nan"), Float("inf"), Float("-inf"),
     Float(5e-324), Float(1e300)])
# valid Unicode: no lone surrogates (category Cs)
strings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8) | st.sampled_from(
    ["", " ", "New York", '"', "\\", "a\nb", "\u2028", "caf\u00e9", "\U0001F600", "#1:5", "(1, 2)"])
values = st.recursive(
    ints | floats | strings,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=4).map(List),
        st.tuples(st.integers(0, 5), inner).map(lambda p: Variant(*p)),
    ),
    max_leaves=12,
)


def reference_compare(a, b) -> int:
    """SPEC A1/D1 written out directly: variant rank, then contents."""
    rank = {int: 0, Float: 1, str: 2, tuple: 3, Variant: 4, List: 5}
    ra, rb = rank[type(a)], rank[type(b)]
    if ra != rb:
        return -1 if ra < rb else 1
    if type(a) is int:
        return (a > b) - (a < b)
    if type(a) is Float:  # IEEE 754 totalOrder, by the definition's cases
        ka, kb = _total_order_rank(a), _total_order_rank(b)
        return (ka > kb) - (ka < kb)
    if type(a) is str:  # by UTF-8 bytes
        ea, eb = a.encode(), b.encode()
        return (ea > eb) - (ea < eb)
    if type(a) is Variant:
        if a.tag != b.tag:
            return -1 if a.tag < b.tag else 1
        return reference_compare(a.payload, b.payload)
    for x, y in zip(a, b):
        c = reference_compare(x, y)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))


def _total_order_rank(x):
    """totalOrder as a tuple: (-nan) < (-inf ... -0.0) < (0.0 ... inf) < (nan)."""
    import math
    negative = math.copysign(1.0, x) < 0
    if math.isnan(x):
        return (0,) if negative else (3,)
    if negative:
        return (1, -abs(float(x)))
    return (2, float(x))


@settings(max_examples=300)
@given(values, values)
def test_order_matches_reference(a, b):
    ka, kb = order_key(a), order_key(b)
    assert ((ka > kb) - (ka < kb)) == reference_compare(a, b)


@settings(max_examples=300)
@given(values)
def test_printed_form_round_trips(v):
    assert parse_printed(format_value(v)) == v
    assert type(parse_printed(format_value(v))) is type(v)


@settings(max_examples=300)
@given(values)
def test_json_form_round_trips(v):
    """Through the JSON text, which is always strict JSON (no NaN, no
    Infinity: SPEC D1), and a Float stays a Float."""
    text = json.dumps(to_json(v), allow_nan=False)
    assert from_json(json.loads(text)) == v
    assert from_json(to_json(v)) == v


@settings(max_examples=300)
@given(values, values)
def test_order_is_total_and_consistent_with_equality(a, b):
    ka, kb = order_key(a), order_key(b)
    assert (ka == kb) == (a == b)
    assert (ka < kb) + (ka == kb) + (ka > kb) == 1
    if a == b:
        assert hash(a) == hash(b)


flat = st.lists(ints, max_size=3).map(tuple)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.one_of(flat, values), st.one_of(flat, values), ints), max_size=6)
       | st.lists(st.tuples(flat, flat, ints), max_size=6))
def test_rows_json_is_the_json_of_each_value(rows):
    """rows_to_json's shortcut (flat Tuples of Ints are their own JSON form)
    writes exactly what converting value by value writes."""
    expected = [[to_json(k), to_json(v), d] for k, v, d in rows]
    assert json.dumps(rows_to_json(rows)) == json.dumps(expected)


@settings(max_examples=200)
@given(values)
def test_printed_form_is_a_value_token(v):
    """As printed (spaces after commas, inside Strings: SPEC D1) and, where
    no String holds a space, without spaces (SPEC B's one-word form)."""
    texts = [format_value(v)]
    if " " not in "".join(_strings_in(v)):
        texts.append(format_value(v).replace(" ", ""))
    for text in texts:
        if type(v) in (int, Float, str):  # a bare scalar is a one-field row by definition
            assert parse_value_token(text) == (v,)
        else:
            assert parse_value_token(text) == v


def _strings_in(v):
    if type(v) is str:
        yield v
    elif type(v) in (tuple, List):
        for x in v:
            yield from _strings_in(x)
    elif type(v) is Variant:
        yield from _strings_in(v[1])


def test_list_tuple_variant_are_distinct():
    assert List([1]) != (1,) and (1,) != List([1])
    assert Variant(0, ()) != (0, ())
    assert len({List([1]), (1,), Variant(1, ())}) == 3
    assert order_key(5) < order_key(()) < order_key(Variant(0, ())) < order_key(List([]))
    assert order_key((1,)) < order_key((1, 0))


def test_printed_forms():
    assert format_value(Variant(2, (1, 2))) == "#2(1, 2)"
    assert format_value(Variant(1, 5)) == "#1:5"
    assert format_value(Variant(1, Variant(0, ()))) == "#1:#0()"
    assert format_value(Variant(3, List([7, 8]))) == "#3[7, 8]"
    assert format_value((5,)) == "(5)"
    assert format_value(()) == "()"


def test_value_tokens():
    assert parse_value_token("1,2") == (1, 2)
    assert parse_value_token("7") == (7,)
    assert parse_value_token("-3,4") == (-3, 4)
    assert parse_value_token("_") == ()
    assert parse_value_token("tuple(1,2)") == (1, 2)
    assert parse_value_token("list(7,8,9)") == List([7, 8, 9])
    assert parse_value_token("inject(2,tuple(1,2))") == Variant(2, (1, 2))
    assert parse_value_token("3*4") == 12
    assert parse_value_token("(5)") == (5,)
    assert parse_value_token("#1:5") == Variant(1, 5)


def test_bad_value_tokens():
    for bad in ["inject(oops)", "$0", "tuple($1)", "1+", "#x", "(1,", "[1,2", "1 / 2",
                "99999999999999999999", "len(5)", "9223372036854775807+1"]:
        try:
            parse_value_token(bad)
        except ValueTokenError as e:
            assert str(e).startswith(f"bad value `{bad}`")
        else:
            raise AssertionError(f"{bad!r} was accepted")


@pytest.mark.parametrize("text, col", [("--1", 1), ("(1,2)--x", 6), ("tuple(1,2)--", 11)])
def test_a_value_with_a_comment_in_it_is_refused(text, col):
    """In a term `--` starts a comment: `(1,2)--x` would silently be (1,2)."""
    with pytest.raises(ValueTokenError, match=rf"`--` starts a comment .*\(at column {col}\)"):
        parse_value_token(text)
    assert parse_value_token("-(-1)") == 1  # a term: the Int, where `1` is the row (1)
