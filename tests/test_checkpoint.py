"""Checkpoints (SPEC C5): split-session equivalence (run part of a session,
checkpoint, restore with any number of workers, run the rest: the output is
the uninterrupted run's, byte for byte) and crash safety."""
import io
import json
import os
import random
import subprocess
import sys

import pytest

import ddir
from conftest import ROOT, UPSTREAM
from ddir.server.session import Session

SESSIONS = sorted(p.stem for p in (ROOT / "sessions").glob("*.txt"))


def ddir_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ddir", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def split_points(lines):
    """Where a session can be cut: no subscription open yet (subscriptions
    and cursor leases belong to the session, not to the checkpoint)."""
    points = []
    for k in range(1, len(lines)):
        if any(line.startswith("subscribe") for line in lines[:k]):
            break
        if any("cursor=" in line for line in lines[k:]):
            continue
        points.append(k)
    return points


def run_lines(server, path, lines):
    out = io.StringIO()
    Session(out=out, client=server).run_script(path, lines)
    return out.getvalue()


def in_process_split(lines, k, snap, workers, cwd=ROOT):
    """Output of lines[:k], checkpoint, restore with ``workers``, lines[k:]
    (padded so that error locations keep their line numbers)."""
    os.chdir(cwd)
    with ddir.Server(1) as s:
        first = run_lines(s, "s.txt", lines[:k])
        record = s.checkpoint(snap)
        assert record["kind"] == "checkpoint"
    with ddir.Server.restore(snap, workers=workers) as s:
        second = run_lines(s, "s.txt", [""] * k + lines[k:])
    return first + second


