"""The Python API (SPEC C6): every command, errors as exceptions carrying the
CLI's message with nothing changed, 1 and 3 workers, no process left behind."""
import io
import os

import pytest

import ddir
from ddir.server.session import Session
from conftest import ROOT

PRODUCER = str(ROOT / "programs" / "producer.ddp")
REACH = str(ROOT / "programs" / "reach_import.ddp")
ECHO = 'export "echoed" = input 0 | inspect(echo);\n'


def cli(server: "ddir.Server", line: str) -> str:
    """What the command line prints for ``line`` against this server."""
    out = io.StringIO()
    Session(out=out, client=server).run_line(line)
    return out.getvalue()


def state(server: "ddir.Server"):
    """Everything visible: list, and every trace's contents."""
    return server.list(), {t: server.peek(t) for t in server.traces}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(server) -> list:
    return [p.pid for p in getattr(server.core.cluster, "processes", [])]


@pytest.mark.parametrize("workers", [1, 3])
def test_every_command_through_the_api(workers):
    with ddir.Server(workers=workers) as s:
        assert s.workers == workers
        r = s.install("prod", PRODUCER)
        assert r == ddir.Result(0, (), ())
        s.install("reach", REACH)
        s.install("echo", source=ECHO)
        s.feed("prod", 0, (1, 2))
        assert s.feed_many("prod", 0, rows=[((2, 3), (), 1), ((3, 4), (), 1)]) == 2
        s.feed("echo", 0, ddir.List([7, 8]), val=ddir.Variant(2, (1, 2)))
        s.feed("echo", 0, 5, time=1, diff=-2)
        s.feed("reach", 0, (1,))
        result = s.tick()
        assert result.epoch == 1 and result.errors == ()
        assert [(e.label, e.key, e.val, e.time, e.diff) for e in result.events] == [
            ("echo", ddir.List([7, 8]), ddir.Variant(2, (1, 2)), (0,), 1)] + [
            ("reach", (n,), (), (0,), 1) for n in (1, 2, 3, 4)]
        assert s.peek("edges") == [((1,), (2,), 1), ((2,), (3,), 1), ((3,), (4,), 1)]
        assert s.peek("reachable") == [((n,), (), 1) for n in (1, 2, 3, 4)]
        assert s.peek("edges", (2,)) == [((2,), (3,), 1)]
        assert s.peek("reachable", limit=2, offset=1) == [((2,), (), 1), ((3,), (), 1)]
        table = s.peek_arrow("edges")
        assert table.column_names == ["key_0", "val_0", "diff"]
        assert table.to_pydict() == {"key_0": [1, 2, 3], "val_0": [2, 3, 4], "diff": [1, 1, 1]}
        assert s.peek_arrow("echoed").column_names == ["key", "val", "diff"]
        r = s.tick()
        # a bare 5 is the one-field Tuple (5), as `feed echo 0 5` is (issue 26, item 8)
        assert [(e.key, e.time, e.diff) for e in r.events] == [((5,), (1,), -2)]
        listing = s.list()
        assert listing["epoch"] == 2
        assert [t["name"] for t in listing["traces"]] == ["echoed", "edges", "reachable"]
        assert [p["name"] for p in listing["programs"]] == ["echo", "prod", "reach"]
        assert {c["name"] for c in s.help()} >= {"load", "save", "feed", "install"}
        assert s.help("load")[0]["usage"].startswith("load <prog> <in#> <file>")
        assert s.command("peek edges 1") == [
            {"kind": "peek", "trace": "edges", "key": (1,), "has_key": True,
             "rows": [((1,), (2,), 1)], "total": 1, "offset": 0}]
        s.drop("reach")
        assert "reachable" not in s.traces and s.programs == ["prod", "echo"]
        assert s.feed_many("prod", 0, keys=[(5, 6)]) == 1
        assert s.tick().epoch == 3
        assert s.peek("edges")[-1] == ((5,), (6,), 1)


