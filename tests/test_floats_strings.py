"""SPEC D1: Floats and Strings through the value model, the codec and the key
hash, the command line, the printed and JSON forms, the builtins (compiled
and interpreted alike), the Python API, and every worker count."""
import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import ddir
from conftest import ROOT
from ddir.engine.exchange import shard_of
from ddir.ir.codec import packb, unpackb
from ddir.lang.parser import parse_term
from ddir.lang.value_token import ValueTokenError, parse_value_token, split_words
from ddir.server.commands import Feed, parse_command
from ddir.terms.compile import compile_term
from ddir.terms.interp import evaluate
from ddir.terms.runtime import TermError
from ddir.values import (Float, List, Variant, format_value, from_json, order_key, parse_printed,
                         to_json, truthy, value_depth, value_problem)
from test_values import values

NAN, NEG_NAN, INF, NINF = Float("nan"), Float("-nan"), Float("inf"), Float("-inf")


# ---------------------------------------------------------------- the value model

def test_floats_are_values_of_their_own():
    assert Float(1.0) != 1 and 1 != Float(1.0) and (1,) != (Float(1.0),)
    assert Float(-0.0) != Float(0.0)
    assert NAN == Float(float("nan")) and NEG_NAN != NAN
    assert len({Float(0.0), Float(-0.0), NAN, Float(float("nan")), 0, "0"}) == 5
    assert "1" != 1 and ("a",) != (List(["a"]),)


def test_order_of_variants_and_of_floats_and_strings():
    ordered = [-5, 7, NEG_NAN, NINF, Float(-1e300), Float(-1.5), Float(-5e-324), Float(-0.0),
               Float(0.0), Float(5e-324), Float(2.5), INF, NAN, "", "A", "a", "a b", "é",
               "\uffff", "\U0001F600", (), (1,), Variant(0, ()), List([])]
    assert sorted(reversed(ordered), key=order_key) == ordered
    assert sorted(ordered[::2] + ordered[1::2], key=order_key) == ordered


def test_printed_forms():
    cases = {Float(1.5): "1.5", Float(1.0): "1.0", Float(-0.0): "-0.0", Float(1e300): "1e+300",
             Float(1e-5): "1e-05", INF: "inf", NINF: "-inf", NAN: "nan", NEG_NAN: "-nan",
             "New York": '"New York"', 'say "hi"': '"say \\"hi\\""', "a\\b": '"a\\\\b"',
             "line\nnext\t": '"line\\nnext\\t"', "\x01": '"\\u0001"', "café": '"café"',
             "\u2028": '"\\u2028"', (1, "a b", Float(2.5)): '(1, "a b", 2.5)',
             Variant(1, "x"): '#1:"x"', List([Float(0.5)]): "[0.5]"}
    for v, text in cases.items():
        assert format_value(v) == text
        back = parse_printed(text)
        assert back == v and type(back) is type(v)
    assert math.copysign(1.0, parse_printed("-nan")) < 0
    assert parse_printed('"caf\\u00e9"') == "café"
    assert parse_printed("1e5") == Float(100000.0) and parse_printed("-3") == -3


@pytest.mark.parametrize("text", ['"abc', '"\\ud800"', '"a\nb"', '"\\q"', "1.", ".5", "infinity",
                                  "nanx", "1e"])
def test_bad_printed_values(text):
    with pytest.raises(ValueError):
        parse_printed(text)


def test_json_forms_are_strict_json():
    assert to_json(Float(2.0)) == 2.0 and json.dumps(to_json(Float(2.0))) == "2.0"
    assert json.dumps(to_json(Float(1e300))) == "1e+300"
    assert [to_json(x) for x in (INF, NINF, NAN, NEG_NAN)] == [
        {"float": "inf"}, {"float": "-inf"}, {"float": "nan"}, {"float": "-nan"}]
    assert to_json((1, "é", List([Float(-0.0)]))) == [1, "é", {"list": [-0.0]}]
    for v in (INF, NEG_NAN, (Float(0.5), "x")):
        back = from_json(json.loads(json.dumps(to_json(v), allow_nan=False)))
        assert back == v
    assert type(from_json(1.0)) is Float and type(from_json(1)) is int
    with pytest.raises(ValueError):
        from_json({"float": "Infinity"})


