"""Python functions in terms (SPEC C5): `@f(args...)` through `--functions`
and `ddir.Server(functions=...)`, in every operator kind, with errors as term
errors (never a dead worker), the same for 1 and 3 workers."""
import subprocess
import sys

import pytest

import ddir
import fn_module
from ddir.lang.parser import parse_program, parse_term
from ddir.server.functions import calls_of, load_functions
from ddir.terms.compile import compile_term
from ddir.terms.interp import evaluate
from ddir.terms.runtime import TermError
from ddir.values import Float
from conftest import ROOT

TESTS = ROOT / "tests"
FN_PATH = str(TESTS / "fn_module.py")
PROGRAM = str(TESTS / "programs" / "functions.ddp")
PUBLIC = ["exits", "interrupts", "is_even", "nested_bad", "pair", "raises", "returns_big", "returns_float",
          "returns_list", "returns_none", "returns_str", "returns_variant", "score", "slow_loop"]

EXPECTED = {
    "mapped": [((11,), ((1, 11),), 1), ((21,), ((2, 21),), 1), ((31,), ((3, 31),), 1),
               ((41,), ((4, 41),), 1)],
    "kept": [((2,), (), 1), ((4,), (), 1)],
    "joined": [((((11,), ()),), (1,), 1), ((((21,), ()),), (2,), 1)],
    "counted": [((0,), (2,), 1), ((1,), (2,), 1)],
    "flat": [((0, 0), (), 4), ((1, 1), (), 3), ((2, 2), (), 2), ((3, 3), (), 1)],
    "cased": [((1,), (11,), 1), ((2,), (0,), 1), ((3,), (31,), 1), ((4,), (0,), 1)],
    "reduced": [((11,), (1,), 1), ((21,), (2,), 1), ((31,), (3,), 1), ((41,), (4,), 1)],
}


def run_cli(*args, cwd=TESTS, stdin=None):
    return subprocess.run([sys.executable, "-m", "ddir", *args], cwd=cwd, capture_output=True,
                          text=True, input=stdin, timeout=60)


def test_the_module_s_public_callables_are_the_functions():
    f = load_functions(fn_module)
    assert list(f.table) == PUBLIC  # not _private, not CONSTANT, not the imported sys
    assert list(load_functions(FN_PATH).table) == PUBLIC
    with pytest.raises(ddir.DdirError, match='cannot import functions from "no_such_mod"'):
        load_functions("no_such_mod")


@pytest.mark.parametrize("workers", [1, 3])
def test_functions_in_every_operator(workers):
    with ddir.Server(workers=workers, functions=fn_module) as s:
        s.install("f", PROGRAM)
        for x in (1, 2, 3, 4):
            s.feed("f", 0, (x,))
        s.feed("f", 1, (1, 100))
        s.feed("f", 1, (2, 200))
        assert s.tick().errors == ()
        assert {t: s.peek(t) for t in EXPECTED} == EXPECTED
        # retractions go through the same functions
        s.feed("f", 0, (3,), diff=-1)
        s.tick()
        assert s.peek("kept") == EXPECTED["kept"]
        assert (31,) not in [k for k, _, _ in s.peek("mapped")]
        assert s.core.programs["f"].functions == (
            "is_even", "pair", "returns_list", "returns_variant", "score")


ERRORS = """\
let xs = input 0;
export "r" = xs | map(@raises($0[0]) ;);
export "fl" = xs | map(@returns_float($0[0]) ;);
export "st" = xs | map(@returns_str($0[0]) ;);
export "no" = xs | filter(@returns_none($0[0]));
export "big" = xs | flatmap(@returns_big($0[0]));
export "nb" = xs | map(; @nested_bad($0[0]));
export "ex" = xs | map(@exits($0) ;);
export "ok" = xs | map(@slow_loop($0[0]) ;);
export "ki" = xs | map(@interrupts($0[0]) ;);
"""

ERROR_LINES = [
    "e: filter at <source>:5:20: `@returns_none` returned None, not a value (an int, a float, "
    "a str, a tuple, a ddir.List or a ddir.Variant) (4 rows dropped)",
    "e: flatmap at <source>:6:21: `@returns_big` returned an integer that does not fit in 64 "
    "bits: 1180591620717411303424 (4 rows dropped)",
    "e: map at <source>:2:19: `@raises` raised ValueError: three is bad (1 rows dropped)",
    "e: map at <source>:7:20: `@nested_bad` returned a Python list inside its result, not a value "
    "(an int, a float, a str, a tuple, a ddir.List or a ddir.Variant) (4 rows dropped)",
    "e: map at <source>:8:20: `@exits` raised SystemExit: 1 (4 rows dropped)",
    "e: map at <source>:10:20: `@interrupts` raised KeyboardInterrupt (4 rows dropped)",
]


