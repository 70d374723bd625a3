"""Bad input: one `error:` line each, and the server state is unchanged."""
import io
import subprocess
import sys

import pytest

from conftest import ROOT
from ddir.lang.value_token import MAX_VALUE_DEPTH
from ddir.server.session import Session

BAD_PROGRAMS = {
    "syntax.ddp": "let x = input 0 | key($0 ;;\n",
    "unresolved.ddp": 'export "u" = nowhere;\n',
    "cyclic.ddp": 'let a = b;\nlet b = a;\nexport "c" = a;\n',
    "var_root.ddp": "var v = input 0;\n",
    "dup_export.ddp": 'export "edges" = input 0;\n',
    "unknown_import.ddp": 'export "q" = import "no_such_trace";\n',
    "bad_ctor.ddp": 'export "q" = input 0 | map(Nope(1));\n',
    "enter_root.ddp": 'export "q" = input 0 | enter_at($0);\n',
    "bad_recipe.ddp": 'export "q" = import "random:nodes=x,edges=2";\n',
    "export_recipe.ddp": 'export "iota:3" = input 0;\n',
    "input_in_scope.ddp": 's: { let x = input 0; }\n',
    "bad_arity.ddp": 'export "q" = input 0 | map(hash(1));\n',
    "binder.ddir": 'export "q" = MAP(INPUT 0, (^0 ;));\n',
    "tab\tname.ddp": 'export "q" = input 0 | bogus;\n',
}

BAD_LINES = [
    "frobnicate", "install", "install onlyname", "install a b c", "install x missing.ddp",
    "install prod programs/producer.ddp", "install other programs/producer.ddp",
    "install clock programs/echo.ddp", "install iota:4 programs/echo.ddp",
    "feed", "feed prod", "feed prod 0", "feed nope 0 1", "feed prod 7 1,2", "feed prod x 1,2",
    "feed prod -1 1,2", "feed prod 0 1,2 time=0", "feed prod 0 1,2 time=x",
    "feed prod 0 1,2 diff=x", "feed prod 0 1,2 diff=0", "feed prod 0 1,2 bogus=1",
    "feed prod 0 1,2 val=(", "feed prod 0 inject(oops)", "feed prod 0 $0",
    "feed prod 0 (1,", "feed prod 0 1,2 val=[1", "feed prod 0 1,2 time=5 time=6",
    "feed iota:3 0 1", "feed prod 0 1,2 3", "feed prod 0 99999999999999999999",
    "tick now", "drop", "drop nope", "drop prod", "drop a b", "peek", "peek nope",
    "peek edges 1 2", "peek edges limit=x", "peek edges offset=-1", "peek edges limit=1 color=red",
    "list all", "help nope", "exit now", "peek edges (1,", 'install "q" programs/echo.ddp',
    "peek edges cursor=abc limit=0",
] + [f"install bad{i} {{tmp}}/{name}" for i, name in enumerate(BAD_PROGRAMS)]


def state_dump(session: Session) -> str:
    out = io.StringIO()
    probe = Session(out=out, server=session.server)
    probe.run_line("list")
    for trace in sorted(session.server.traces):
        probe.run_line(f"peek {trace}")
    return out.getvalue()


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name, text in BAD_PROGRAMS.items():
        (tmp_path / name).write_text(text)
    s = Session(out=io.StringIO())
    for line in ["install prod programs/producer.ddp", "install reach programs/reach_import.ddp",
                 "install iota programs/echo.ddp", "install gen programs/hash_graph.ddp",
                 "feed prod 0 1,2", "feed reach 0 1", "tick", "feed prod 0 2,3"]:
        s.run_line(line)
    assert not s.failed
    return s


def test_bad_input_table_is_large_enough():
    assert len(BAD_LINES) >= 40


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_line_gives_one_error_and_changes_nothing(session, tmp_path, line):
    line = line.replace("{tmp}", str(tmp_path))
    before = state_dump(session)
    session.out = io.StringIO()
    assert session.run_line(line, "script.txt", 7)
    output = session.out.getvalue().splitlines()
    assert len(output) == 1, output
    assert output[0].startswith("error: script.txt:7: "), output
    assert "Traceback" not in output[0]
    assert state_dump(session) == before
    # staged updates survive too: the next tick still delivers 2 -> 3
    session.out = io.StringIO()
    session.run_line("tick")
    assert "[reach] (3) ; ()  @1  +1" in session.out.getvalue()


def test_program_errors_name_file_line_and_column(session, tmp_path):
    session.out = io.StringIO()
    session.run_line(f"install bad {tmp_path}/syntax.ddp")
    assert f"{tmp_path}/syntax.ddp:1:27: expected" in session.out.getvalue()


# what `import "<trace>"` is refused with: every one at the string literal
IMPORT_ERRORS = {
    "nope": 'imports unknown trace "nope"',
    "random:nodes=0,edges=5": 'generated source "random:nodes=0,edges=5": nodes must be positive',
    "iota:-1": 'generated source "iota:-1": N must be a non-negative integer, got `-1`',
    "random:nodes=5": 'generated source "random:nodes=5": `edges=` is required',
    "random:nodes=5,edges=3,foo=1": 'generated source "random:nodes=5,edges=3,foo=1": expected '
                                    "nodes=N,edges=E[,arity=A][,seed=S][,churn=C], got `foo=1`",
    "random:nodes=5,nodes=5,edges=1": 'generated source "random:nodes=5,nodes=5,edges=1": '
                                      "`nodes` given twice",
}