def test_install_from_source_with_ddir_syntax_and_catch_up_events():
    with ddir.Server() as s:
        s.install("prod", PRODUCER)
        s.feed("prod", 0, (1, 2))
        s.tick()
        r = s.install("watch", source='export "w" = import "edges" | inspect(seen);\n')
        assert r.epoch == 1 and [(e.label, e.key, e.val) for e in r.events] == [
            ("seen", (1,), (2,))]
        s.install("app", "x.ddir", source='export "app" = MAP(INPUT 0, ($0[0] ;));\n')
        assert "app" in s.traces


def test_term_errors_are_in_the_tick_result_not_exceptions():
    with ddir.Server() as s:
        s.install("prod", PRODUCER)
        s.feed("prod", 0, (1,))
        r = s.tick()
        assert r.epoch == 1 and len(r.errors) == 1
        assert "index 1 out of range" in r.errors[0]


BAD_LINES = [
    # (API call, the same command line, the error class)
    (lambda s: s.install("prod", PRODUCER), f"install prod {PRODUCER}", ddir.NameTaken),
    (lambda s: s.install("x", "/nope/x.ddp"), "install x /nope/x.ddp", ddir.InvalidProgram),
    (lambda s: s.install("x", source="let = ;"), None, ddir.InvalidProgram),
    (lambda s: s.install("x", source='let a = import "nope";\nexport "a2" = a;'), None,
     ddir.UnknownName),
    (lambda s: s.install("iota:5", PRODUCER), f"install iota:5 {PRODUCER}", ddir.NameTaken),
    (lambda s: s.feed("nope", 0, (1,)), "feed nope 0 1", ddir.UnknownName),
    (lambda s: s.feed("prod", 3, (1,)), "feed prod 3 1", ddir.UnknownName),
    (lambda s: s.feed("prod", 0, (1,), time=0), "feed prod 0 1 time=0", ddir.UpdateRefused),
    (lambda s: s.feed("prod", 0, (1,), diff=0), "feed prod 0 1 diff=0", ddir.UpdateRefused),
    (lambda s: s.feed("prod", 0, (1,), time=-1), "feed prod 0 1 time=-1", ddir.CommandError),
    (lambda s: s.feed("prod", 0, (1,), diff=2 ** 64), "feed prod 0 1 diff=18446744073709551616",
     ddir.CommandError),
    (lambda s: s.feed("prod", -1, (1,)), "feed prod -1 1", ddir.CommandError),
    (lambda s: s.feed("iota:3", 0, (1,)), "feed iota:3 0 1", ddir.UpdateRefused),
    (lambda s: s.feed("prod", 0, b"1.5"), None, ddir.CommandError),
    (lambda s: s.feed("prod", 0, ("\ud800",)), None, ddir.CommandError),  # not valid Unicode
    (lambda s: s.feed("prod", 0, (2 ** 63,)), None, ddir.CommandError),
    (lambda s: s.feed("prod", 0, ddir.Variant(-1, ())), None, ddir.CommandError),
    (lambda s: s.feed_many("prod", 0, rows=[((1, 2), (), 1), ((1,), (), 0)]), None,
     ddir.UpdateRefused),
    (lambda s: s.feed_many("prod", 0, rows=[((1, 2), (), 1), (None, (), 1)]), None,
     ddir.CommandError),
    (lambda s: s.feed_many("prod", 0, rows=[((1, 2), (), 1), (1, {2.5})]), None, ddir.CommandError),
    (lambda s: s.feed_many("nope", 0, keys=[(1, 2)]), "feed nope 0 1,2", ddir.UnknownName),
    (lambda s: s.drop("nope"), "drop nope", ddir.UnknownName),
    (lambda s: s.drop("prod"), "drop prod", ddir.DropRefused),
    (lambda s: s.peek("nope"), "peek nope", ddir.UnknownName),
    (lambda s: s.peek("edges", limit=-1), "peek edges limit=-1", ddir.CommandError),
    (lambda s: s.peek("iota:x"), "peek iota:x", ddir.UnknownName),
    (lambda s: s.peek_arrow("nope"), "peek nope", ddir.UnknownName),
    (lambda s: s.help("nope"), "help nope", ddir.CommandError),
    (lambda s: s.load("nope", 0, "x.csv"), "load nope 0 x.csv", ddir.UnknownName),
    (lambda s: s.load("prod", 0, "/nope/x.csv"), "load prod 0 /nope/x.csv", ddir.DataFileError),
    (lambda s: s.load("prod", 0, "x.json"), "load prod 0 x.json", ddir.DataFileError),
    (lambda s: s.save("nope", "x.csv"), "save nope x.csv", ddir.UnknownName),
    (lambda s: s.save("edges", "x.txt"), "save edges x.txt", ddir.DataFileError),
    (lambda s: s.save("edges", "/nope/dir/x.csv"), "save edges /nope/dir/x.csv",
     ddir.DataFileError),
    (lambda s: s.command("frobnicate"), "frobnicate", ddir.CommandError),
    (lambda s: s.command("peek"), "peek", ddir.CommandError),
]


