"""Read-only programs and ``reinstall`` (SPEC C5), and the checkpoint
journal's folding (ddir/server/journal.py).

A program calling ``@score`` is checkpointed and restored where the
function is missing: it comes back read-only with its reason, its trace
keeps its contents and can be peeked, imported, subscribed and saved,
feeding it is refused; ``reinstall`` (with the functions given then) makes
it live, and from then on every output equals a run that never lost it."""
import json
import os
import random

import numpy as np
import pytest

import ddir
from conftest import ROOT
from ddir.server import journal as J
from ddir.server.staged import IntColumns

FUNCTIONS = str(ROOT / "tests" / "fn_module.py")
SCORED = 'export "scored" = input 0 | map($0 ; @score($0[0]));\n'
PLAIN = 'export "scored" = input 0 | map($0 ; 10 * $0[0] + 1);\n'
DOUBLED = 'export "scored" = input 0 | map($0 ; 20 * $0[0]);\n'
CONSUMER = 'export "vals" = import "scored" | map($1 ; $0);\n'


def history(s):
    """The part of the run before the checkpoint."""
    s.install("p", source=SCORED)
    s.feed("p", 0, (1,))
    s.feed("p", 0, (2,))
    s.tick()
    s.install("c", source=CONSUMER)
    s.feed("p", 0, (3,))
    s.feed("p", 0, (9,), time=5)  # staged for the future: replayed by the reinstall
    s.tick()


def future(s):
    """The part after it: what each step shows."""
    seen = []
    for step in range(5):
        if step == 1:
            s.feed("p", 0, (4,))
        if step == 2:
            s.feed("p", 0, (1,), diff=-1)
        s.tick()
        seen.append((s.epoch, s.peek("scored"), s.peek("vals")))
    return seen


@pytest.mark.parametrize("workers", [1, 3])
def test_restored_without_function_is_read_only_then_reinstalled(workers, tmp_path):
    os.chdir(ROOT)
    snap = str(tmp_path / "snap")
    with ddir.Server(1, functions=FUNCTIONS) as s:
        history(s)
        before = (s.peek("scored"), s.peek("vals"))
        s.checkpoint(snap)
        s.tick()  # the restored server ticks once while read-only
        expected = future(s)
    with ddir.Server.restore(snap, workers=workers) as s:
        (entry,) = [p for p in s.list()["programs"] if p["name"] == "p"]
        assert entry["readonly"].startswith("it calls @score, which is not available")
        assert (s.peek("scored"), s.peek("vals")) == before
        with pytest.raises(ddir.DdirError, match='"p" is read-only and cannot be fed .*@score'):
            s.feed("p", 0, (7,))
        # a new consumer of the read-only trace works, and so do save and subscribe
        s.install("c2", source='export "keys" = import "scored" | map($0 ;);\n')
        assert s.peek("keys") == [((1,), (), 1), ((2,), (), 1), ((3,), (), 1)]
        assert s.peek_arrow("scored").num_rows == 3
        sub = s.subscribe("scored")
        s.tick()
        assert s.peek("scored") == before[0]  # frozen
        # without the function it still cannot run: refused, nothing changes
        # ... and says which option of this command fixes it (issue 26, item 9: it
        # said `start ddir with --functions MODULE`)
        with pytest.raises(ddir.DdirError, match=r'reinstall "p": it calls @score, which this '
                           r"server does not have: .*reinstall p functions=MODULE"):
            s.reinstall("p")
        assert s.list()["programs"][[p["name"] for p in s.list()["programs"]].index("p")][
            "readonly"]
        s.drop("c2")
        result = s.reinstall("p", functions=FUNCTIONS)
        assert "readonly" not in [p for p in s.list()["programs"] if p["name"] == "p"][0]
        assert result.epoch == s.epoch
        # the same outputs as a run that never lost the function
        assert future(s) == expected
        sub.close()


