"""Messages in words (issue #9): values, program syntax errors, `ddir explain`,
and output to a closed pipe."""
import io
import subprocess
import sys

import pytest

from conftest import ROOT
from ddir.ir.explain import term_text
from ddir.lang.errors import ProgramError
from ddir.lang.parser import parse_program, parse_term
from ddir.lang.value_token import ValueTokenError, parse_value_token
from ddir.server.session import Session
from ddir.terms import ast as T


def value_error(text: str) -> str:
    with pytest.raises(ValueTokenError) as e:
        parse_value_token(text)
    return str(e.value)


@pytest.mark.parametrize("text, message", [
    ("1,,2", "bad value `1,,2`: the row has an empty field; write integers separated by single "
             "commas, like `1,2` (at column 3)"),
    ("1,2,", "the row ends with `,`"),
    ("1-2,3", "`1-2` is not an integer"),
    ("1,tuple(2)", "only Ints, Floats and Strings can be written as a bare row `1,2.5,\"x\"`; "
                   "write other rows as `tuple(1,x)` or `(1,(2))` (at column 2)"),
    # the printed form got further than the term reading: its error, at the `)`
    ("[1,2)", "bad value `[1,2)`: expected `,` or `]`, found `)` (at column 5)"),
    ("(1,2]", "expected `,` or `)`, found `]` (at column 5)"),
    ("(1,2", "expected `,` or `)`, found end of value (at column 5)"),
    ("#x", "expected an integer, found `x` (at column 2)"),
    ("(tupel(1))", "unknown function or constructor `tupel` (did you mean `tuple`?) (at column 2)"),
    ("1+", "expected `(`, `-`, a name, a number or a string, found end of value (at column 3)"),
    # said of a value: no program, so no binder and no comment hint
    ("x", "bad value `x`: `x` is not a value (a name means something only in a program) "
          "(at column 1)"),
    ("istag(1,#1:5)", "bad value `istag(1,#1:5)`: unexpected character `#` (at column 9)"),
])
def test_value_messages_say_what_is_wrong_where(text, message):
    assert message in value_error(text)


@pytest.mark.parametrize("text", ["1+", "tuple(1,)", "-", ")", "3*", "case"])
def test_value_messages_do_not_offer_what_a_value_cannot_use(text):
    message = value_error(text).split(": ", 1)[1]  # not the echoed value
    assert "expected" in message
    for offer in ("`$n`", "`^k`", "`case`"):
        assert offer not in message


def program_error(source: str, file: str = "p.ddp") -> str:
    with pytest.raises(ProgramError) as e:
        parse_program(source, file)
    return str(e.value)


@pytest.mark.parametrize("source, message", [
    ('export "o" = input 0 | joinn(input 1, ($0 ; $1));',
     "p.ddp:1:24: unknown operator `joinn` after `|` (did you mean `join`?)"),
    ('export "o" = input 0 | distinctt;', "1:24: unknown operator `distinctt` after `|` (did you mean `distinct`?)"),
    ('let x = input 0 | count | mim; export "o" = x;', "1:27: unknown operator `mim` after `|` (did you mean `min`?)"),
    ('export "o" = input 0 | frob;', "unknown operator `frob` after `|` (the operators are `key`, `map`,"),
    ('export "o" = input 0 | "str";',
     '1:24: unexpected `"str"` in the export `o` (a string literal is a trace name'),
    ('export "o" = input 0 | filter($0 = 1);', "1:34: `=` is not a comparison: write `==`"),
    ('export "o" = inputt 0;', "found `0` (did you mean `input`?)"),
    ('exprot "o" = input 0;', "(did you mean `export`?)"),
    ('export "o" = input 0 | map(tupel($0) ;);', "unknown function or constructor `tupel` (did you mean `tuple`?)"),
    ('export "o" = input 0 | filter($0 , 1);', "1:34: expected `)` in the export `o`, found `,`"),
    ('let x = input 0 |;', "1:18: unexpected `;` in the let binding `x`"),
    # still said where a `;` really ends the statement
    ('let x = input 0 | key($0) let y = x;', "expected `;` after the let binding `x` (or `|` to continue it)"),
])
def test_program_messages_name_the_mistake(source, message):
    error = program_error(source)
    assert message in error
    assert "something else" not in error and "expected `;` after the export" not in error


