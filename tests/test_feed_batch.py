"""Plain feed lines of a script are staged in batches (Session.run_script):
the output must be exactly what running each line on its own prints."""
import io
import os
import random
import subprocess
import sys

import ddir
from conftest import ROOT
from ddir.server import session as S
from ddir.server.session import Session


def one_by_one(lines, strict=False):
    out = io.StringIO()
    with ddir.Server(1, max_rounds=1000) as s:
        session = Session(out=out, client=s, strict=strict)
        for lineno, line in enumerate(lines, start=1):
            if not session.run_line(line, "s.txt", lineno):
                break
    return out.getvalue()


def batched(lines, strict=False):
    out = io.StringIO()
    with ddir.Server(1, max_rounds=1000) as s:
        Session(out=out, client=s, strict=strict).run_script("s.txt", lines)
    return out.getvalue()


def random_script(rng):
    """Edges stay a set (a retraction only of what is there), so reach converges."""
    lines = ["install prod programs/producer.ddp"]
    edges = set()
    for _ in range(300):
        r = rng.random()
        edge = (rng.randrange(5), rng.randrange(5))
        if r < 0.7:
            target = rng.choice(["prod 0", "prod 0", "prod 1", "nope 0", "reach 0"])
            if target == "prod 0":
                if edge in edges:
                    continue
                edges.add(edge)
            lines.append(f"feed {target} {edge[0]},{edge[1]}")
        elif r < 0.8:
            lines.append("tick")
        elif r < 0.85:
            lines.append("install reach programs/reach_import.ddp")
        elif r < 0.9 and edges:
            edge = rng.choice(sorted(edges))
            edges.discard(edge)
            lines.append(f"feed prod 0 {edge[0]},{edge[1]} diff=-1")
        else:
            lines.append(rng.choice(["peek edges", "peek reachable", "list", "drop reach"]))
    return lines + ["tick", "peek edges", "peek reachable"]


def test_batched_feeds_print_what_single_lines_print(monkeypatch):
    os.chdir(ROOT)
    for seed in range(6):
        lines = random_script(random.Random(seed))
        monkeypatch.setattr(S, "FEED_BATCH", 1 << 16)
        whole = batched(lines)
        assert whole == one_by_one(lines), seed
        monkeypatch.setattr(S, "FEED_BATCH", 3)  # flushed mid-run too
        assert batched(lines) == whole, seed


def test_a_refused_feed_is_reported_at_its_line_and_strict_stops_there():
    os.chdir(ROOT)
    lines = ["install prod programs/producer.ddp", "feed prod 0 1,2", "feed nope 0 1",
             "feed prod 0 3,4", "feed prod 7 1", "tick", "peek edges"]
    out = batched(lines)
    assert out == one_by_one(lines)
    assert 's.txt:3: no program named "nope"' in out and "s.txt:5:" in out
    assert "(3) ; (4)" in out
    strict = batched(lines, strict=True)
    assert strict == one_by_one(lines, strict=True) and "(3) ; (4)" not in strict


def test_piped_feeds_are_staged_before_the_pipe_waits(tmp_path):
    """A pipe that pauses after a bad feed line gets its error then, not at
    the end of the input."""
    proc = subprocess.Popen([sys.executable, "-m", "ddir"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("feed nope 0 1\n")
    proc.stdin.flush()
    first = proc.stdout.readline()
    proc.stdin.close()
    proc.wait(timeout=60)
    assert 'no program named "nope"' in first