@pytest.mark.parametrize("name", SESSIONS)
def test_session_split_anywhere_in_process(name, tmp_path):
    lines = (ROOT / "sessions" / f"{name}.txt").read_text().splitlines()
    os.chdir(ROOT)
    with ddir.Server(1) as s:
        whole = run_lines(s, "s.txt", lines)
    points = split_points(lines)
    assert points
    for k in points:
        assert in_process_split(lines, k, str(tmp_path / f"snap{k}"), 1) == whole, k
    k = points[len(points) // 2]
    assert in_process_split(lines, k, str(tmp_path / "snap3w"), 3) == whole


UPSTREAM_SESSIONS = sorted(p.stem for p in (UPSTREAM / "examples/server/sessions").glob("*.txt"))


@pytest.mark.parametrize("name", UPSTREAM_SESSIONS)
def test_upstream_session_split_anywhere(name, tmp_path):
    """The upstream sessions, run from their folder (their paths are relative
    to it): cut anywhere, restored with 1 worker, and in the middle with 3."""
    path = UPSTREAM / "examples/server/sessions" / f"{name}.txt"
    lines = path.read_text().splitlines()
    os.chdir(UPSTREAM)
    with ddir.Server(1) as s:
        whole = run_lines(s, "s.txt", lines)
    points = split_points(lines)
    assert points
    for k in points:
        assert in_process_split(lines, k, str(tmp_path / f"snap{k}"), 1, UPSTREAM) == whole, k
    k = points[len(points) // 2]
    assert in_process_split(lines, k, str(tmp_path / "snap3w"), 3, UPSTREAM) == whole


@pytest.mark.parametrize("name", SESSIONS)
def test_session_split_cli_new_process(name, tmp_path):
    """The CLI: the writer with -w 2, the restorer in a new process with -w 1 and -w 3."""
    lines = (ROOT / "sessions" / f"{name}.txt").read_text().splitlines(keepends=True)
    script = tmp_path / "s.txt"
    script.write_text("".join(lines))
    whole = ddir_cli(str(script))
    assert whole.returncode == 0, whole.stderr
    points = split_points([line.rstrip("\n") for line in lines])
    k = points[len(points) // 2]
    snap = tmp_path / "snap"
    script.write_text("".join(lines[:k]) + f"checkpoint {snap}\n")
    first = ddir_cli("-w", "2", str(script))
    assert first.returncode == 0, first.stderr
    out_lines = first.stdout.splitlines(keepends=True)
    assert out_lines[-1].startswith(f'checkpoint "{snap}" at epoch ')
    script.write_text("\n" * k + "".join(lines[k:]))
    for workers in ("1", "3"):
        rest = ddir_cli("--restore", str(snap), "-w", workers, str(script))
        assert rest.returncode == 0, rest.stderr
        assert "".join(out_lines[:-1]) + rest.stdout == whole.stdout, workers


def random_stream(rng, n=60):
    lines = ["install prod programs/producer.ddp"]
    reach = False
    edges = set()
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            # a set of edges (retract only what is there): reach converges
            a, b = rng.randrange(6), rng.randrange(6)
            if (a, b) in edges:
                edges.discard((a, b))
                lines.append(f"feed prod 0 {a},{b} diff=-1")
            else:
                edges.add((a, b))
                lines.append(f"feed prod 0 {a},{b}")
        elif r < 0.7:
            lines.append("tick")
        elif r < 0.78 and not reach:
            lines.append("install reach programs/reach_import.ddp")
            reach = True
        elif r < 0.85 and reach:
            lines.append(f"feed reach 0 {rng.randrange(6)}")
        elif r < 0.92:
            lines.append(rng.choice(["peek edges", "peek reachable", "list"]))
        else:
            lines.append("drop reach" if reach and rng.random() < 0.3 else "tick")
            if lines[-1] == "drop reach":
                reach = False
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_random_streams_split(seed, tmp_path):
    rng = random.Random(seed)
    lines = random_stream(rng)
    os.chdir(ROOT)
    with ddir.Server(1) as s:
        whole = run_lines(s, "s.txt", lines)
    for i in range(3):
        k = rng.randrange(1, len(lines))
        workers = (1, 3, 2)[i]
        assert in_process_split(lines, k, str(tmp_path / f"snap{i}"), workers) == whole, (k, workers)


def test_checkpoint_record_and_manifest(tmp_path):
    snap = tmp_path / "snap"
    os.chdir(ROOT)
    with ddir.Server(1) as s:
        s.install("prod", "programs/producer.ddp")
        s.feed("prod", 0, (1, 2))
        s.feed("prod", 0, (1, 2))
        s.feed("prod", 0, (3, 4), time=5)
        s.tick()
        out = run_lines(s, "x", [f"checkpoint {snap}"])
        assert out == f'checkpoint "{snap}" at epoch 1 (1 programs, 2 rows)\n'
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["epoch"] == 1 and manifest["staged_future_rows"] == 1
    (prog,) = manifest["programs"]
    assert prog["name"] == "prod" and "input" in prog["source"]
    import pyarrow.ipc as ipc
    table = ipc.open_file(str(snap / prog["input_files"]["0"]["file"])).read_all()
    # Tuples of Ints: int64 columns (time, key_i, val_i, diff), plain pyarrow reads them
    assert table.to_pydict() == {"time": [0, 5], "key_0": [1, 3], "key_1": [2, 4], "diff": [2, 1]}
    with ddir.Server.restore(snap, workers=2) as s:
        assert s.epoch == 1 and s.peek("edges") == [((1,), (2,), 2)]
        for _ in range(5):
            s.tick()
        assert s.peek("edges") == [((1,), (2,), 2), ((3,), (4,), 1)]


def test_restore_missing_checkpoint_is_an_error(tmp_path):
    r = ddir_cli("--restore", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no checkpoint there" in r.stderr


@pytest.mark.parametrize("point", ["files", "manifest", "swap"])
def test_crash_mid_checkpoint_leaves_a_whole_checkpoint(point, tmp_path):
    snap = tmp_path / "snap"
    script = tmp_path / "a.txt"
    script.write_text(f"install prod programs/producer.ddp\nfeed prod 0 1,2\ntick\n"
                      f"checkpoint {snap}\n")
    assert ddir_cli(str(script)).returncode == 0
    script.write_text(f"feed prod 0 5,6\ntick\ncheckpoint {snap}\n")
    env = dict(os.environ, DDIR_CHECKPOINT_FAULT=point)
    killed = ddir_cli("--restore", str(snap), str(script), env=env)
    assert killed.returncode != 0  # SIGKILLed mid-checkpoint
    script.write_text("peek edges\nlist\n")
    r = ddir_cli("--restore", str(snap), str(script))
    assert r.returncode == 0, r.stderr
    old = "(1) ; (2)  x1" in r.stdout and "(5)" not in r.stdout and "epoch: 1" in r.stdout
    new = "(5) ; (6)  x1" in r.stdout and "epoch: 2" in r.stdout
    assert old or new, r.stdout
    if point in ("files", "manifest"):
        assert old


def _crash_trials(trials: int, seed: int, tmp_path) -> int:
    """Kill (SIGKILL) a server that checkpoints after every tick at random
    moments; each time the directory restores, at some epoch e, to exactly
    the state of epoch e (e rows, one per tick). Returns the trials that
    found a checkpoint."""
    import signal
    import time
    rng = random.Random(seed)
    snap = tmp_path / "snap"
    script = tmp_path / "loop.txt"
    lines = ["install prod programs/producer.ddp"]
    for i in range(1, 400):
        lines += [f"feed prod 0 {i},{i}", "tick", f"checkpoint {snap}"]
    script.write_text("\n".join(lines) + "\n")
    check = tmp_path / "check.txt"
    check.write_text("list\npeek edges\n")
    found = 0
    for _ in range(trials):
        proc = subprocess.Popen([sys.executable, "-m", "ddir", str(script)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (snap / "manifest.json").exists() and not (tmp_path / ".snap.old").exists():
            continue  # killed before the first checkpoint
        found += 1
        r = ddir_cli("--restore", str(snap), str(check))
        assert r.returncode == 0, r.stderr
        epoch = int(r.stdout.split("\n")[0].removeprefix("epoch: "))
        rows = [line for line in r.stdout.splitlines() if line.startswith("  (")]
        assert len(rows) == epoch, r.stdout
    return found


def test_sigkill_at_random_moments_leaves_a_whole_checkpoint(tmp_path):
    assert _crash_trials(4, 1, tmp_path) >= 2


@pytest.mark.slow
def test_sigkill_at_random_moments_many_trials(tmp_path):
    assert _crash_trials(60, 2, tmp_path) >= 40


# ------------------------------------------------------------ damaged checkpoints

FUNCTIONS = str(ROOT / "tests" / "fn_module.py")


def _write_damaged_base(snap):
    """A checkpoint with every kind of file: an int64 input (with an update
    staged for the future), a printed input (Lists), a generated source, and
    a program that restores read-only without its function, so that its
    export file is read."""
    with ddir.Server(1, functions=FUNCTIONS) as s:
        s.install("p", source='let e = input 0 | key($0[0] ; $0[1]);\nexport "edges" = e;\n'
                              'export "n" = import "iota:3" | join(e, ($0 ; $1));\n')
        s.install("l", source='export "lists" = input 0 | map($0 ; list($0[0]));\n')
        s.install("f", source='export "scored" = input 0 | map($0 ; @score($0[0]));\n')
        s.feed("p", 0, (1, 2))
        s.feed("p", 0, (3, 4), time=5)
        s.feed("l", 0, (ddir.List([1, 2]),))
        s.feed("f", 0, (7,))
        s.tick()
        s.checkpoint(str(snap))


def _state(s):
    return s.epoch, s.list(), {t: s.peek(t) for t in ("edges", "n", "lists", "scored")}


@pytest.fixture(scope="module")
def damaged_base(tmp_path_factory):
    snap = tmp_path_factory.mktemp("base") / "snap"
    _write_damaged_base(snap)
    with ddir.Server.restore(str(snap)) as s:
        state = _state(s)
    manifest = json.loads((snap / "manifest.json").read_text())
    files = {p["name"]: {**{f"input{n}": i["file"] for n, i in p.get("input_files", {}).items()},
                         **{t: i["file"] for t, i in p.get("export_files", {}).items()}}
             for p in manifest["programs"]}
    return snap, state, files


def _copy(base, tmp_path, checksums=True):
    import shutil
    snap = tmp_path / "snap"
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(base, snap)
    if not checksums:  # as a hand-edited manifest: the checks below the checksums run
        _edit(snap, lambda m: None)
    return snap


def _edit(snap, change):
    """Apply ``change`` to the manifest, dropping its checksums."""
    m = json.loads((snap / "manifest.json").read_text())
    m.pop("checksum", None)
    for p in m["programs"]:
        for info in [*p.get("input_files", {}).values(), *p.get("export_files", {}).values()]:
            info.pop("sha256", None)
    change(m)
    (snap / "manifest.json").write_text(json.dumps(m))


def _write_table(path, columns):
    import pyarrow as pa
    import pyarrow.ipc as ipc
    table = pa.table({k: pa.array(v, type=pa.int64() if k in ("time", "diff") else pa.string())
                      for k, v in columns.items()})
    with ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)


def _prog(m, name):
    return next(p for p in m["programs"] if p["name"] == name)


DAMAGE = {
    # name: (what to do to the checkpoint directory, the message after `restore "<dir>": `)
    "garbage_data": (lambda d, f: (d / f["p"]["input0"]).write_text("garbage\n"),
                     "{p0}: damaged: its contents do not match the checksum in manifest.json"),
    "garbage_data_unchecked": (
        lambda d, f: (_edit(d, lambda m: None), (d / f["p"]["input0"]).write_text("garbage\n")),
        "{p0}: not an Arrow IPC file ("),
    "missing_data": (lambda d, f: (d / f["p"]["input0"]).unlink(), "{p0}: missing"),
    "missing_export_of_live_program": (lambda d, f: (d / f["p"]["edges"]).unlink(),
                                       "{pe}: missing"),
    "epoch_not_a_number": (lambda d, f: _edit(d, lambda m: m.update(epoch="x")),
                           'manifest.json: "epoch" must be a non-negative integer, got "x"'),
    "negative_epoch": (lambda d, f: _edit(d, lambda m: m.update(epoch=-1)),
                       'manifest.json: "epoch" must be a non-negative integer, got -1'),
    "no_programs": (lambda d, f: _edit(d, lambda m: m.pop("programs")),
                    'manifest.json: has no "programs"'),
    "programs_not_objects": (lambda d, f: _edit(d, lambda m: m.update(programs=[3])),
                             "manifest.json: program 0: must be a JSON object, got 3"),
    "since_missing": (lambda d, f: _edit(d, lambda m: _prog(m, "l").pop("since")),
                      'manifest.json: program 2 ("l"): has no "since"'),
    "since_after_epoch": (lambda d, f: _edit(d, lambda m: _prog(m, "l").update(since=9)),
                          'manifest.json: program 2 ("l"): "since" (9) is after the '
                          "checkpoint's epoch (1)"),
    "unknown_import": (lambda d, f: _edit(d, lambda m: _prog(m, "p").update(imports=["nope"])),
                       'manifest.json: program 1 ("p"): imports "nope", which no earlier '
                       "program exports"),
    "bad_recipe": (lambda d, f: _edit(d, lambda m: m["programs"][0].update(recipe="iota:-1")),
                   'manifest.json: program 0 ("iota:3"): generated source "iota:-1": N must be '
                   "a non-negative integer, got `-1`"),
    "file_outside": (lambda d, f: _edit(d, lambda m: _prog(m, "p")["input_files"]["0"].update(
        file="../x.arrow")), 'manifest.json: program 1 ("p"): "input_files" entry "0": "file" '
        'must be a file name, got "../x.arrow"'),
    "unknown_input_file": (lambda d, f: _edit(d, lambda m: _prog(m, "p")["input_files"].update(
        {"4": {"file": "x", "rows": 1}})), 'manifest.json: program 1 ("p"): "input_files" has an '
        'entry "4" that is not one of its inputs'),
    "rows_differ": (lambda d, f: _edit(d, lambda m: _prog(m, "p")["input_files"]["0"].update(
        rows=9)), "{p0}: holds 2 rows; manifest.json says 9"),
    "wrong_schema": (lambda d, f: (_edit(d, lambda m: None),
                                   (d / f["f"]["scored"]).write_bytes((d / f["p"]["input0"]).read_bytes())),
                     '{fs}: unexpected column "time"'),
    "bad_printed_value": (lambda d, f: (_edit(d, lambda m: None), _write_table(
        d / f["l"]["input0"], {"time": [0], "key": ["([1, 2]"], "val": ["()"], "diff": [1]})),
        '{l0}: row 1: column "key": bad value `([1, 2]`: '),
    "nulls": (lambda d, f: (_edit(d, lambda m: None), _write_table(
        d / f["l"]["input0"], {"time": [0], "key": [None], "val": ["()"], "diff": [1]})),
        '{l0}: column "key" has nulls'),
    "edited_value": (lambda d, f: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace('"epoch": 1', '"epoch": 2')),
        "manifest.json: damaged: its contents do not match its checksum"),
    "not_an_object": (lambda d, f: (d / "manifest.json").write_text("[1]"),
                      "manifest.json: must be a JSON object, got [1]"),
    "other_version": (lambda d, f: _edit(d, lambda m: m.update(version=7)),
                      "not a ddir checkpoint of version 1"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_one_error_naming_the_problem(name, damaged_base, tmp_path):
    import multiprocessing
    base, _, files = damaged_base
    snap = _copy(base, tmp_path)
    damage, expected = DAMAGE[name]
    damage(snap, files)
    expected = f'restore "{snap}": ' + expected.format(
        p0=files["p"]["input0"], pe=files["p"]["edges"], fs=files["f"]["scored"],
        l0=files["l"]["input0"])
    with pytest.raises(ddir.CheckpointError) as caught:
        ddir.Server.restore(str(snap), workers=2)
    message = str(caught.value)
    assert "\n" not in message
    if expected.endswith((": ", "(")):
        assert message.startswith(expected), message
    else:
        assert message == expected
    assert multiprocessing.active_children() == []  # the workers were stopped


def test_damaged_checkpoint_on_the_command_line_is_one_error_line(damaged_base, tmp_path):
    base, _, files = damaged_base
    for name in ("garbage_data", "missing_data", "epoch_not_a_number"):
        snap = _copy(base, tmp_path)
        DAMAGE[name][0](snap, files)
        for workers in ("1", "3"):
            r = ddir_cli("--restore", str(snap), "-w", workers)
            assert r.returncode == 2 and r.stdout == "", (name, r.stderr)
            assert r.stderr.startswith(f'error: restore "{snap}": ') and r.stderr.count("\n") == 1, \
                r.stderr


@pytest.mark.parametrize("checksums", [True, False])
def test_random_damage_is_a_clean_error_or_a_whole_restore(checksums, damaged_base, tmp_path):
    """Every file of a checkpoint, bytes flipped, cut short or extended at
    random: a CheckpointError or a restore; never another exception. With
    the checksums every restore that succeeds is the undamaged one."""
    base, state, files = damaged_base
    rng = random.Random(13 if checksums else 14)
    names = ["manifest.json"] + sorted({f for fs in files.values() for f in fs.values()})
    outcomes = {"error": 0, "restored": 0}
    for name in names:
        for trial in range(4):
            snap = _copy(base, tmp_path, checksums)
            path = snap / name
            data = bytearray(path.read_bytes())
            how = trial % 3
            if how == 0:
                for _ in range(rng.randint(1, 3)):
                    i = rng.randrange(len(data))
                    data[i] ^= 1 << rng.randrange(8)
            elif how == 1:
                del data[rng.randrange(len(data)):]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            path.write_bytes(bytes(data))
            try:
                with ddir.Server.restore(str(snap)) as s:
                    got = _state(s)
            except ddir.CheckpointError as e:
                assert "\n" not in str(e) and str(e).startswith(f'restore "{snap}": ')
                outcomes["error"] += 1
                continue
            outcomes["restored"] += 1
            if checksums:
                assert got == state, (name, how)
    assert outcomes["error"] > len(names)