def test_value_problem_and_depth():
    assert value_problem((Float(1.0), "x"), 5) is None
    assert value_problem((1.0,), 5) == ("type", 1.0)  # a plain float is not a value ...
    assert value_problem((1.0,), 5, python=True) is None  # ... but the API takes one
    assert value_problem(("a\ud800",), 5) == ("string", "a\ud800")
    assert value_depth(("abc", Float(1.0))) == 1 and value_depth("abc") == 0


def test_truthiness_of_floats_and_strings():
    """SPEC A1's rule stands: only a nonzero Int is true."""
    assert truthy(1) and not truthy(Float(1.0)) and not truthy("1") and not truthy(NAN)


@settings(max_examples=300)
@given(values)
def test_msgpack_round_trip_keeps_types_and_bytes(v):
    data = packb(v)
    back = unpackb(data)
    assert back == v and packb(back) == data
    assert format_value(back) == format_value(v)  # same types all the way down


def test_shard_of_is_the_same_in_another_process():
    """CRC-32 of the msgpack bytes: no per-process string hashing."""
    keys = [("New York",), (Float(2.5),), ("é", Float(-0.0)), (NAN,), ("",), (1, "a b"),
            (List(["x"]), Variant(1, "y"))]
    mine = [shard_of(k, n) for k in keys for n in (2, 3, 7)]
    code = ("from ddir.values import *; from ddir.engine.exchange import shard_of; "
            f"keys = {keys!r}; print([shard_of(k, n) for k in keys for n in (2, 3, 7)])")
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, cwd=ROOT, check=True).stdout
        assert out.strip() == str(mine)


# ---------------------------------------------------------------- command line

def test_words_of_a_command_line():
    assert split_words('feed p 0 (1, "New York") val=(1, 2) time=3') == [
        "feed", "p", "0", '(1, "New York")', "val=(1, 2)", "time=3"]
    assert split_words('feed p 0 "a \\" b" [1, [2, 3]]  x') == [
        "feed", "p", "0", '"a \\" b"', "[1, [2, 3]]", "x"]
    assert split_words("peek t )  (") == ["peek", "t", ")", "("]
    assert split_words('feed p 0 "open') == ["feed", "p", "0", '"open']
    assert split_words("  tick  ") == ["tick"]


@pytest.mark.parametrize("text, value", [
    ("2.5", (Float(2.5),)), ('"x"', ("x",)), ('1,"a b",2.5', (1, "a b", Float(2.5))),
    ("-inf", (NINF,)), ("nan,1", (NAN, 1)), ('(1, "New York")', (1, "New York")),
    ('#1:"a"', Variant(1, "a")), ('["a", 1.5]', List(["a", Float(1.5)])),
    ("float(3)", Float(3.0)), ("fadd(float(1), float(2))", Float(3.0)),
    ('append("a b", " c")', "a b c"), ('"a" < "b"', 1), ("fadd(1.5, -0.5)", Float(1.0)),
    ('tuple("x", 2.5)', ("x", Float(2.5))),
    ("idiv(-7, 2)", -3), ("utf8(list(104, 105))", "hi"), ("(-0.0)", (Float(-0.0),)),
])
def test_value_tokens(text, value):
    got = parse_value_token(text)
    assert got == value and format_value(got) == format_value(value)


@pytest.mark.parametrize("text, message", [
    ('"abc', 'a string without its closing `"` (at column 1)'),
    ('1,"a', 'a string without its closing `"` (at column 3)'),
    ("fint(float(1) )", None),  # not bad: spaces inside brackets
    ("utf8(list(255))", "`utf8`: invalid UTF-8 at byte 0"),
    ("fint(fdiv(float(1), float(0)))", "`fint` of inf (not a finite Float)"),
])
def test_bad_value_tokens(text, message):
    if message is None:
        assert parse_value_token(text) == 1
        return
    with pytest.raises(ValueTokenError) as e:
        parse_value_token(text)
    assert str(e.value).startswith(f"bad value `{text}`: ") and message in str(e.value)