def test_reinstall_from_a_new_file_changes_the_trace_at_the_next_tick(tmp_path):
    os.chdir(ROOT)
    snap = str(tmp_path / "snap")
    with ddir.Server(1, functions=FUNCTIONS) as s:
        history(s)
        s.checkpoint(snap)
    out = tmp_path / "doubled.ddp"
    out.write_text(DOUBLED)
    with ddir.Server.restore(snap, workers=2) as s:
        with pytest.raises(ddir.DdirError, match="must export the same traces"):
            s.reinstall("p", source='export "other" = input 0;\n')
        with pytest.raises(ddir.DdirError, match="only a read-only program can be reinstalled"):
            s.reinstall("c", source=CONSUMER)
        s.reinstall("p", str(out))
        # the closed past still shows the stored contents; the next tick switches
        assert s.peek("vals") == [((11,), (1,), 1), ((21,), (2,), 1), ((31,), (3,), 1)]
        s.tick()
        assert s.peek("scored") == [((1,), (20,), 1), ((2,), (40,), 1), ((3,), (60,), 1)]
        assert s.peek("vals") == [((20,), (1,), 1), ((40,), (2,), 1), ((60,), (3,), 1)]
        s.feed("p", 0, (5,))
        s.tick()
        assert ((100,), (5,), 1) in s.peek("vals")


def test_reinstall_same_program_changes_nothing_for_importers(tmp_path):
    """Reinstalled from a file computing the same values: no change reaches
    the consumer (its subscription sees nothing) and feeding works again."""
    os.chdir(ROOT)
    snap = str(tmp_path / "snap")
    with ddir.Server(1, functions=FUNCTIONS) as s:
        history(s)
        s.checkpoint(snap)
    with ddir.Server.restore(snap, workers=1) as s:
        ticks = []
        s.reinstall("p", source=PLAIN)
        ticks.append(s.tick())
        assert not ticks[0].events and not ticks[0].errors
        s.feed("p", 0, (6,))
        s.tick()
        assert ((61,), (6,), 1) in s.peek("vals")


def test_cli_list_tags_read_only_and_checkpoint_keeps_it(tmp_path):
    os.chdir(ROOT)
    snap, again = tmp_path / "snap", tmp_path / "again"
    with ddir.Server(1, functions=FUNCTIONS) as s:
        history(s)
        s.checkpoint(str(snap))
    script = tmp_path / "s.txt"
    script.write_text(f"list\nfeed p 0 8\ncheckpoint {again}\n")
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ddir", "--restore", str(snap), str(script)],
                       capture_output=True, text=True, timeout=120)
    assert ("  p [read-only: it calls @score, which is not available: no functions were "
            "given (--functions MODULE, or `reinstall p functions=MODULE`)] (inputs: [0], "
            "imports: [], exports: [\"scored\"])" in r.stdout), r.stdout
    assert f'error: {script}:2: "p" is read-only and cannot be fed (it calls @score' in r.stdout
    manifest = json.loads((again / "manifest.json").read_text())
    (p,) = [p for p in manifest["programs"] if p["name"] == "p"]
    assert p["readonly"] and p["input_files"] and p["export_files"]["scored"]["rows"] == 3
    # restored again, now with the function: live at once
    with ddir.Server.restore(str(again), workers=1, functions=FUNCTIONS) as s:
        assert all("readonly" not in p for p in s.list()["programs"])
        s.feed("p", 0, (8,))
        s.tick()
        assert ((8,), (81,), 1) in s.peek("scored")


def test_unreadable_ir_is_read_only_and_needs_a_file(tmp_path):
    os.chdir(ROOT)
    snap = tmp_path / "snap"
    with ddir.Server(1) as s:
        s.install("p", source=PLAIN)
        s.feed("p", 0, (1,))
        s.tick()
        s.checkpoint(str(snap))
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["programs"][0]["ir_version"] = 99
    # as another version would write it: with its own checksum (or none)
    del manifest["checksum"]
    (snap / "manifest.json").write_text(json.dumps(manifest))
    with ddir.Server.restore(str(snap)) as s:
        (p,) = s.list()["programs"]
        assert p["readonly"] == "its program is stored in IR format 99; this ddir reads format 1"
        assert s.peek("scored") == [((1,), (11,), 1)]
        with pytest.raises(ddir.DdirError, match="give its source: reinstall p <file>"):
            s.reinstall("p")
        s.checkpoint(str(tmp_path / "again"))  # the stored IR is kept as it came
        s.reinstall("p", source=PLAIN)
        s.feed("p", 0, (2,))
        s.tick()
        assert s.peek("scored") == [((1,), (11,), 1), ((2,), (21,), 1)]
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["programs"][0]["ir_version"] == 99