def _error_run(workers):
    with ddir.Server(workers=workers, functions=FN_PATH) as s:
        s.install("e", source=ERRORS)
        for x in (1, 2, 3, 4):
            s.feed("e", 0, (x,))
        first = s.tick()
        s.feed("e", 0, (3,), diff=-1)  # the retraction fails alike: counted, not crashed
        second = s.tick()
        s.feed("e", 0, (5,))
        third = s.tick()  # every worker still alive and computing
        return [first.errors, second.errors, third.errors,
                s.peek("r"), s.peek("ok"), [p["name"] for p in s.list()["programs"]],
                s.peek("fl"), s.peek("st")]


def test_bad_results_are_term_errors_the_same_for_1_and_3_workers():
    one = _error_run(1)
    assert sorted(one[0]) == sorted(ERROR_LINES)
    assert len(one[1]) == 6 and all(e.endswith("(1 rows dropped)") for e in one[1])
    assert len(one[2]) == 5 and not any("@raises" in e for e in one[2])
    # a Python float is a Float, a str a String (SPEC D1)
    assert one[6] == [((Float(x / 2),), (), 1) for x in (1, 2, 4, 5)]
    assert one[7] == [((str(x),), (), 1) for x in (1, 2, 4, 5)]
    assert one[3] == [((1,), (), 1), ((2,), (), 1), ((4,), (), 1), ((5,), (), 1)]
    assert one[4] == sorted(((fn_module.slow_loop(x),), (), 1) for x in (1, 2, 4, 5))
    assert _error_run(3) == one


def test_compiled_and_interpreted_calls_agree():
    functions = load_functions(fn_module).table
    for text in ["@score($0[0]) + 1", "@pair($0, @score(2))", "case @returns_variant($0[0]) "
                 "{ _ => 0 }", "fold(@returns_list(3), 0, ^0 + ^1)", "@raises($0[0])",
                 "@returns_float(1)", "@nope(1)", "@is_even($0[0])"]:
        term = parse_term(text)
        for row in [(1,), (3,), (4,)]:
            def outcome(f):
                try:
                    return f()
                except TermError as e:
                    return str(e)
            compiled = compile_term(term, 2, functions)
            assert outcome(lambda: compiled(row, ())) == \
                outcome(lambda: evaluate(term, (row, ()), (), functions)), text


def test_deep_terms_call_functions_through_the_interpreter():
    # nested past MAX_COMPILED_DEPTH: the engine runs the interpreter
    deep = "@score($0[0])"
    for _ in range(45):
        deep = f"tuple({deep})"
    with ddir.Server(functions=fn_module) as s:
        s.install("d", source=f'export "o" = input 0 | map({deep} ;) | map($0 ;);\n')
        s.feed("d", 0, (2,))
        s.tick()
        (key, _, _), = s.peek("o")
        levels = 0
        while type(key) is tuple:
            key, = key
            levels += 1
        assert (key, levels) == (21, 46)


@pytest.mark.parametrize("workers", [1, 3])
def test_enter_at_and_an_interpreted_join(workers):
    deep = "@pair($1, $2)"
    for _ in range(42):
        deep = f"tuple({deep})"
    source = ("let xs = input 0 | key($0[0] ; $0[0]);\n"
              "s: {\n"
              "    let start = xs | enter_at(@is_even($0[0]) + 1);\n"
              "    var r = start + (r | filter($1 < 3) | map($0 ; @score($1) - 10 * $1 - 1 + $1 + 1)) "
              "| distinct;\n"
              "}\n"
              'export "r" = s::r;\n'
              f'export "j" = xs | join(xs, ({deep} ;));\n')
    with ddir.Server(workers=workers, functions=fn_module) as s:
        s.install("p", source=source)
        s.feed_many("p", 0, keys=[(1,), (2,)])
        assert s.tick().errors == ()
        assert s.peek("r") == [((1,), (), 1), ((2,), (), 1)]
        (key, _, _), _ = s.peek("j")
        while len(key) == 1:
            key, = key
        assert key == ((1,), (1,))  # @pair($1, $2) under 42 tuple()s