def test_feed_line_with_spaces_in_values():
    cmd = parse_command('feed p 0 (1, "New York") val=("a b", 2.5) diff=2')
    assert cmd == Feed("p", 0, (1, "New York"), ("a b", Float(2.5)), None, 2)
    assert type(cmd.val[1]) is Float


# ---------------------------------------------------------------- builtins

ROWS = [((3,), ("héllo", Float(2.5))), ((-7,), ("", NAN)), ((0,), ("a b", NINF)),
        ((2,), ("\U0001F600", Float(-0.0)))]

TERMS = {
    "float($0[0])": [Float(3.0), Float(-7.0), Float(0.0), Float(2.0)],
    "fadd($1[1], float($0[0]))": [Float(5.5), NAN, NINF, Float(2.0)],
    "fsub($1[1], $1[1])": [Float(0.0), NAN, NAN, Float(0.0)],
    "fmul($1[1], float($0[0]))": [Float(7.5), NAN, NAN, Float(-0.0)],
    "fdiv(float(1), $1[1])": [Float(0.4), NAN, Float(-0.0), NINF],
    "fdiv($1[1], float($0[0]))": [Float(2.5 / 3), NAN, NINF, Float(-0.0)],
    "fneg($1[1])": [Float(-2.5), NEG_NAN, INF, Float(0.0)],
    "fint($1[1])": [2, "error", "error", 0],
    "fint(fneg(fmul($1[1], float($0[0]))))": [-7, "error", "error", 0],
    "idiv($0[0], 2)": [1, -3, 0, 1],
    "idiv(7, $0[0])": [2, -1, 0, 3],
    "len($1[0])": [5, 0, 3, 1],
    "bytes($1[0])": [List(b"h\xc3\xa9llo"), List(), List(b"a b"), List("\U0001F600".encode())],
    "utf8(bytes($1[0]))": ["héllo", "", "a b", "\U0001F600"],
    "append($1[0], $1[0])": ["héllohéllo", "", "a ba b", "\U0001F600" * 2],
    "append(list($0[0]), list($1[1]))": [List([3, Float(2.5)]), List([-7, NAN]),
                                         List([0, NINF]), List([2, Float(-0.0)])],
    "append($1[0], list(1))": ["error"] * 4,
    "$1[1] < float(0)": [0, 0, 1, 1],  # totalOrder: -0.0 < 0.0 < nan
    "$1[1] == $1[1]": [1, 1, 1, 1],  # nan equals itself as a value
    "$1[0] < \"b\"": [0, 1, 1, 0],  # by UTF-8 bytes
    "fadd($1[1], 0.5)": [Float(3.0), NAN, NINF, Float(0.5)],
    "append($1[0], \" !\")": ["héllo !", " !", "a b !", "\U0001F600 !"],
    "$1[1] == -0.0": [0, 0, 0, 1],
    "fint(-2.7)": [-2, -2, -2, -2],
    "$1[0] >= $1[1]": [1, 1, 1, 1],  # a String is greater than any Float
    "$1[1] + $1[1]": ["error"] * 4,  # `+` needs Ints
    "fadd($0[0], $1[1])": ["error"] * 4,  # fadd needs Floats
    "hash(3, $1[0])": ["error"] * 4,
    "not($1[1])": [1, 1, 1, 1],  # a Float is never true
}


def _outcome(fn):
    try:
        return fn()
    except TermError:
        return "error"


@pytest.mark.parametrize("src", list(TERMS))
def test_builtins_compiled_and_interpreted(src):
    term = parse_term(src)
    f = compile_term(term, 2)
    got = [_outcome(lambda: f(*row)) for row in ROWS]
    interpreted = [_outcome(lambda: evaluate(term, row)) for row in ROWS]
    assert [format_value(x) if x != "error" else x for x in got] == \
        [format_value(x) if x != "error" else x for x in TERMS[src]]
    assert got == interpreted == TERMS[src]


