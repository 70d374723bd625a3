"""Stateless peek cursors (SPEC C4): pages concatenated equal the peek at the
cursor's epoch exactly, while ticks and feeds happen in between; forged,
expired (an injected clock) and dropped cursors get clear errors; the lease
holds back compaction and is released."""
import os
import random

import pytest

import ddir
from ddir.server import commands as C
from conftest import ROOT

PRODUCER = 'export "edges" = input 0 | key($0[0] ; $0[1]);\n'


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def server(workers, clock=None):
    s = ddir.Server(workers=workers)
    if clock is not None:
        s.core.cursors.clock = clock
    s.install("prod", source=PRODUCER)
    return s


def random_value(rng):
    r = rng.random()
    if r < 0.6:
        return (rng.randint(0, 30), rng.randint(0, 5))
    if r < 0.8:
        return (rng.randint(0, 30), ddir.List([rng.randint(0, 3)]))
    return (rng.randint(0, 30), ddir.Variant(rng.randint(0, 2), (rng.randint(0, 3),)))


def feed_some(s, rng, live: list):
    for _ in range(rng.randint(1, 25)):
        if live and rng.random() < 0.3:
            row = live.pop(rng.randrange(len(live)))
            s.feed("prod", 0, row, diff=-1)
        else:
            row = random_value(rng)
            live.append(row)
            s.feed("prod", 0, row, diff=rng.choice([1, 1, 2]))


def run_paging(seed: int, workers: int, rounds: int = 4):
    rng = random.Random(seed)
    s = server(workers)
    live: list = []
    try:
        cursors = []  # (cursor, key, expected rows, rows so far)
        for _ in range(rounds):
            feed_some(s, rng, live)
            s.tick()
            # a new cursor on the whole trace or on one key
            full = s.peek("edges")
            key = rng.choice(full)[0] if full and rng.random() < 0.3 else None
            expected = s.peek("edges", key)
            page = s.page("edges", key, limit=rng.randint(0, 4))
            assert page.total == len(expected) and page.rows == expected[:len(page.rows)]
            if page.cursor:
                cursors.append([page.cursor, key, expected, list(page.rows)])
            # every open cursor moves on by a page of a random size, in between ticks
            for entry in cursors:
                if entry[0] is None:
                    continue
                limit = rng.choice([None, 1, 2, 3, 7])
                page = s.page(cursor=entry[0], limit=limit)
                assert page.offset == len(entry[3])
                entry[3] += page.rows
                entry[0] = page.cursor
        for entry in cursors:  # drain them
            while entry[0]:
                page = s.page(cursor=entry[0], limit=rng.randint(1, 5))
                entry[3] += page.rows
                entry[0] = page.cursor
            assert entry[3] == entry[2]  # no restart, repeat or skip
    finally:
        s.close()
    return len(cursors)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("workers", [1, 3])
def test_random_paging_while_ticking(seed, workers):
    run_paging(seed, workers)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 106))
@pytest.mark.parametrize("workers", [1, 3])
def test_random_paging_while_ticking_long(seed, workers):
    run_paging(seed, workers, rounds=8)


@pytest.mark.parametrize("workers", [1, 3])
def test_cursor_reads_its_epoch_after_ticks(workers):
    with server(workers) as s:
        for i in range(10):
            s.feed("prod", 0, (i, i))
        s.tick()
        before = s.peek("edges")
        page = s.page("edges", limit=3)
        for i in range(10):  # retract everything, add more, over several ticks
            s.feed("prod", 0, (i, i), diff=-1)
            s.feed("prod", 0, (i, i + 100))
            s.tick()
        rows = list(page.rows)
        cursor = page.cursor
        while cursor:
            page = s.page(cursor=cursor, limit=4)
            rows += page.rows
            cursor = page.cursor
        assert rows == before
        # the text form: `more:` ends a page that leaves rows out
        (record,) = s.command("peek edges limit=2")
        assert record["cursor"]
        records = s.command(f"peek edges cursor={record['cursor']} limit=100")
        assert "cursor" not in records[-1] and records[-1]["offset"] == 2