@pytest.mark.parametrize("workers", [1, 3])
def test_errors_are_exceptions_with_the_cli_message_and_change_nothing(workers):
    with ddir.Server(workers=workers) as s:
        s.install("prod", PRODUCER)
        s.install("reach", REACH)
        s.install("gen", source='export "g" = import "iota:3";\n')
        s.feed("prod", 0, (1, 2))
        s.feed("prod", 0, (7, 8), time=3)
        s.tick()
        before = state(s)
        for call, line, kind in BAD_LINES:
            with pytest.raises(kind) as caught:
                call(s)
            assert isinstance(caught.value, ddir.DdirError)
            message = str(caught.value)
            assert message and "\n" not in message and caught.value.message == message
            if line is not None:
                assert cli(s, line) == f"error: {message}\n", line
            assert state(s) == before, line
        # the staged future update survived every refused command
        s.tick(), s.tick()
        r = s.tick()
        assert r.epoch == 4 and ((7,), (8,), 1) in s.peek("edges")


def test_values_are_plain_python_and_importable_from_ddir():
    from ddir import List, Variant
    with ddir.Server() as s:
        s.install("e", source='export "out" = input 0;\n')
        values = [5, (), (1, (2, 3)), List([]), List([1, List([2])]), Variant(0, ()),
                  Variant(3, 5), Variant(1, Variant(0, ())), (List([1]), Variant(2, (1, 2)))]
        s.feed_many("e", 0, keys=values)
        s.tick()
        got = [k for k, _, _ in s.peek("out")]
        # a bare scalar key is a one-field Tuple, as on the command line
        fed = [(5,)] + values[1:]
        assert sorted(map(repr, got)) == sorted(map(repr, fed))
        assert type(got[0]) is tuple  # Tuple < Variant < List
        assert all(type(k) is List for k in got[-2:])


@pytest.mark.parametrize("workers", [1, 3])
def test_no_process_left_after_the_with_block_or_an_exception(workers):
    with ddir.Server(workers=workers) as s:
        pids = worker_pids(s)
        s.install("prod", PRODUCER)
    assert s.closed and not any(alive(p) for p in pids)
    with pytest.raises(ddir.ServerStopped):
        s.tick()

    with pytest.raises(ZeroDivisionError):
        with ddir.Server(workers=workers) as s:
            pids = worker_pids(s)
            s.install("prod", PRODUCER)
            1 / 0
    assert not any(alive(p) for p in pids)

    with pytest.raises(ddir.UnknownName):
        with ddir.Server(workers=workers) as s:
            pids = worker_pids(s)
            s.drop("nope")
    assert not any(alive(p) for p in pids)
    assert len(pids) == (workers if workers > 1 else 0)