def test_builtin_edge_cases():
    ev = lambda src: evaluate(parse_term(src), ())  # noqa: E731
    assert ev("idiv(-7, -2)") == 3 and ev("idiv(7, -2)") == -3 and ev("idiv(5, 0)") == 0
    with pytest.raises(TermError, match="overflow"):
        ev("idiv(-9223372036854775807 - 1, -1)")
    with pytest.raises(TermError, match="does not fit in 64 bits"):
        ev("fint(fmul(float(9223372036854775807), float(2)))")
    assert ev("fint(fneg(float(9223372036854775807 - 1023)))") == -9223372036854774784
    assert ev("fdiv(fneg(float(1)), float(0))") == NINF
    with pytest.raises(TermError, match="item 0 of the List is not a byte"):
        ev("utf8(list(256))")
    with pytest.raises(TermError, match="invalid UTF-8"):
        ev("utf8(list(237, 160, 128))")  # an encoded surrogate: not UTF-8
    with pytest.raises(TermError, match="`len` needs a Tuple, List or String, got Float"):
        ev("len(float(1))")


# ---------------------------------------------------------------- sessions, every -w N

PROGRAM = """\
let xs = input 0;
export "ident" = xs;
export "fl" = xs | map($0 ; float(len($1[0])), fneg(float(len($1[0]))));
export "mn" = xs | key(tuple() ; $0) | min;
export "lens" = xs | map($1 ; len($1[0]), bytes($1[0]));
export "j" = xs | key($1 ; $0) | join(xs | key($1 ; $0), ($0 ; $1, $2));
export "cnt" = xs | key($1 ;) | count;
export "words" = xs | map(append($1[0], utf8(list(33))) ;) | collect;
"""

SESSION = """\
install p p.ddp
feed p 0 (1, "New York") val=("café")
feed p 0 1,"a b",2.5 val=("x y z")
feed p 0 2.5 val=("")
feed p 0 -inf val=("\\u00e9\\n")
feed p 0 nan val=("q")
feed p 0 (-0.0) val=("q")
feed p 0 0.0 val=("q")
feed p 0 "k" val=(2.5)
tick
peek ident
peek mn
peek fl
peek lens
peek j
peek cnt
peek words
peek ident (1, "New York")
feed p 0 (1, "New York") val=("café") diff=-1
tick
peek ident
"""


def _run(tmp_path, *args):
    (tmp_path / "p.ddp").write_text(PROGRAM)
    (tmp_path / "s.txt").write_text(SESSION)
    r = subprocess.run([sys.executable, "-m", "ddir", *args, "s.txt"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def test_session_output_is_identical_for_every_worker_count(tmp_path):
    one = _run(tmp_path, "-w", "1")
    assert _run(tmp_path, "-w", "3") == one
    assert one.splitlines()[:14] == [
        'installed "p"',
        "error: s.txt:10: p: map at p.ddp:3:20: `len` needs a Tuple, List or String, got Float "
        "2.5 (1 rows dropped)",
        "error: s.txt:10: p: map at p.ddp:5:22: `len` needs a Tuple, List or String, got Float "
        "2.5 (1 rows dropped)",
        "error: s.txt:10: p: map at p.ddp:8:23: `append` needs two Lists or two Strings, got "
        'Float 2.5 and String "!" (1 rows dropped)',
        "tick -> epoch 1",
        'peek "ident" (8 rows):',
        '  (1, "New York") ; ("café")  x1',
        '  (1, "a b", 2.5) ; ("x y z")  x1',
        "  (-inf) ; (\"é\\n\")  x1",
        '  (-0.0) ; ("q")  x1',
        '  (0.0) ; ("q")  x1',
        '  (2.5) ; ("")  x1',
        '  (nan) ; ("q")  x1',
        '  ("k") ; (2.5)  x1',
    ]
    assert '  ("q") ; (nan, -0.0)  x1' in one and '  ("q!") ; [(), (), ()]  x1' in one
    json_one = _run(tmp_path, "-w", "1", "--json")
    assert _run(tmp_path, "-w", "3", "--json") == json_one
    for line in json_one.splitlines():  # strict JSON: no NaN or Infinity
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))
    assert '[[{"float": "-inf"}], ["\\u00e9\\n"], 1]' in json_one


def test_peek_output_feeds_back_as_printed(tmp_path):
    """Every row `peek` prints, fed back as printed, is the same row."""
    out = _run(tmp_path, "-w", "1")
    rows = [line[2:].rsplit("  x", 1)[0] for line in out.splitlines() if line.startswith("  (")]
    assert len(rows) > 10
    for row in rows:
        key, val = row.split(" ; ")
        cmd = parse_command(f"feed p 0 {key} val={val}")
        assert format_value(cmd.key) == key and format_value(cmd.val) == val