def test_unknown_function_is_a_located_install_error():
    source = 'let xs = input 0;\nexport "o" = xs | map(@scroe($0) ;);\n'
    with ddir.Server(functions=fn_module) as s:
        with pytest.raises(ddir.InvalidProgram) as e:
            s.install("p", source=source)
        assert str(e.value) == ("<source>:2:23: unknown function `@scroe`: the functions given "
                                "(fn_module) are " + ", ".join("@" + n for n in PUBLIC))
        assert s.list()["programs"] == []  # nothing installed
    with ddir.Server() as s:
        with pytest.raises(ddir.InvalidProgram, match=r"<source>:2:23: unknown function `@scroe`: "
                           r"no functions were given \(start ddir with --functions MODULE\)"):
            s.install("p", source=source)
        # programs without functions are unaffected
        s.install("q", source='export "o" = input 0 | map($0 ;);\n')
        assert calls_of(parse_program(source, "x.ddp")) == {"scroe": (2, 23)}


def test_the_command_line(tmp_path):
    script = tmp_path / "s.txt"
    script.write_text(f"install f {PROGRAM}\nfeed f 0 1\nfeed f 0 2\nfeed f 1 1,100\n"
                      "feed f 0 @score(1)\ntick\npeek mapped\npeek joined\nlist\n")
    one = run_cli("--functions", "fn_module", str(script))           # a module name, from here
    three = run_cli("-w", "3", "--functions", FN_PATH, str(script), cwd=tmp_path)  # a path
    assert one.returncode == 0 and one.stderr == ""
    assert one.stdout == three.stdout
    assert "error: " + str(script) + ":5: bad value `@score(1)`: a value cannot call a Python " \
        "function (`@f(...)`) (at column 1)" in one.stdout
    assert '  (((11), ())) ; (1)  x1' in one.stdout
    missing = run_cli(str(script))
    assert f"{PROGRAM}:6:28: unknown function `@score`: no functions were given" in missing.stdout
    bad = run_cli("--functions", "no_such_mod", str(script))
    assert bad.returncode == 2 and 'cannot import functions from "no_such_mod"' in bad.stderr


def test_check_and_help(tmp_path):
    prog = tmp_path / "p.ddp"
    prog.write_text('let xs = input 0;\nexport "o" = xs | map(@nope($0) ;);\n')
    assert run_cli("check", str(prog)).stdout == f"{prog}: ok\n"  # no functions: not checked
    r = run_cli("check", "--functions", FN_PATH, str(prog), PROGRAM)
    assert r.returncode == 1
    assert r.stdout.startswith(f"{prog}:2:23: unknown function `@nope`: the functions given "
                               "(fn_module) are @exits, ")
    assert "   2 | export \"o\" = xs | map(@nope($0) ;);\n" in r.stdout
    assert r.stdout.endswith(f"{PROGRAM}: ok\n")
    assert "--functions MODULE" in run_cli("--help").stdout
    assert "@f(...)" in run_cli(stdin="help install\n").stdout


def test_ddir_syntax_and_explain(tmp_path):
    prog = tmp_path / "p.ddir"
    prog.write_text('export "o" = MAP(FILTER(INPUT 0, @is_even($0[0])), (@score($0[0]) ;));\n')
    with ddir.Server(functions=fn_module) as s:
        s.install("p", str(prog))
        s.feed_many("p", 0, keys=[(1,), (2,)])
        s.tick()
        assert s.peek("o") == [((21,), (), 1)]
    assert "map(@score($0[0]) ;)" in run_cli("explain", str(prog)).stdout


ORACLE_PROGRAM = """
let xs = input 0;
let ys = input 1;
export "scored" = xs | map($0 ; @score($0[0])) | filter(@is_even($1) == 0);
export "joined" = xs | key($0[0] ; @raises($0[1])) | join(ys | key($0[0] ; $0[1]), (@pair($1, $2) ;));
export "counts" = xs | map(@score($0[0]) - 10 * $0[0] ;) | count;
"""


@pytest.mark.parametrize("workers", [1, 3])
def test_functions_match_the_naive_oracle(workers):
    """The oracle calls the same functions (raising ones drop rows there too):
    random insert/retract streams give the same traces for 1 and 3 workers."""
    from ddir.ir.lower import lower
    from ddir.lang.parser import parse_program
    from oracle_cases import ServerDriver, check_against_oracle
    program = lower(parse_program(ORACLE_PROGRAM, "f.ddp"))
    table = load_functions(fn_module).table
    with ddir.Server(workers, functions=fn_module) as s:
        for seed in range(8):
            driver = ServerDriver(s, program, name=f"p{seed}")
            check_against_oracle(program, {0: 2, 1: 2}, seed, driver=driver, functions=table)
            driver.close()