@pytest.mark.parametrize("trace", sorted(IMPORT_ERRORS))
def test_import_errors_are_located_at_the_trace_name(session, tmp_path, trace):
    import ddir
    prog = tmp_path / "half.ddp"
    prog.write_text(f'let x = input 0;\nexport "h" = x | join(\n   import "{trace}", ($0 ; $1));\n')
    before = state_dump(session)
    session.out = io.StringIO()
    session.run_line(f"install h {prog}", "s.txt", 3)
    assert session.out.getvalue() == f"error: s.txt:3: {prog}:3:11: {IMPORT_ERRORS[trace]}\n"
    assert state_dump(session) == before
    source = f'export "h" = JOIN(INPUT 0, IMPORT "{trace}", ($0 ; $1));\n'
    kind = ddir.UnknownName if trace == "nope" else ddir.InvalidProgram
    with ddir.Server(1) as s, pytest.raises(kind) as caught:
        s.install("h", "half.ddir", source=source)
    assert str(caught.value) == f"half.ddir:1:35: {IMPORT_ERRORS[trace]}"


def test_runtime_term_error_drops_rows_and_reports_once(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    prog = tmp_path / "div.ddp"
    prog.write_text('export "q" = input 0 | map($0[0] ; $0[1][0]) | inspect(q);\n')
    out = io.StringIO()
    s = Session(out=out)
    for line in [f"install p {prog}", "feed p 0 1,2", "feed p 0 list(3,list(4))",
                 "feed p 0 list(5,6)", "tick"]:
        s.run_line(line)
    lines = out.getvalue().splitlines()
    errors = [x for x in lines if x.startswith("error:")]
    assert len(errors) == 1
    assert errors[0] == (f"error: p: map at {prog}:1:24: `[0]` needs a Tuple or List, got Int 2 "
                         f"(2 rows dropped)")
    assert "  [q] (3) ; (4)  @0  +1" in lines and lines[-1] == "tick -> epoch 1"


# ---------------------------------------------------------------- deep values (issue #9)

def _deep_values():
    L = MAX_VALUE_DEPTH
    too_deep = {
        "parens": "(" * 1000 + "1" + ")" * 1000, "lists": "[" * 1000 + "1" + "]" * 1000,
        "variants": "#0(" * 1000 + "1" + ")" * 1000, "tuple_terms": "tuple(" * 1000 + "1" + ")" * 1000,
        "colons": "#1:" * 1000 + "5", "grouping": "(" * 1000 + "1+1" + ")" * 1000,
        "one_over": "(" * (L + 1) + "1" + ")" * (L + 1),
        "fold": "fold(list(" + ",".join(["1"] * 300) + "),tuple(),tuple(^1))",
    }
    # the printed form at the limit; terms one level less (the term parser counts the leaf too)
    at_limit = ["(" * L + "1" + ")" * L, "[" * L + "1" + "]" * L, "#0(" * (L // 2) + "1" + ")" * (L // 2),
                "#1:" * L + "5", "list(tuple(" * (L // 2 - 1) + "list(1)" + "))" * (L // 2 - 1),
                "inject(0," * (L - 1) + "1" + ")" * (L - 1)]
    return too_deep, at_limit


def test_deep_values_get_one_clear_error_and_values_at_the_limit_work(tmp_path):
    too_deep, at_limit = _deep_values()
    (tmp_path / "p.ddp").write_text('export "out" = input 0 | inspect(in);\n'
                                    'export "m" = input 0 | join(input 0, (list($0) ; list($1, $2))) | min;\n'
                                    'export "c" = input 0 | collect | count;\n')
    lines = ["install p p.ddp"]
    lines += [f"feed p 0 {v}" for v in too_deep.values()]
    lines += [f"feed p 0 {v} val={v}" for v in at_limit]
    lines += ["feed p 0 " + "+".join(["1"] * 10000), "tick", "peek out", "peek m", "peek c",
              f"peek out {at_limit[0]}"]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    runs = {}
    for args in (["s.txt"], ["-w", "3", "s.txt"], ["--json", "s.txt"], ["-w", "3", "--json", "s.txt"]):
        r = subprocess.run([sys.executable, "-m", "ddir", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
        runs[" ".join(args)] = r.stdout
    assert runs["s.txt"] == runs["-w 3 s.txt"] and runs["--json s.txt"] == runs["-w 3 --json s.txt"]
    out = runs["s.txt"].splitlines()
    errors = [x for x in out if x.startswith("error:")]
    limit = f"nested more than {MAX_VALUE_DEPTH} levels deep (the limit for a value on the command line)"
    assert len([e for e in errors if e.endswith(limit)]) == len(too_deep)
    # a 10,000-step chain is read, or refused with one error
    chain = [e for e in errors if e.startswith("error: s.txt:16:")]
    assert len(errors) == len(too_deep) + len(chain) and len(chain) <= 1
    assert all(e.startswith("error: s.txt:16: bad value `1+1+1+") for e in chain)
    assert all(len(e) < 200 for e in errors)  # the value is shortened, not echoed in full
    assert f'peek "out" ({len(at_limit) + 1 - len(chain)} rows):' in out
    assert f"  {at_limit[3]} ; {at_limit[3]}  x1" in out  # prints back as it was written
    assert [x for x in out if x.startswith('peek "out" key=')][0].endswith("(1 rows):")