def test_ddir_messages_suggest_the_keyword():
    assert "(did you mean `MAP`?)" in program_error("let x = MAPP(INPUT 0, ($0;));", "p.ddir")


@pytest.mark.parametrize("source", [
    "$0[0] == 1", "1 - (2 - 3)", "(1 - 2) - 3", "-(-$0)", "-($0 + 1)", "(-5)[0]", "$0 * -5",
    "$0 - -5", "$0 && $1 && $2", "$0 && ($1 && $2)", "($0 < $1) == 1", "-$0[1][2]",
    "fold($0, 0, ^0 + ^1)", "if($0, tuple(), list(1, -2))", "($0 + 1) * 2", "$0 + 1 * 2",
    "-9223372036854775808", "not($0 == $1 && $2 != 3)", "istag(2, $0)", "hash(10, $0[0], 1)",
    "(1 + 2) * 3 - 4 * (5 - 6)", "1 * 2 + 3", "1 - (2 + 3) * 4",
])
def test_terms_print_as_ddp_with_minimal_parentheses(source):
    printed = term_text(parse_term(source))
    assert printed == source.replace("(1 - 2) - 3", "1 - 2 - 3")
    assert parse_term(printed) == parse_term(source)


def test_term_printer_takes_long_chains_and_folded_constants():
    for op in (" && ", " + ", " * "):
        chain = op.join(["$0[1]"] * 5000)
        assert term_text(parse_term(chain)) == chain
    from ddir.values import List, Variant
    assert term_text(T.Lit((1, List((2, -3)), Variant(4, ())))) == "tuple(1, list(2, -3), inject(4, tuple()))"


def test_explain_prints_terms_as_a_user_writes_them(tmp_path):
    prog = tmp_path / "f.ddp"
    prog.write_text('con Pair(2) = 3;\n'
                    'export "o" = input 0 | filter($0[0] == 1) | map(Pair($0[0], -$1) ; $1, $0)'
                    ' | join(input 1, (;)) | flatmap(list($1[0] * (2 + 3)));\n')
    r = subprocess.run([sys.executable, "-m", "ddir", "explain", str(prog)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "filter($0[0] == 1)" in r.stdout
    assert "map(inject(3, tuple($0[0], -$1)) ; $1, $0)" in r.stdout
    assert "join(#" in r.stdout and ") (;)" in r.stdout
    assert "flatmap(list($1[0] * 5))" in r.stdout or "flatmap(list($1[0] * (2 + 3)))" in r.stdout
    for python in ("Index(", "Row(", "Cmp(", "Lit(", "arg="):
        assert python not in r.stdout


def test_peek_hint_keeps_the_key(tmp_path):
    prog = tmp_path / "k.ddp"
    prog.write_text('export "kk" = import "iota:80" | map(tuple(1, 2) ; $0);\n')
    out = io.StringIO()
    s = Session(out=out)
    s.interactive = True  # the hint is the prompt's: its implicit page of 50 rows
    for line in [f"install k {prog}", "tick", "peek kk ((1,2))", "peek kk ((1,2)) limit=3"]:
        s.run_line(line)
    lines = out.getvalue().splitlines()
    assert "  ... 30 more rows (peek kk ((1,2)) offset=50)" in lines
    # an explicit limit= ends with its rows and the cursor line alone (SPEC C4)
    assert lines[-2] == "  ((1, 2)) ; (2)  x1" and lines[-1].startswith("  more: peek kk cursor=")


@pytest.mark.parametrize("args", [
    ["explain", "{big}"], ["check", "{big}", "{big}"], ["{script}"], ["--json", "{script}"],
    ["-w", "3", "{script}"],
])
def test_output_to_a_closed_pipe_ends_quietly(tmp_path, args):
    big = tmp_path / "big.ddp"
    big.write_text("".join(f'export "e{i}" = input 0 | filter($0[0] == {i});\n' for i in range(300)))
    script = tmp_path / "s.txt"
    script.write_text(f'install g {tmp_path / "g.ddp"}\ntick\npeek big\n')
    (tmp_path / "g.ddp").write_text('export "big" = import "iota:3000";\n')
    argv = [a.format(big=big, script=script) for a in args]
    p = subprocess.Popen([sys.executable, "-m", "ddir", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0
    assert err == ""