def test_bad_constructor_arguments():
    with pytest.raises(ddir.CommandError):
        ddir.Server(workers=0)
    with pytest.raises(ddir.CommandError):
        ddir.Server(workers=65)


def test_feed_many_int_columns_and_rows_agree_across_workers():
    rows = [((i, -i * 3, 2 ** 40 + i), (i % 7,), 1 + i % 3) for i in range(2000)]
    rows += [((i, i, i), (0,), -1) for i in range(0, 2000, 5)]
    mixed = [(k if i % 2 else ddir.List(k), v, d) for i, (k, v, d) in enumerate(rows)]
    outputs = []
    for workers in (1, 3):
        with ddir.Server(workers=workers) as s:
            s.install("a", source='export "a" = input 0;\n')
            s.install("b", source='export "b" = input 0;\n')
            assert s.feed_many("a", 0, rows=rows) == len(rows)
            assert s.feed_many("b", 0, rows=mixed) == len(rows)
            s.tick()
            outputs.append((s.peek("a"), s.peek("b")))
    assert outputs[0] == outputs[1]
    expected = {}
    for k, v, d in rows:
        expected[(k, v)] = expected.get((k, v), 0) + d
    assert {(k, v): d for k, v, d in outputs[0][0]} == {kv: d for kv, d in expected.items() if d}


def test_the_readme_example_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    example = text.split("## Use it from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 [(1,), (2,), (3,), (4,), (5,)]"
    assert out[-1] == 'error: cannot drop "prod": trace "edges" is imported by "reach" (drop it first)'


def test_feed_many_takes_keys_or_updates_and_execute_takes_a_line():
    with ddir.Server() as s:
        s.install("p", source='export "out" = input 0;\n')
        # SPEC C6: an iterable of keys or (key, val, diff)
        assert s.feed_many("p", 0, [(5,), (6,), ((7,), (), 2), (1, 2, 3)]) == 4
        s.tick()
        assert s.peek("out") == [((1, 2, 3), (), 1), ((5,), (), 1), ((6,), (), 1), ((7,), (), 2)]
        assert s.execute("peek out 5")[0]["rows"] == [((5,), (), 1)]
        with pytest.raises(ddir.CommandError, match="not a command: int"):
            s.execute(42)
        with pytest.raises(ddir.UnknownName):
            s.execute("peek nope")


@pytest.mark.parametrize("call, message", [
    (lambda s: s.install("x", source=5), "source= must be the program's text"),
    (lambda s: s.install("x", source=b'export "q" = input 0;'), "source= must be the program's text"),
    (lambda s: s.install("x", source='export "q" = input 0;', syntax="xyz"), 'syntax= must be'),
    (lambda s: s.install("x", 5), "the program's path must be a str"),
    (lambda s: s.checkpoint(None), "checkpoint needs a directory path"),
    (lambda s: s.checkpoint(5), "checkpoint needs a directory path"),
    (lambda s: s.execute("list\ntick"), r"one command line at a time \(this one has a line break"),
    (lambda s: s.execute("# a comment\ntick"), r"one command line at a time"),
    (lambda s: s.feed_many("p", 0, None), r"feed_many needs rows \(keys, or \(key, val, diff\)"),
    (lambda s: s.feed_many("p", 0, [(1,)], keys=[(1,)]), "feed_many takes rows or keys=, not both"),
    (lambda s: s.feed_many("p", 0, 5), "feed_many: rows must be an iterable, not 5"),
    (lambda s: s.feed_many("p", 0, keys=5), "feed_many: keys= must be an iterable, not 5"),
])
def test_wrong_argument_types_are_command_errors(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ddir.Server() as s:
        with pytest.raises(ddir.CommandError, match=message):
            call(s)
        assert s.list()["programs"] == [] and os.listdir(tmp_path) == []