def test_lease_holds_back_compaction_then_expires():
    clock = Clock()
    with server(1, clock) as s:
        s.feed("prod", 0, (1, 1))
        s.feed("prod", 0, (2, 2))
        s.tick()
        page = s.page("edges", limit=1)
        trace = s.core.cluster.worker.exports["edges"].trace
        for diff in (-1, 1, -1, 1):
            s.feed("prod", 0, (1, 1), diff=diff)
            s.tick()
        # history before the cursor's epoch (1) stays apart from later epochs
        assert {t[0] for _, t, _ in trace.get((1,))} >= {0, 1}
        clock.now += 59
        nxt = s.page(cursor=page.cursor)          # renews the lease
        assert nxt.rows == [((2,), (2,), 1)]
        clock.now += 59
        s.tick()
        assert ("edges", 1) in s.core.cursors.leases
        clock.now += 61
        with pytest.raises(ddir.CursorError, match='cursor expired: peek "edges" again'):
            s.page(cursor=page.cursor)
        s.tick()  # no lease: compaction catches up
        assert {t[0] for _, t, _ in trace.get((1,))} == {s.epoch - 2}


def test_forged_and_dropped_cursors():
    with server(3) as s:
        for i in range(5):
            s.feed("prod", 0, (i, i))
        s.tick()
        token = s.page("edges", limit=2).cursor
        forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
        for bad in (forged, "x", "!!!", token[:10], "A" * 200):
            with pytest.raises(ddir.CursorError, match="invalid cursor"):
                s.page(cursor=bad)
        other = ddir.Server()  # another server's secret
        other.core.cursors.secret = b"something else"
        try:
            other.install("prod", source=PRODUCER)
            with pytest.raises(ddir.CursorError, match="invalid cursor"):
                other.page(cursor=token)
        finally:
            other.close()
        with pytest.raises(ddir.CursorError, match='pages "edges", not "other"'):
            s.command(f"peek other cursor={token}")
        with pytest.raises(ddir.CommandError, match="cannot be combined"):
            s.command(f"peek edges cursor={token} offset=1")
        s.drop("prod")
        with pytest.raises(ddir.CursorError, match='cursor expired: trace "edges" was dropped'):
            s.page(cursor=token)
        s.install("prod", source=PRODUCER)  # the same name again is another trace
        s.feed("prod", 0, (1, 1))
        s.tick()
        with pytest.raises(ddir.CursorError, match='cursor expired: trace "edges" was dropped'):
            s.page(cursor=token)


def test_script_output_and_parsing():
    assert C.parse_command("peek cursor=abc").cursor == "abc"
    assert C.parse_command("peek edges cursor=abc limit=3") == C.Peek("edges", None, False, 3, 0,
                                                                     "abc")
    with pytest.raises(ddir.CommandError):
        C.parse_command("peek cursor=")
    with ddir.Server() as s:
        s.install("prod", source=PRODUCER)
        for i in range(3):
            s.feed("prod", 0, (i, i))
        s.tick()
        from ddir.server.output import render_text
        first = render_text(s.command("peek edges limit=2")[0]).splitlines()
        assert first[-2] == "  (1) ; (1)  x1"  # the rows, then the cursor (SPEC C4)
        assert first[-1].startswith("  more: peek edges cursor=")
        token = first[-1].split("cursor=")[1]
        last = render_text(s.command(f"peek edges cursor={token}")[0]).splitlines()
        assert last == ['peek "edges" (3 rows):', "  (2) ; (2)  x1"]
        # a peek that shows everything has no cursor
        assert "cursor" not in s.command("peek edges limit=3")[0]


def test_later_pages_cost_the_page_not_the_key():
    """One key holds 6,000 rows (over two epochs) beside 200 small keys. A
    key cursor's later pages, and an all-keys cursor's pages inside that
    key, touch about the rows they return (``PAGE_STATS``: history entries
    read and index rows stepped over, counted by the worker, which -w 1 runs
    in this process), not the key's 6,000 - so a regression to summing the
    key's history at every page fails here, without timing anything."""
    from ddir.server.cursor import PAGE_STATS
    with server(1) as s:
        s.feed_many("prod", 0, keys=[(0, v) for v in range(5000)] + [(k, 0) for k in range(1, 201)])
        s.tick()
        s.feed_many("prod", 0, keys=[(0, v) for v in range(5000, 6000)])
        s.feed("prod", 0, (0, 7), diff=-1)
        s.tick()
        whole, key_rows = s.peek("edges"), s.peek("edges", (0,))
        assert len(key_rows) == 5999
        for key, expected in (((0,), key_rows), (None, whole)):
            page = s.page("edges", key, limit=10)
            rows, pages = list(page.rows), 0
            touched = PAGE_STATS["touched"]
            while page.cursor and pages < 30:
                page = s.page(cursor=page.cursor)
                rows += page.rows
                pages += 1
            touched = PAGE_STATS["touched"] - touched
            assert pages == 30 and rows == expected[:310]
            assert touched <= 2 * 30 * 10, touched   # the page's rows, not the key's
        # and past the big key, small keys cost their own rows
        page = s.page(cursor=s.page("edges", limit=5995).cursor, limit=50)
        touched = PAGE_STATS["touched"]
        rows = s.page(cursor=page.cursor, limit=50).rows
        assert rows == whole[6045:6095]
        # (each row is one history entry and one index row; plus the key it resumes after)
        assert PAGE_STATS["touched"] - touched <= 2 * 50 + 1


