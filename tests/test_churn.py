"""Random sources that churn (SPEC D3): `random:...,churn=C` replaces C rows
at every tick as the reference does, the same for every -w N and across a
checkpoint; the call form `install <name> <file> edges=random(...)`; its
errors."""
import io
import os
from collections import Counter

import pytest

import ddir
from ddir.server import commands as C
from ddir.server.generated import RecipeError, binding_source, parse_recipe
from ddir.server.session import Session

# ---------------------------------------------------------------- the reference, written out
# Independently of ddir.server.generated: SPEC A8's row formula and the
# reference's tick (interactive/src/server.rs, `Server::tick`): a cursor
# starting at 0 at install; each tick retracts rows cursor..cursor+C-1, adds
# rows cursor+E..cursor+E+C-1 and moves the cursor on by C.

M64 = (1 << 64) - 1


def _mix(x):
    x = (x * 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def ref_row(seed, e, nodes, arity):
    base = (e * 31 + seed * 0x9E3779B97F4A7C15) & M64
    return tuple(_mix((base + c) & M64) % nodes for c in range(arity))


def ref_contents(nodes, edges, arity, seed, churn, ticks):
    """The source's rows after ``ticks`` ticks since its install, as peek shows them."""
    acc = Counter(ref_row(seed, e, nodes, arity) for e in range(edges))
    cursor = 0
    for _ in range(ticks):
        for e in range(cursor, cursor + churn):
            acc[ref_row(seed, e, nodes, arity)] -= 1
        for e in range(cursor + edges, cursor + edges + churn):
            acc[ref_row(seed, e, nodes, arity)] += 1
        cursor += churn
    return sorted((k, (), d) for k, d in acc.items() if d)


# random:nodes=1000,edges=5,arity=3,seed=7: rows 0..8 of its stream
PINNED = [(673, 670, 232), (949, 413, 158), (312, 597, 457), (586, 63, 593), (580, 375, 392),
          (808, 438, 451), (775, 368, 40), (831, 60, 534), (505, 951, 115)]
RECIPE = "random:nodes=1000,edges=5,arity=3,seed=7,churn=2"


def rows(keys):
    return sorted((k, (), 1) for k in keys)


def test_reference_model_matches_the_pinned_rows():
    assert [ref_row(7, e, 1000, 3) for e in range(9)] == PINNED
    assert ref_contents(1000, 5, 3, 7, 2, 0) == rows(PINNED[0:5])
    assert ref_contents(1000, 5, 3, 7, 2, 1) == rows(PINNED[2:7])
    assert ref_contents(1000, 5, 3, 7, 2, 2) == rows(PINNED[4:9])


def test_the_sequence_at_epochs_0_1_2():
    """Installed at epoch 0, the source shows rows e*C .. e*C+E-1 at epoch e
    (nothing at 0: its rows are at time 0, closed by the first tick, which
    also makes the first replacement, as the reference's does)."""
    with ddir.Server(1) as s:
        s.command(f"install p {_importer(RECIPE)}")
        assert s.peek("g") == []
        s.tick()
        assert s.peek("g") == rows(PINNED[2:7])
        s.tick()
        assert s.peek("g") == rows(PINNED[4:9])
        assert s.peek(RECIPE) == rows(PINNED[4:9])


def test_a_source_installed_later_starts_its_window_then():
    """Like the reference, the window moves with the ticks since the
    source's own install: installed at epoch 2 it shows rows 0..E-1 at once."""
    with ddir.Server(1) as s:
        s.tick()
        s.tick()
        s.command(f"install p {_importer(RECIPE)}")
        assert s.peek("g") == rows(PINNED[0:5])
        s.tick()
        assert s.peek("g") == rows(PINNED[2:7])


@pytest.mark.parametrize("recipe", [(6, 10, 2, 3, 3), (5, 4, 2, 1, 6), (4, 7, 1, 0, 7),
                                    (9, 12, 2, 2, 0)])
def test_every_epoch_matches_the_reference(recipe):
    """Small node ranges (duplicate rows, multiplicities above 1), churn
    above the row count (the whole window replaced), churn equal to it."""
    nodes, edges, arity, seed, churn = recipe
    name = f"random:nodes={nodes},edges={edges},arity={arity},seed={seed},churn={churn}"
    with ddir.Server(1) as s:
        s.command(f"install p {_importer(name)}")
        for epoch in range(1, 7):
            s.tick()
            assert s.peek("g") == ref_contents(*recipe, epoch), epoch


def test_window_changes_unit():
    r = parse_recipe(RECIPE)
    assert r.name == "random:nodes=1000,edges=5,arity=3,seed=7,churn=2"
    assert parse_recipe("random:churn=0,edges=5,nodes=3").name == "random:nodes=3,edges=5,arity=2,seed=0"
    net = Counter()
    for k, _, d in r.changes(0, 1):
        net[k] += d
    assert net == Counter({PINNED[0]: -1, PINNED[1]: -1, PINNED[5]: 1, PINNED[6]: 1})
    # a step of three ticks at once is the three steps' sum (a restore's replay)
    one = Counter()
    for step in range(3):
        for shard in range(3):  # each worker its own row numbers: together every row once
            for k, _, d in r.changes(step, step + 1, shard, 3):
                one[k] += d
    three = Counter()
    for k, _, d in r.changes(0, 3):
        three[k] += d
    assert +one == +three and -one == -three


# ---------------------------------------------------------------- sessions

def _write(name, text, directory=None):
    path = os.path.join(directory or _TMP, name)
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


_TMP = None


def _importer(trace):
    """A program file: `export "g" = import "<trace>";`."""
    return _write("p.ddp", 'export "g" = import "' + trace + '";')


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    global _TMP
    _TMP = str(tmp_path)
    yield


def run_lines(server, lines):
    out = io.StringIO()
    Session(out=out, client=server).run_script("s.txt", lines)
    return out.getvalue()


def session_lines():
    deg = _write("deg.ddp", 'export "deg" = import "edges" | key($0[0] ;) | count;')
    both = _write("both.ddp", 'let a = import "a";\nlet b = import "b";\n'
                              'export "pairs" = a | key($0[1] ; $0[0]) | join(b, ($0 ; $1, $2));')
    return [
        f"install deg {deg} edges=random(seed=3, arity=2, range=6, count=20, churn=4)",
        "tick",
        "peek deg",
        "tick",
        f"install both {both} a=random(range=5,count=9,churn=2) b=random:nodes=5,edges=4,churn=9",
        "peek pairs",
        "tick",
        "peek deg",
        "peek pairs",
        "tick",
        "tick",
        "peek pairs",
        "list",
        "peek random:nodes=6,edges=20,seed=3,churn=4",
    ]


def test_same_output_for_one_and_three_workers():
    lines = session_lines()
    with ddir.Server(1) as s:
        one = run_lines(s, lines)
    with ddir.Server(3) as s:
        three = run_lines(s, lines)
    assert "error" not in one
    assert one == three


@pytest.mark.parametrize("k,workers", [(2, 3), (5, 1), (10, 3)])
def test_restore_continues_the_churn(k, workers, tmp_path):
    """Checkpoint after line k, restore (with another worker count), run the
    rest: the uninterrupted run's output."""
    lines = session_lines()
    with ddir.Server(1) as s:
        whole = run_lines(s, lines)
    snap = str(tmp_path / "snap")
    with ddir.Server(1) as s:
        first = run_lines(s, lines[:k])
        s.checkpoint(snap)
    with ddir.Server.restore(snap, workers=workers) as s:
        second = run_lines(s, [""] * k + lines[k:])
    assert first + second == whole


# ---------------------------------------------------------------- the call form

def test_the_call_form_names_the_recipe_source():
    assert binding_source("random(seed=1,arity=2,range=8,count=12,churn=1)") == \
        "random:nodes=8,edges=12,arity=2,seed=1,churn=1"
    assert binding_source(" random( count=12 , range=8 ) ") == "random:nodes=8,edges=12,arity=2,seed=0"
    assert binding_source("some.trace") == "some.trace"
    g = _write("g.ddp", 'export "graph" = import "edges";')
    h = _write("h.ddp", 'export "other" = import "random:seed=1,nodes=8,edges=12,churn=1";')
    with ddir.Server(1) as s:
        s.command(f"install g {g} edges=random(seed=1, arity=2, range=8, count=12, churn=1)")
        s.command(f"install h {h}")
        name = "random:nodes=8,edges=12,arity=2,seed=1,churn=1"
        listed = s.command("list")[-1]
        assert {"name": name, "importers": 2} in listed["traces"]
        s.tick()
        assert s.peek("graph") == s.peek("other") == ref_contents(8, 12, 2, 1, 1, 1)
    # a binding to another trace
    p = _write("p.ddp", 'export "base" = input 0;')
    with ddir.Server(1) as s:
        s.command(f"install p {p}")
        s.command(f"install g {g} edges=base")
        s.command("feed p 0 (1,2)")
        s.tick()
        assert s.peek("graph") == [((1, 2), (), 1)]


def test_a_bound_import_keeps_its_ascription():
    g = _write("g.ddp", 'export "graph" = import "edges" : ((int, int, int) ; ());')
    with ddir.Server(1) as s:
        with pytest.raises(ddir.DdirError, match='import "random:nodes=3,edges=2,arity=2,seed=0" '
                                                 r"is ascribed \(\(int, int, int\) ; \(\)\)"):
            s.command(f"install g {g} edges=random(range=3,count=2)")
        s.command(f"install g {g} edges=random(range=3,count=2,arity=3)")


BAD = {
    "edges=random(range=0,count=4)": "`edges=random(range=0,count=4)`: range must be positive",
    "edges=random(count=4)": "`edges=random(count=4)`: `range=` is required",
    "edges=random(range=4)": "`edges=random(range=4)`: `count=` is required",
    "edges=random(range=4,count=x)":
        "`edges=random(range=4,count=x)`: count must be a non-negative integer, got `x`",
    "edges=random(range=4,count=2,churn=-1)":
        "`edges=random(range=4,count=2,churn=-1)`: churn must be a non-negative integer, got `-1`",
    "edges=random(range=4,count=2,colour=1)":
        "`edges=random(range=4,count=2,colour=1)`: unknown parameter `colour` "
        "(random takes seed, arity, range, count, churn)",
    "edges=random(range=4,count=2,seed=1,seed=2)":
        "`edges=random(range=4,count=2,seed=1,seed=2)`: `seed` given twice",
    "edges=random(range=4,count=2,arity=65)":
        "`edges=random(range=4,count=2,arity=65)`: arity is at most 64",
    "edges=random(range=4,count=10000001)":
        "`edges=random(range=4,count=10000001)`: count is at most 10000000",
    "edges=random(range=4,churn=99999999999999999999,count=1)":
        "`edges=random(range=4,churn=99999999999999999999,count=1)`: churn does not fit in a "
        "signed 64-bit integer",
    "edges=random(range 4)": "`edges=random(range 4)`: expected `parameter=value`, got `range 4`",
    "edges=iota(4)": "`edges=iota(4)`: unknown source `iota(...)`; a binding names a trace or "
                     "calls random(seed=..,arity=..,range=..,count=..,churn=..)",
    "nope=random(range=4,count=2)":
        'binding `nope=`: the program has no `import "nope"` (it imports "edges")',
    "edges=": "`edges=` names no trace",
}


@pytest.mark.parametrize("binding", sorted(BAD))
def test_a_bad_binding_is_one_error_naming_the_parameter(binding):
    g = _write("g.ddp", 'export "graph" = import "edges";')
    out = io.StringIO()
    with ddir.Server(1) as s:
        Session(out=out, client=s).run_script("s.txt", [f"install g {g} {binding}", "list"])
        assert "g" not in s.core.programs
    first = out.getvalue().splitlines()[0]
    assert first == f"error: s.txt:1: install: {BAD[binding]}"


@pytest.mark.parametrize("line,message", [
    ("install g", "usage: install <name> <file>"),
    ("install g g.ddp edges", "usage: install <name> <file>"),
    ("install g g.ddp edges=random(range=1,count=1) edges=random(range=2,count=1)",
     "install: `edges=` given twice"),
])
def test_install_usage(line, message):
    with pytest.raises(C.CommandError, match=message.replace("(", r"\(")):
        C.parse_command(line)


def test_a_bad_churn_in_a_recipe_names_it():
    with pytest.raises(RecipeError, match="churn must be a non-negative integer, got `x`"):
        parse_recipe("random:nodes=3,edges=2,churn=x")
    with pytest.raises(RecipeError, match=r"\[,churn=C\], got `chrn=1`"):
        parse_recipe("random:nodes=3,edges=2,chrn=1")