# ---------------------------------------------------------------- the journal


def test_journal_folding_keeps_memory_bounded(monkeypatch):
    """A +1/-1 stream: the journal holds O(floor) rows however long it runs."""
    monkeypatch.setattr(J, "FOLD_FLOOR", 100)
    j = J.Journal()
    for epoch in range(2000):
        j.add(0, epoch, [((epoch % 7,), (), 1)])
        j.add(0, epoch, [(((epoch - 1) % 7,), (), -1)])
        j.maybe_fold(epoch)
        assert j.folded_rows + j.recent_rows <= 210
    j.fold(1999)
    (rows,) = [b for _, _, b in j.entries()]
    assert sorted(rows) == [((1999 % 7,), (), 1), ((-1 % 7,), (), -1)]


def test_column_folding_equals_row_folding():
    rng = np.random.default_rng(1)
    for _ in range(20):
        batches = []
        for _ in range(rng.integers(1, 4)):
            n = int(rng.integers(0, 60))
            batches.append(IntColumns([rng.integers(-3, 3, n)], [rng.integers(0, 2, n)],
                                      rng.integers(-2, 3, n), n))
        merged = J.consolidate(batches)
        assert isinstance(merged, IntColumns)
        expected: dict = {}
        for b in batches:
            for k, v, d in J.rows_of(b):
                expected[(k, v)] = expected.get((k, v), 0) + d
        assert {(k, v): d for k, v, d in J.rows_of(merged)} == {
            kv: d for kv, d in expected.items() if d}


def test_folding_near_int64_takes_the_exact_path():
    big = 2 ** 62
    batch = IntColumns([np.array([1, 1])], [], np.array([big, big]), 2)
    assert J.consolidate([batch]) == [((1,), (), 2 * big)]


@pytest.mark.parametrize("seed", range(3))
def test_split_with_folded_journal_equals_whole_run(seed, tmp_path, monkeypatch):
    """Checkpoints of a journal folded at every tick replay to the same
    server: every later output equals the uninterrupted run."""
    from test_checkpoint import in_process_split, random_stream, run_lines
    monkeypatch.setattr(J, "FOLD_FLOOR", 0)
    rng = random.Random(100 + seed)
    lines = random_stream(rng)
    os.chdir(ROOT)
    with ddir.Server(1) as s:
        whole = run_lines(s, "s.txt", lines)
    for i in range(2):
        k = rng.randrange(1, len(lines))
        assert in_process_split(lines, k, str(tmp_path / f"snap{i}"), 1 + 2 * i) == whole, k


def test_folded_replay_is_not_stopped_by_the_iteration_bound(tmp_path, monkeypatch):
    """A chain grown one edge per epoch converges in a few rounds each tick;
    replayed from a folded journal it needs the whole chain's length in one
    tick, past --max-rounds: the replay runs unbounded, then the bound is back."""
    monkeypatch.setattr(J, "FOLD_FLOOR", 0)
    os.chdir(ROOT)
    snap = str(tmp_path / "snap")
    with ddir.Server(1, max_rounds=4) as s:
        s.install("prod", "programs/producer.ddp")
        s.install("reach", "programs/reach_import.ddp")
        s.feed("reach", 0, (0,))
        for i in range(12):
            s.feed("prod", 0, (i, i + 1))
            s.tick()
        reached = s.peek("reachable")
        s.checkpoint(snap)
    with ddir.Server.restore(snap, workers=2) as s:
        assert all("failed" not in p for p in s.list()["programs"])
        assert s.peek("reachable") == reached
        s.feed("prod", 0, (0, 20))
        s.tick()
        for i in range(20, 30):  # a long chain at once: the bound applies again
            s.feed("prod", 0, (i, i + 1))
        result = s.tick()
        assert any("did not converge within 4 rounds" in e for e in result.errors)
