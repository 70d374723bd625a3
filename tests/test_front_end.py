"""Parsing, precedence, located errors, lowering and the msgpack codec."""
import subprocess
import sys

import pytest
from hypothesis import given, settings

from conftest import upstream_programs
from test_values import values
from ddir.ir import nodes as N
from ddir.ir.optimize.place_exchanges import place_exchanges, rows_on_owner
from ddir.ir.codec import packb, unpackb
from ddir.ir.lower import lower
from ddir.lang import ast as A
from ddir.lang.errors import ProgramError
from ddir.lang.parser import parse_program, parse_program_file, parse_term
from ddir.terms import ast as T


def expr_of(src):
    return parse_program(f"let x = {src};", "t.ddp").body[0].expr


def test_every_operator_parses():
    e = expr_of("input 0 | key($0[0] ; $0[1]) | map($1 ; $0) | filter($0[0] > 1) | negate"
                " | arrange | flatmap(list($0)) | collect | min | distinct | count"
                " | lift_iter | inspect(lbl)")
    kinds = []
    while isinstance(e, A.Op):
        kinds.append(e.kind)
        e = e.source
    assert kinds[::-1] == ["map", "map", "filter", "negate", "arrange", "flatmap", "collect",
                           "min", "distinct", "count", "lift_iter", "inspect"]
    j = expr_of('import "t" | join(input 1 | key($0), ($1, $2 ;))')
    assert j.kind == "join" and isinstance(j.other, A.Op) and j.proj.key == (A.Splice(1), A.Splice(2))


def test_pipes_bind_loosest():
    e = expr_of("a + b | min")
    assert e.kind == "min" and isinstance(e.source, A.Concat)
    e = expr_of("a - b")
    assert isinstance(e, A.Concat) and e.parts[1].kind == "negate"


def test_term_precedence():
    assert parse_term("-$0 * $1") == T.Arith(T.Neg(T.Row(0)), (("*", T.Row(1)),))
    assert parse_term("$0 < $1 && $1 < 3") == T.And((T.Cmp("<", T.Row(0), T.Row(1)),
                                                    T.Cmp("<", T.Row(1), T.Lit(3))))
    assert parse_term("1 + 2 * 3") == T.Arith(T.Lit(1), (("+", T.Arith(T.Lit(2), (("*", T.Lit(3)),))),))
    # chains are flat (left-associative), however long: SPEC B, size is not bad input
    assert parse_term("1 - 2 - 3") == T.Arith(T.Lit(1), (("-", T.Lit(2)), ("-", T.Lit(3))))
    assert parse_term("1 - (2 - 3)") == T.Arith(T.Lit(1), (("-", T.Arith(T.Lit(2), (("-", T.Lit(3)),))),))
    assert parse_term("$1[0][2]") == T.Index(T.Index(T.Row(1), 0), 2)


def test_projection_forms():
    assert expr_of("a | key(;)").proj == A.Proj((), ())
    assert expr_of("a | key($0[0], $0[1])").proj.val == ()
    assert expr_of("a | key(; $0)").proj == A.Proj((), (A.Splice(0),))


def test_ddir_syntax_matches_ddp(upstream):
    ddp = lower(parse_program_file(str(upstream / "examples/programs/reach.ddp")))
    ddir = lower(parse_program_file(str(upstream / "examples/programs/reach.ddir")))
    strip = lambda p: [(type(n), n.inputs) for n in p.nodes]  # noqa: E731
    assert strip(ddp) == strip(ddir)