# ---------------------------------------------------------------- the Python API

@pytest.mark.parametrize("workers", [1, 3])
def test_api_takes_floats_and_strings(workers):
    with ddir.Server(workers=workers) as s:
        s.install("p", source=PROGRAM)
        s.feed("p", 0, (1.5, "a"), ("x y",))
        s.feed("p", 0, (Float(-0.0),), (2.5,))
        s.feed_many("p", 0, [((float("nan"), "é"), ("",), 2), (("k",), (0.25,), 1)])
        assert s.tick().errors == (
            "p: map at <source>:3:20: `len` needs a Tuple, List or String, got Float 0.25 "
            "(2 rows dropped)",
            "p: map at <source>:5:22: `len` needs a Tuple, List or String, got Float 0.25 "
            "(2 rows dropped)",
            "p: map at <source>:8:23: `append` needs two Lists or two Strings, got Float 0.25 "
            'and String "!" (2 rows dropped)')
        rows = s.peek("ident")
        assert rows == [((Float(-0.0),), (Float(2.5),), 1), ((Float(1.5), "a"), ("x y",), 1),
                        ((NAN, "é"), ("",), 2), (("k",), (Float(0.25),), 1)]
        assert all(type(k[0]) in (Float, str) for k, _, _ in rows)
        assert s.peek("ident", (1.5, "a")) == [((Float(1.5), "a"), ("x y",), 1)]
        assert s.peek("cnt") == [((Float(0.25),), (1,), 1), ((Float(2.5),), (1,), 1),
                                 (("",), (2,), 1), (("x y",), (1,), 1)]
        with pytest.raises(ddir.CommandError, match="not valid Unicode"):
            s.feed("p", 0, ("\ud800",))
        with pytest.raises(ddir.CommandError, match="is not a value"):
            s.feed("p", 0, (b"bytes",))


# ---------------------------------------------------------------- the columnar engine

def test_columnar_engine_with_floats_and_strings_agrees_with_the_oracle():
    """Every batch that can be columnar is (threshold 1): batches holding a
    Float or a String take the row path whole, next to Int batches that go
    columnar in the same traces; the engine still agrees with the oracle."""
    from ddir.engine import batch as B
    from program_gen import FLT, STR, generate, random_stream
    from test_random_programs import check_program
    old = B.COLUMNAR_MIN, B.COLUMNAR_FIRST
    B.COLUMNAR_MIN = B.COLUMNAR_FIRST = 1
    checked = 0
    try:
        for seed in range(400):
            g = generate(seed, size=1 + seed % 3)
            if not any(t in (FLT, STR) for kt, vt in g.inputs.values() for t in kt[1] + vt[1]):
                continue
            check_program(g.source, random_stream(seed, g.inputs, g.ctors, epochs=4))
            checked += 1
            if checked == 40:
                break
    finally:
        B.COLUMNAR_MIN, B.COLUMNAR_FIRST = old
    assert checked == 40


def test_checkpoint_round_trip_keeps_floats_and_strings(tmp_path):
    """Traces and staged future updates holding Floats and Strings restore
    as they were (the checkpoint writes the printed form), on another -w N."""
    traces = ("ident", "j", "words", "fl")
    with ddir.Server(workers=3) as s:
        s.install("p", source=PROGRAM)
        s.feed("p", 0, (1.5, "a b"), ('x "y"',))
        s.feed("p", 0, (NAN,), ("é\n",))
        s.feed("p", 0, ("k",), (Float(-0.0),), time=2)
        s.tick()
        before = {t: s.peek(t) for t in traces}
        s.checkpoint(tmp_path / "ck")
    with ddir.Server.restore(tmp_path / "ck", workers=1) as r:
        assert {t: r.peek(t) for t in traces} == before
        r.tick(), r.tick()
        assert r.peek("ident") == [((Float(1.5), "a b"), ('x "y"',), 1), ((NAN,), ("é\n",), 1),
                                   (("k",), (Float(-0.0),), 1)]
