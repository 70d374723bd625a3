"""Golden outputs of our sessions, and the upstream sessions' documented results."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, UPSTREAM
from ddir.server.generated import random_rows

SESSIONS = sorted(p.stem for p in (ROOT / "sessions").glob("*.txt"))


def ddir(*args, cwd=ROOT, stdin=None):
    return subprocess.run([sys.executable, "-m", "ddir", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SESSIONS)
def test_session_text_golden(name):
    r = ddir(f"sessions/{name}.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "tests/golden" / f"{name}.out").read_text()


@pytest.mark.parametrize("name", SESSIONS)
def test_session_json_golden(name):
    r = ddir("--json", f"sessions/{name}.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "tests/golden" / f"{name}.jsonl").read_text()
    for line in r.stdout.splitlines():
        assert "kind" in json.loads(line)


def upstream_session(name, *flags):
    r = ddir(*flags, f"examples/server/sessions/{name}.txt", cwd=UPSTREAM)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def test_upstream_shared_trace_matches_spec_exactly():
    expected = (ROOT / "tests/golden/upstream_shared_trace.out").read_text()
    assert upstream_session("shared_trace") == expected


def inspect_ticks(lines):
    """Set of nodes after each tick, from inspect events."""
    current, states = set(), []
    for line in lines:
        if line.startswith("  ["):
            node = line.split("]", 1)[1].split(";")[0].strip()
            (current.add if line.rstrip().endswith("+1") else current.discard)(node)
        elif line.startswith("tick -> "):
            states.append(sorted(current))
    return states


def test_upstream_shared_trace_reach_states():
    states = inspect_ticks(upstream_session("shared_trace").splitlines())
    assert states == [["(1)", "(2)", "(3)"], ["(1)", "(2)", "(3)", "(4)"], ["(1)", "(2)"]]


def test_upstream_drop_refuses_once_then_frees_the_name():
    out = upstream_session("drop")
    assert out.count("error:") == 1 and 'cannot drop "prod"' in out
    assert out.count('dropped "reach"') == 1 and out.count('dropped "prod"') == 1
    assert out.count('installed "prod"') == 2


def test_upstream_values_list_only_when_epoch_3_closes():
    lines = upstream_session("values").splitlines()
    ticks = [i for i, line in enumerate(lines) if line.startswith("tick -> ")]
    list_line = next(i for i, line in enumerate(lines) if "[7, 8, 9]" in line)
    assert lines[list_line + 1] == "tick -> epoch 4" and list_line > ticks[2]
    assert "#2(1, 2)" in lines[1]
    assert sum(1 for line in lines if line.startswith("error:")) == 1


def test_upstream_peek_unknown_trace_is_one_error():
    out = upstream_session("peek")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ['error: examples/server/sessions/peek.txt:17: unknown trace "nope"']
    assert 'peek "result" key=(2) (1 rows):\n  (2) ; ()  x1' in out


@pytest.mark.parametrize("name", ["clock", "derived", "drop", "generated", "peek",
                                  "shared_trace", "values"])
def test_every_upstream_session_runs(name):
    upstream_session(name)
    upstream_session(name, "--json")


def test_generated_sources_match_spec_formulas():
    out = upstream_session("derived")
    iota = out.split('peek "iota:12" (12 rows):\n')[1].splitlines()[:12]
    assert iota == [f"  ({i}) ; ()  x1" for i in range(12)]
    # random:nodes=8,edges=12 from the SPEC A8 formula, written out here
    mask = 2 ** 64 - 1

    def sm(x):
        x = (x * 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)
    rows = {}
    for e in range(12):
        key = (sm(e * 31) % 8, sm(e * 31 + 1) % 8)
        rows[key] = rows.get(key, 0) + 1
    assert sorted(rows.items()) == sorted(
        {k: sum(1 for r in random_rows(8, 12, 2, 0) if r[0] == k) for k in rows}.items())
    gen = upstream_session("generated")
    block = gen.split('peek "random:nodes=8,edges=12,arity=2,seed=0"')[1].split("peek")[0]
    for (a, b), n in rows.items():
        assert f"  ({a}, {b}) ; ()  x{n}" in block


def test_piped_stdin_runs_like_a_script():
    script = (ROOT / "sessions/shared_trace.txt").read_text()
    r = ddir(stdin=script)
    assert r.returncode == 0
    assert r.stdout == (ROOT / "tests/golden/shared_trace.out").read_text()


def test_exit_codes():
    assert ddir("no_such_script.txt").returncode == 2
    assert ddir("-w", "0").returncode == 2
    assert ddir("--strict", stdin="bogus\nlist\n").returncode == 1
    r = ddir(stdin="bogus\nlist\n")
    assert r.returncode == 0 and "epoch: 0" in r.stdout
    assert ddir("--version").stdout.startswith("ddir ")


def test_max_rounds_bounds_a_loop_that_never_converges(tmp_path):
    (tmp_path / "flip.ddp").write_text('let r = input 0;\nflip: { var x = r - x; }\nexport "x" = flip::x;\n')
    script = "install f flip.ddp\nfeed f 0 1\ntick\nlist\n"
    for flags in (["--max-rounds", "40"], ["--max-rounds=40", "-w", "2"]):
        r = subprocess.run([sys.executable, "-m", "ddir", *flags], cwd=tmp_path, input=script,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "error: <stdin>:3: f: scope `flip` did not converge within 40 rounds" in r.stdout
        assert "tick -> epoch 1" in r.stdout and "epoch: 1" in r.stdout
    for bad in (["--max-rounds", "0"], ["--max-rounds=x"], ["--max-rounds"]):
        r = ddir(*bad)
        assert r.returncode == 2 and r.stderr.startswith("error: --max-rounds needs a number")