ERRORS = [
    ("let x = input 0 | key($0 ;;", 1, 27, "expected"),
    ("let x = input 0 | key($0) ) ;", 1, 27, "expected `;` after the let binding `x`"),
    ("let x = input 0 | filter($0 < $1 < 2);", 1, 34, "comparisons do not chain"),
    ("let x = input 0\nlet y = input 1;", 2, 1, "expected `;` after the let binding `x`"),
    ("let x = input 0 | map(foo(1));", 1, 23, "unknown function or constructor `foo`"),
    ("let x = input 0 | map(len(1, 2));", 1, 23, "`len` takes 1 argument(s), got 2"),
    ("con A(2) = 0;\nlet x = input 0 | map(case $0 { A(a) => a });", 2, 33, "binds 1"),
    ("let x = input 0 | map(case $0 { B(a) => a });", 1, 33, "unknown constructor `B`"),
    ("con A(1) = 0; let x = input 0 | map(A(1, 2));", 1, 37, "takes 1 argument(s), got 2"),
    ("let x = input 0 | map(y);", 1, 23, "unknown name `y`"),
    ("let x = # 1;", 1, 9, "unexpected character `#`"),
    ("let x = y;", 1, 9, "unknown name `y`"),
    ("let x = input 0;\nlet x = input 1;", 2, 5, "defined twice"),
    ("let a = b;\nlet b = a;", 2, 9, "cyclic definition"),
    ("var v = input 0;", 1, 5, "only allowed inside a scope"),
    ("s: { let y = input 0; }", 1, 14, "`input` is only allowed at the root"),
    ('s: { export "e" = input 0; }', 1, 13, "`export` is only allowed at the root"),
    ('export "e" = input 0;\nexport "e" = input 1;', 2, 8, "defined twice"),
    ("let x = input 0 | enter_at($0[0]);", 1, 19, "`enter_at` needs an enclosing"),
    ("let x = s::y;", 1, 9, "unknown scope `s`"),
    ("s: { let y = input 0 | map(;); }", 1, 14, "only allowed at the root"),
    ("let i = input 0;\ns: { let y = i; }\nlet z = s::w;", 3, 9, "has no let or var named `w`"),
    ("let i = input 0;\na: { b: { let y = i; } }\nlet z = b::y;", 3, 9, "directly contains"),
    ("let i = input 0;\ns: { let l = i | lift_iter; let m = l; }", 2, 37, "lift_iter"),
    ("let x = input 0 | map(^0);", 1, 23, "no enclosing"),
    ("let x = input 0 | map(proj($0, $1));", 1, 23, "integer literal"),
    # a trace name is one word of a command line (peek, save, subscribe)
    ('export "a b" = input 0;', 1, 8, 'export "a b" cannot be named in a command: it holds a blank'),
    ('let x = input 0;\nexport "" = x;', 2, 8, 'export "" cannot be named in a command: it is empty'),
    ('export "a\tb" = input 0;', 1, 8, r'export "a\tb" cannot be named in a command'),
    ('export "x=1" = input 0;', 1, 8, 'a command would read it as the option `x=`'),
]


@pytest.mark.parametrize("src,line,col,words", ERRORS)
def test_located_errors(src, line, col, words):
    with pytest.raises(ProgramError) as info:
        lower(parse_program(src, "bad.ddp"))
    e = info.value
    assert (e.file, e.line, e.col) == ("bad.ddp", line, col), str(e)
    assert words in e.message
    rendered = e.render()
    assert rendered.startswith(f"bad.ddp:{line}:{col}: ")
    assert rendered.splitlines()[-1].index("^") == rendered.splitlines()[-1].index("|") + 2 + col - 1
    assert "Traceback" not in rendered and "Token(" not in rendered


def test_con_in_a_ddir_program_says_it_is_ddp_only():
    with pytest.raises(ProgramError) as info:
        parse_program('export "e" = INPUT 0;\n  con A(1) = 0;\n', "bad.ddir")
    e = info.value
    assert (e.line, e.col, e.message) == (2, 7, "constructor declarations (`con`) exist only in "
                                                "`.ddp` programs")
    parse_program('con: { let x = INPUT 0; }\nexport "e" = con::x;\n', "ok.ddir")  # a scope


def test_lowering_reach_like_program():
    src = """
    let edges = import "edges";
    let roots = import "roots" + (input 0 | key($0[0] ;));
    reach: {
        let step = reach | join(edges, ($2 ;));
        var reach = roots + step | distinct;
    }
    export "out" = reach::reach;
    """
    p = lower(parse_program(src, "r.ddp"))
    assert len(p.scopes) == 2 and p.scopes[1].parent == 0 and p.scopes[1].depth == 1
    assert p.inputs == (0,) and p.imports == ("edges", "roots")
    (var, body), = p.scopes[1].vars
    assert isinstance(p.nodes[var], N.VarNode) and isinstance(p.nodes[body], N.ReduceNode)
    enters = [n for n in p.nodes if isinstance(n, N.EnterNode)]
    assert len(enters) == 2 and all(n.scope == 1 for n in enters)
    leave, = [n for n in p.nodes if isinstance(n, N.LeaveNode)]
    assert leave.scope == 0 and leave.inputs == (var,)
    # items are in dependency order: every node after what it reads
    position = {}
    for s in p.scopes:
        for i, item in enumerate(s.order):
            position[item] = i
    for n in p.nodes:
        for src_id in n.inputs:
            if p.nodes[src_id].scope == n.scope:
                assert position[("node", src_id)] < position[("node", n.id)]


