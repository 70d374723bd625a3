"""Subscriptions (SPEC C2): replay, then each tick's net changes; replay plus
changes equals `peek` at every epoch, for early and late subscribers, with 1
and 3 workers (the same stream for both); unsubscribe; the end when the
producer is dropped; the text and --json records."""
import json
import random
import re
import subprocess
import sys

import pytest

import ddir
from conftest import ROOT
from program_gen import generate, random_stream

PRODUCER = 'export "edges" = input 0 | key($0[0] ; $0[1]);\n'
REACH = (ROOT / "programs/reach_import.ddp").read_text()


def add(state: dict, rows) -> None:
    for k, v, d in rows:
        state[(k, v)] = state.get((k, v), 0) + d
        if not state[(k, v)]:
            del state[(k, v)]


def as_rows(state: dict) -> dict:
    return dict(state)


def peeked(s, trace, key=None) -> dict:
    return {(k, v): d for k, v, d in s.peek(trace, key)}


def run_random(seed: int, workers: int, epochs: int = 5):
    """Install a generated program, subscribe to its exports at random epochs
    (some by key), and check replay + changes == peek after every tick.
    Returns the log of every subscription's changes, to compare worker counts."""
    g = generate(seed, size=1 + seed % 3)
    stream = random_stream(seed, g.inputs, g.ctors, epochs=epochs)
    exports = re.findall(r'export "([^"]+)"', g.source)
    rng = random.Random(seed)
    plan = [(rng.randrange(epochs), t, rng.random() < 0.3) for t in exports for _ in range(2)]
    log = []
    with ddir.Server(workers=workers, max_rounds=1000) as s:
        try:
            s.install("p", source=g.source)
        except ddir.DdirError:
            return None
        # the generator may declare an input the program never reads (lowered away)
        reads = set(next(p for p in s.list()["programs"] if p["name"] == "p")["inputs"])
        subs = []
        for epoch, batch in stream:
            for when, trace, by_key in plan:
                if when == epoch:
                    rows = s.peek(trace)
                    key = rows[rng.randrange(len(rows))][0] if by_key and rows else None
                    sub = s.subscribe(trace, key)
                    subs.append((sub, key, {}))
            for t, n, key, val, d in batch:
                if n in reads:
                    s.feed("p", n, key, val, time=t, diff=d)
            s.tick()
            failed = any(p.get("failed") for p in s.list()["programs"])
            for sub, key, state in subs:
                for change in sub:
                    log.append((sub.trace, key, change.epoch, change.replay, change.rows))
                    add(state, change.rows)
                if not failed:
                    assert state == peeked(s, sub.trace, key), (seed, sub.trace, key, s.epoch)
    return log


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_replay_plus_changes_is_peek(seed):
    one = run_random(seed, 1)
    three = run_random(seed, 3)
    assert one == three  # the same stream of records for any worker count


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 212))
def test_random_programs_replay_plus_changes_is_peek_long(seed):
    assert run_random(seed, 1, epochs=8) == run_random(seed, 3, epochs=8)


@pytest.mark.parametrize("workers", [1, 3])
def test_late_subscriber_and_drop(workers):
    with ddir.Server(workers=workers) as s:
        s.install("prod", source=PRODUCER)
        s.install("reach", source=REACH)
        s.feed("reach", 0, (1,))
        early = s.subscribe("reachable")
        for i in range(1, 6):
            s.feed("prod", 0, (i, i + 1))
        s.tick()
        s.feed("prod", 0, (3, 4), diff=-1)
        s.tick()
        late = s.subscribe("reachable")
        assert late.epoch == 2 and late.replay == s.peek("reachable")
        s.feed("prod", 0, (3, 4))
        s.tick()
        for sub in (early, late):
            state = {}
            changes = list(sub)
            assert changes[0].replay
            for c in changes:
                add(state, c.rows)
            assert state == peeked(s, "reachable")
        assert [c.epoch for c in early] == []  # drained
        # a subscription does not hold the drop gate; it ends with a message
        s.drop("reach")
        assert early.ended == late.ended == "its producer was dropped"
        assert list(early.follow(timeout=0)) == []


def test_unsubscribe_and_errors():
    with ddir.Server() as s:
        s.install("prod", source=PRODUCER)
        with pytest.raises(ddir.UnknownName, match='unknown trace "nope"'):
            s.subscribe("nope")
        sub = s.subscribe("edges")
        s.feed("prod", 0, (1, 2))
        s.tick()
        sub.close()
        s.feed("prod", 0, (1, 3))
        s.tick()
        assert [c.rows for c in sub] == [(), ((((1,), (2,), 1)),)]
        assert sub.ended == "unsubscribed"
        assert s.core.subscriptions == {}
        # the command form, owned by the session
        assert s.command("subscribe edges")[0]["kind"] == "subscribed"
        assert s.command("unsubscribe edges") == [{"kind": "unsubscribed", "trace": "edges"}]
        with pytest.raises(ddir.UnknownName, match='no subscription to "edges"'):
            s.command("unsubscribe edges")
        with pytest.raises(ddir.CommandError, match="usage: subscribe"):
            s.command("subscribe")


def test_failed_program_shows_no_half_tick():
    loop = ('let seed = input 0 | key($0[0] ;);\n'
            'grow: { var x = seed + (x | map($0[0] + 1 ;)) | distinct; }\n'
            'export "grown" = grow::x;\n')
    with ddir.Server(max_rounds=20) as s:
        s.install("g", source=loop)
        s.install("prod", source=PRODUCER)
        sub = s.subscribe("grown")
        s.feed("prod", 0, (1, 2))
        s.feed("g", 0, (1,))
        s.tick()
        assert s.list()["programs"][0]["failed"]
        state = {}
        for c in sub:
            add(state, c.rows)
        assert state == peeked(s, "grown") == {}


def ddir_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ddir", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("workers", ["1", "3"])
def test_text_and_json_records(workers):
    text = ddir_cli("-w", workers, "sessions/subscribe.txt").stdout
    assert text == (ROOT / "tests/golden/subscribe.out").read_text()
    lines = ddir_cli("-w", workers, "--json", "sessions/subscribe.txt").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert {"kind": "subscribed", "trace": "edges", "epoch": 1,
            "rows": [[[1], [2], 1], [[1], [3], 1]]} in records
    assert {"kind": "change", "trace": "edges", "epoch": 1,
            "rows": [[[1], [2], -1], [[2], [3], 1]]} in records
    assert {"kind": "ended", "trace": "reachable", "reason": "its producer was dropped"} in records
    assert {"kind": "unsubscribed", "trace": "edges"} in records
    # changes come right after the inspect events, before the tick record
    kinds = [r["kind"] for r in records]
    i = kinds.index("change")
    assert kinds[i - 1] == "inspect" and kinds[i + 1] == "tick"


def test_help_lists_the_new_commands():
    with ddir.Server() as s:
        names = [c["name"] for c in s.help()]
        assert {"subscribe", "unsubscribe", "peek cursor"} <= set(names)
        assert [c["name"] for c in s.help("peek")] == ["peek", "peek cursor"]