def test_api_peek_with_limit_hands_its_cursor_to_the_caller():
    """`Server.peek(limit=)` returns a Page: the rows (a list, as before),
    and the cursor of the lease it took, so the caller can page on (`next`,
    `pages`) as of the first page's epoch, after ticks too."""
    with server(3) as s:
        for i in range(10):
            s.feed("prod", 0, (i, i))
        s.tick()
        whole = s.peek("edges")
        assert type(whole) is list
        first = s.peek("edges", limit=3, offset=1)
        assert first == whole[1:4] and first.rows == whole[1:4]
        assert (first.trace, first.total, first.offset) == ("edges", 10, 1)
        assert first.cursor and f"total=10, offset=1, cursor={first.cursor!r}" in repr(first)
        for i in range(10):
            s.feed("prod", 0, (i, i), diff=-1)
        s.tick()
        pages = list(first.pages(limit=4))
        assert [len(p) for p in pages] == [3, 4, 2] and pages[-1].cursor is None
        assert [r for p in pages for r in p] == whole[1:]
        assert pages[-1].next() is None
        assert first.next(limit=1) == whole[4:5]   # a cursor may be read again
        keyed = s.peek("edges", (3,), limit=5)      # everything shown: no cursor, no lease
        assert keyed == [] and keyed.cursor is None and keyed.next() is None
        assert s.page("edges", limit=2) == []