def test_lowering_three_levels_with_field_refs():
    src = """
    let e = input 0 | key($0[0] ; $0[1]);
    outer: {
        var o = e + mid::m | distinct;
        mid: {
            var m = e + inner::i | distinct;
            inner: { var i = e | min; }
        }
    }
    export "x" = outer::o;
    """
    p = lower(parse_program(src, "n.ddp"))
    assert [s.depth for s in p.scopes] == [0, 1, 2, 3]
    assert [s.parent for s in p.scopes] == [-1, 0, 1, 2]
    leaves = [n for n in p.nodes if isinstance(n, N.LeaveNode)]
    assert sorted(p.nodes[n.inputs[0]].scope - n.scope for n in leaves) == [1, 1, 1]
    # `e` enters three levels deep through a chain of enters, one per level
    enters = [n for n in p.nodes if isinstance(n, N.EnterNode)]
    assert sorted(n.scope for n in enters) == [1, 2, 3]


def test_fusion_and_shared_arrangements():
    src = """
    let a = input 0 | key($0[0] ; $0[1]) | filter($1[0] > 0) | map($0 ; $1);
    export "j" = a | join(a, ($1, $2 ;));
    export "c" = a | count;
    """
    p = lower(parse_program(src, "f.ddp"))
    linear = [n for n in p.nodes if isinstance(n, N.LinearNode)]
    assert len(linear) == 1 and len(linear[0].steps) == 3
    (exchange,) = [n for n in p.nodes if isinstance(n, N.ExchangeNode) and n.inputs == (linear[0].id,)]
    # (the map's new keys move to their owners once, for both readers)
    arranges = [n for n in p.nodes if isinstance(n, N.ArrangeNode) and n.inputs == (exchange.id,)]
    assert len(arranges) == 1  # both join sides and count share one arrangement


def test_exchanges_only_where_rows_leave_their_owner_and_outside_loops():
    src = """
    let edges = input 0 | key($0[0] ; $0[1]);
    let roots = input 1;
    r: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct; }
    export "reach" = r::reach | filter($0[0] > 0);
    export "raw" = input 2;
    """
    p = lower(parse_program(src, "r.ddp"))
    kinds = {n.id: type(n).__name__ for n in p.nodes}
    exchanges = [n for n in p.nodes if isinstance(n, N.ExchangeNode)]
    # the re-keyed edges (exchanged once per epoch at the root, before they
    # enter the loop) and the join output feeding distinct; nothing else:
    # inputs arrive on their owner, `reach` comes out of a reduce, a filter keeps keys
    assert sorted((n.scope, kinds[n.inputs[0]]) for n in exchanges) == \
        [(0, "LinearNode"), (1, "ConcatNode")]
    on_owner = rows_on_owner(p)
    for n in p.nodes:
        if isinstance(n, N.ArrangeNode):
            assert on_owner[n.inputs[0]], n
    assert rows_on_owner(p) == on_owner and place_exchanges(p) == p  # a fixed point


@settings(max_examples=200)
@given(values)
def test_codec_round_trips_values(v):
    assert unpackb(packb(v)) == v
    assert type(unpackb(packb(v))) is type(v)


def test_codec_round_trips_conformance_programs(upstream):
    for path in upstream_programs():
        p = lower(parse_program_file(str(path)))
        data = packb(p)
        assert unpackb(data) == p
        assert packb(lower(parse_program_file(str(path)))) == data  # deterministic bytes


def test_check_accepts_every_conformance_program(upstream):
    files = [str(p) for p in upstream_programs()]
    assert len(files) >= 12
    r = subprocess.run([sys.executable, "-m", "ddir", "check", *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": ok") == len(files)


def test_check_reports_errors_with_caret(tmp_path):
    bad = tmp_path / "bad.ddp"
    bad.write_text("let x = input 0 |;\n")
    r = subprocess.run([sys.executable, "-m", "ddir", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}:1:18:" in r.stdout and "^" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["iota:5", "iota:+5", "clock", "random:nodes=2,edges=3",
                                  "random:colour=2"])
def test_check_refuses_an_export_spelled_like_a_generated_source(tmp_path, name):
    """Every install refuses such an export, whatever the server holds, so
    `check` does, at the string; and install says it there too."""
    path = tmp_path / "p.ddp"
    path.write_text(f'let x = input 0;\nexport "{name}" = x;\n')
    message = f'{path}:2:8: export "{name}" would shadow a generated source'
    r = subprocess.run([sys.executable, "-m", "ddir", "check", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stdout.startswith(message), r.stdout
    r = subprocess.run([sys.executable, "-m", "ddir"], input=f"install p {path}\nlist\n",
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith(f"error: <stdin>:1: {message}") and "programs (0)" in r.stdout


@pytest.mark.parametrize("syntax", ["ddp", "ddir"])
def test_check_validates_generated_source_recipes_at_the_string(tmp_path, syntax):
    """`check` has no server, so it cannot know whether a trace exists; a
    generated source's recipe it can check: its syntax and ranges."""
    recipes = {"random:nodes=0,edges=5": "nodes must be positive",
               "iota:-1": "N must be a non-negative integer, got `-1`",
               "random:nodes=5": "`edges=` is required",
               "random:nodes=5,edges=1,colour=2": "expected nodes=N,edges=E[,arity=A][,seed=S]"
                                                  "[,churn=C], got `colour=2`",
               "random:edges=1,nodes=5,edges=1": "`edges` given twice",
               "iota:10000001": "at most 10000000 rows"}
    good = ["iota:3", "clock", "random:nodes=5,edges=3", "some_trace"]
    for i, recipe in enumerate([*recipes, *good]):
        path = tmp_path / f"p{i}.{syntax}"
        if syntax == "ddp":
            path.write_text(f'let x = input 0;\nexport "o" = x | join(import "{recipe}", ($0 ;));\n')
        else:
            path.write_text(f'export "o" = JOIN(INPUT 0, IMPORT "{recipe}", ($0 ;));\n')
        col = path.read_text().splitlines()[-1].index(f'"{recipe}"') + 1  # the string literal
        r = subprocess.run([sys.executable, "-m", "ddir", "check", str(path)], capture_output=True,
                           text=True, timeout=60)
        if recipe in good:
            assert r.returncode == 0 and r.stdout == f"{path}: ok\n", r.stdout
            continue
        line = 2 if syntax == "ddp" else 1
        assert r.returncode == 1 and r.stderr == ""
        head, text, caret = r.stdout.splitlines()
        assert head == f'{path}:{line}:{col}: generated source "{recipe}": {recipes[recipe]}'
        assert caret.index("^") - caret.index("|") - 2 == col - 1


def test_explain_prints_scope_tree(upstream):
    r = subprocess.run([sys.executable, "-m", "ddir", "explain",
                        str(upstream / "examples/programs/reach.ddp")], capture_output=True, text=True)
    assert r.returncode == 0
    assert "scope reach (depth 1):" in r.stdout and "var #" in r.stdout and "join(" in r.stdout


def test_plain_feed_lines_read_fast_the_same_as_the_general_path():
    """`feed P N a,b` takes a one-regex path; with an option appended it takes
    the general one: both must build the same command."""
    import random
    from ddir.server.commands import parse_command
    rng = random.Random(7)
    for _ in range(500):
        key = ",".join(str(rng.choice([0, -1, 1, rng.randrange(-10 ** 18 + 1, 10 ** 18)]))
                       for _ in range(rng.randint(1, 4)))
        line = f"{' ' * rng.randint(0, 2)}feed p{rng.randint(0, 9)} {rng.randint(0, 99)} {key}"
        assert parse_command(line) == parse_command(line + " diff=1"), line