def test_tokens_are_the_same_in_every_run_and_for_every_worker_count(tmp_path):
    """SPEC B: output byte-identical for every -w N, tokens included, with
    no secret set (the default one is fixed)."""
    import os
    import subprocess
    import sys
    (tmp_path / "p.ddp").write_text('export "out" = input 0;\n')
    (tmp_path / "s.txt").write_text("install p p.ddp\n" + "".join(f"feed p 0 {i}\n" for i in range(6))
                                    + "tick\npeek out limit=2\npeek out limit=0\n")
    env = {k: v for k, v in os.environ.items() if k != "DDIR_CURSOR_SECRET"}
    outs = [subprocess.run([sys.executable, "-m", "ddir", "-w", str(w), "s.txt"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60).stdout
            for w in (1, 3, 1)]
    assert outs[0] == outs[1] == outs[2] and "more: peek out cursor=" in outs[0]
    # limit=0: the total alone, no cursor (one would never advance)
    assert outs[0].endswith('  more: peek out cursor=' + outs[0].split("cursor=")[1].split("\n")[0]
                            + '\npeek "out" (6 rows):\n')


def test_a_cursor_page_of_zero_rows_is_refused():
    with ddir.Server() as s:
        s.install("p", source='export "out" = input 0;\n')
        s.feed_many("p", 0, keys=[(i,) for i in range(5)])
        s.tick()
        page = s.peek("out", limit=0)
        assert page == [] and page.total == 5 and page.cursor is None
        assert list(page.pages()) == [page]
        first = s.peek("out", limit=2)
        with pytest.raises(ddir.CommandError, match="limit= must be at least 1, got 0"):
            first.next(0)
        with pytest.raises(ddir.CommandError, match="limit= must be at least 1, got 0"):
            s.command(f"peek out cursor={first.cursor} limit=0")
        with pytest.raises(ddir.CommandError, match="limit= must be at least 1, got 0"):
            s.execute(C.Peek("out", None, False, 0, 0, first.cursor))  # a typed command too
        assert first.next() == [((2,), (), 1), ((3,), (), 1)]


@pytest.mark.parametrize("field, value", [(9, -3), (9, "x"), (9, 0), (6, 5), (6, [[1, 2, 3]]),
                                          (2, -1), (4, 1), (7, 99), (1, 7)])
def test_a_forged_token_is_an_invalid_cursor_and_harms_nothing(field, value):
    """The default secret is public (tokens are the same for every -w N):
    every field of a token is checked before anything reaches a worker."""
    import base64
    import hashlib
    import hmac
    from ddir.server.cursor import DEFAULT_SECRET, MAC_BYTES
    from ddir.ir.codec import packb, unpackb
    with ddir.Server(2) as s:
        s.install("p", source='export "x" = input 0;\n')
        s.feed_many("p", 0, keys=[(i,) for i in range(20)])
        s.tick()
        page = s.peek("x", limit=5)
        raw = base64.urlsafe_b64decode(page.cursor + "=" * (-len(page.cursor) % 4))
        fields = list(unpackb(raw[:-MAC_BYTES]))
        fields[field] = value
        payload = packb(fields)
        token = base64.urlsafe_b64encode(
            payload + hmac.new(DEFAULT_SECRET, payload, hashlib.sha256).digest()[:MAC_BYTES])
        with pytest.raises(ddir.CursorError, match="invalid cursor"):
            s.page(cursor=token.decode().rstrip("="))
        assert page.next() == [((i,), (), 1) for i in range(5, 10)]  # every worker alive


def test_a_cursor_page_at_the_prompt_keeps_its_limit_and_has_no_offset_hint():
    import io
    from ddir.server.session import Session
    out = io.StringIO()
    s = Session(out=out)
    s.interactive = True
    s.run_line("install p " + os.path.join(ROOT, "programs", "producer.ddp"))
    for i in range(80):
        s.run_line(f"feed p 0 {i},{i}")
    s.run_line("tick")
    s.run_line("peek edges limit=10")
    token = out.getvalue().split("cursor=")[-1].split()[0]
    out.truncate(0)
    out.seek(0)
    s.run_line(f"peek cursor={token}")
    lines = out.getvalue().splitlines()
    assert len([x for x in lines if x.startswith("  (")]) == 10  # the cursor's own limit
    assert not any("more row" in x for x in lines) and lines[-1].startswith("  more: peek edges cursor=")


def test_a_cursor_pages_keys_deeper_than_the_command_line_allows():
    """A computed key may nest up to 200 levels (runtime.MAX_NESTING); its
    token must not be taken for a forged one."""
    deep = "fold(list(" + ",".join(["0"] * 150) + "), $0[0], list(^1))"
    with ddir.Server() as s:
        s.install("p", source=f'export "o" = input 0 | map({deep} ;);\n')
        s.feed_many("p", 0, keys=[(i,) for i in range(5)])
        s.tick()
        pages = list(s.peek("o", limit=2).pages())
        assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == s.peek("o")


def _peeks_of(workers: int, seed: int, columnar: bool) -> list:
    """Every peek and page of a random run over a trace of Tuples of Ints:
    held as int64 runs (every threshold 1) or as rows (the defaults, with
    batches this small)."""
    from ddir.engine import batch as B
    saved = B.COLUMNAR_MIN, B.COLUMNAR_FIRST, B.INTAKE_FIRST
    if columnar:
        B.COLUMNAR_MIN = B.COLUMNAR_FIRST = B.INTAKE_FIRST = 1
    rng = random.Random(seed)
    seen = []
    try:
        with server(workers) as s:
            live: list = []
            for _ in range(4):
                rows = []
                for _ in range(rng.randint(1, 40)):
                    if live and rng.random() < 0.3:
                        rows.append((live.pop(rng.randrange(len(live))), (), -1))
                    else:
                        live.append((rng.randint(-5, 30), rng.randint(-2 ** 40, 5)))
                        rows.append((live[-1], (), rng.choice([1, 1, 2])))
                s.feed_many("prod", 0, rows)
                s.tick()
                seen.append(s.peek("edges"))
                offset, limit = rng.randint(0, 10), rng.randint(0, 6)
                page = s.page("edges", limit=limit, offset=offset)
                seen.append((list(page), page.total, page.offset))
                pages = [list(p) for p in s.page("edges", limit=rng.randint(1, 7)).pages()]
                seen.append(pages)
        return seen
    finally:
        B.COLUMNAR_MIN, B.COLUMNAR_FIRST, B.INTAKE_FIRST = saved


@pytest.mark.parametrize("workers", [1, 3])
def test_a_trace_held_in_columns_peeks_and_pages_as_rows_do(workers):
    """A peek of a trace held as int64 runs sorts and slices the columns and
    builds rows for the page only; what it shows is what the row path shows."""
    for seed in range(3):
        assert _peeks_of(workers, seed, columnar=True) == _peeks_of(workers, seed, columnar=False)
