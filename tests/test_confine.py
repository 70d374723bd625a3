"""SPEC E2: what a network client of `ddir serve` may touch.

Every test drives a real `ddir serve` process with real websockets clients
(plus, where a second Unix user matters, a client and the symlinks it makes
running as `nobody`): paths a network client names resolve, symlinks
included, inside the data directory, else one error that says nothing about
what is there; no error quotes a file; `checkpoint` replaces only a
checkpoint; `save` never widens a file's mode and nothing changes the umask;
no network client makes the server import Python code. Local use (scripts)
stays unconfined."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
from websockets.sync.client import connect

import ddir
from conftest import ROOT
from ddir.server import commands as C

PY = [sys.executable, "-m", "ddir"]
ECHO = 'export "echoed" = input 0;\n'
OUT_READ = "not a readable file inside the server's data directory"
OUT_WRITE = "not a file name inside the server's data directory"
OUT_DIR = "not a directory name inside the server's data directory"
HIDDEN = ('the program has an error there (a server file\'s text is not shown to a network '
          'client; send it as "source" to see the reason)')
SECRET = "s3cr3t-token"
FN = str(ROOT / "tests" / "fn_module.py")


class Served:
    """`ddir serve --no-token --data-dir DATA ...` (a real process), started
    in DATA (where the old server resolved a client's relative paths)."""

    def __init__(self, data, *args, umask=None):
        def child():
            if umask is not None:
                os.umask(umask)
        self.proc = subprocess.Popen(
            PY + ["serve", "--port", "0", "--no-token", "--data-dir", str(data), *args],
            cwd=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=child, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))))
        line = self.proc.stderr.readline()
        assert "serving on ws://" in line, line + self.proc.stderr.read()
        self.url = line.split()[-1]

    def client(self):
        return connect(self.url, open_timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def served():
    started = []

    def start(*args, **kw):
        started.append(Served(*args, **kw))
        return started[-1]
    yield start
    for s in started:
        assert s.stop() == 0, s.proc.stderr.read()


def ask(ws, req_id, line, **extra):
    """One request's records up to its done."""
    ws.send(json.dumps({"id": req_id, "line": line, **extra}))
    out = []
    while True:
        obj = json.loads(ws.recv(timeout=30))
        assert obj["id"] == json.loads(json.dumps(req_id)), (obj, req_id)
        if obj["kind"] == "done":
            return out
        out.append(obj)


def error_of(ws, req_id, line, **extra):
    (record,) = ask(ws, req_id, line, **extra)
    assert record["kind"] == "error", record
    return record["message"]


@pytest.fixture
def tree(tmp_path):
    """data/ (the data directory) and outside/ beside it: a secret CSV, a
    secret program file, and links from data/ pointing out."""
    data, out = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    out.mkdir()
    (out / "secret.csv").write_text(f"a,b\n{SECRET},2\n")
    (out / "secret.ddp").write_text(ECHO)
    (out / "target.csv").write_text("keep,me\n1,2\n")
    os.chmod(out / "target.csv", 0o600)
    (data / "good.csv").write_text("a,b\n1,2\n3,4\n")
    (data / "prog.ddp").write_text(ECHO)
    (data / "sub.csv").mkdir()
    (data / "passwd.csv").symlink_to("/etc/passwd")
    (data / "link.csv").symlink_to(out / "secret.csv")
    (data / "link.ddp").symlink_to(out / "secret.ddp")
    (data / "dangling.csv").symlink_to(out / "nothing.csv")
    (data / "wlink.csv").symlink_to(out / "target.csv")
    (data / "up").symlink_to(out)
    return tmp_path


# ---------------------------------------------------------------- reading


def test_load_outside_the_data_dir_is_one_error_whatever_is_there(served, tree):
    s = served(tree / "data")
    with s.client() as ws:
        assert ask(ws, 0, "install e e.ddp", source=ECHO)[0]["kind"] == "installed"
        paths = [
            "passwd.csv",                      # a symlink to /etc/passwd
            "link.csv",                        # a symlink to a file outside
            "up/secret.csv",                   # through a symlinked directory
            "dangling.csv",                    # a symlink to nothing outside
            str(tree / "outside/secret.csv"),  # absolute, existing
            str(tree / "outside/nothing.csv"),  # absolute, missing
            "../outside/secret.csv",           # `..`, existing
            "../outside/nothing.csv",          # `..`, missing
            "../data/good.csv",                # leaves and comes back: refused too
            "missing.csv",                     # inside, missing
            "sub.csv",                         # a directory
            "/etc/passwd.csv",
        ]
        for i, path in enumerate(paths):
            assert error_of(ws, i, f"load e 0 {path}") == f'load "{path}": {OUT_READ}', path
        # what is inside loads, by a relative or an absolute path
        assert ask(ws, "g", "load e 0 good.csv")[0]["rows"] == 2
        assert ask(ws, "a", f"load e 0 {tree / 'data' / 'good.csv'}")[0]["rows"] == 2
        assert ask(ws, "t", "tick")[0]["kind"] == "tick"
        assert ask(ws, "p", "peek echoed")[0]["total"] == 2  # nothing of the refused ones


def test_check_and_install_of_server_files_are_confined(served, tree):
    s = served(tree / "data")
    with s.client() as ws:
        for i, path in enumerate(["link.ddp", "up/secret.ddp", str(tree / "outside/secret.ddp"),
                                  "../outside/secret.ddp", "/etc/shadow", "/etc/nothing",
                                  "nothing.ddp"]):
            message = f'cannot read program file "{path}": {OUT_READ}'
            assert error_of(ws, ("c", i), f"check {path}") == message
            assert error_of(ws, ("i", i), f"install x{i} {path}") == message
            assert error_of(ws, ("r", i), f"reinstall x{i} {path}") == message
        # inside: as before
        assert ask(ws, "ok", "check prog.ddp") == [{"id": "ok", "kind": "checked",
                                                   "file": "prog.ddp"}]
        assert ask(ws, "in", "install p prog.ddp")[0]["kind"] == "installed"
        assert [r["name"] for r in ask(ws, "l", "list")[0]["programs"]] == ["p"]


def test_errors_never_quote_a_server_file(served, tree):
    data = tree / "data"
    (data / "bad.ddp").write_text(f"{SECRET} here;\n")
    (data / "calls.ddp").write_text(f'export "x" = input 0 | map($0 ; @{SECRET.replace("-", "_")}($0));\n')
    (data / "cells.csv").write_text(f"a,b:printed\n1,2\n3,{SECRET}(\n")
    (data / "ragged.csv").write_text(f"a,b\n1,2\n3,4,{SECRET}\n")
    (data / "header.csv").write_text(f"{SECRET},b\n1.5,1\n,2\n")
    (data / "big.csv").write_text("a\n99999999999999999999\n")
    bad_at = _located(f"install b {data / 'bad.ddp'}").split(": ")[0].split(":", 1)[1]
    calls_at = _located(f"install c {data / 'calls.ddp'}").split(": ")[0].split(":", 1)[1]
    s = served(data)
    with s.client() as ws:
        ask(ws, 0, "install e e.ddp", source=ECHO)
        for i, (line, message) in enumerate([
                ("check bad.ddp", f"bad.ddp:{bad_at}: {HIDDEN}"),
                ("install b bad.ddp", f"bad.ddp:{bad_at}: {HIDDEN}"),
                ("check calls.ddp", f"calls.ddp:{calls_at}: {HIDDEN}"),
                ("install c calls.ddp", f"calls.ddp:{calls_at}: {HIDDEN}"),
                ("load e 0 cells.csv",
                 'load "cells.csv": column 2, row 2: a cell that is not a value in the '
                 "printed form"),
                ("load e 0 cells.csv key=a,b",  # columns the client named keep their names
                 'load "cells.csv": column "b", row 2: a cell that is not a value in the '
                 "printed form"),
                ("load e 0 ragged.csv", 'load "ragged.csv": cannot read it as csv'),
                ("load e 0 header.csv", 'load "header.csv": column 1, row 2: a null, not a Float'),
                ("load e 0 header.csv key=nope", 'load "header.csv": key= names no column '
                                                 '"nope" (the file has 2 columns)'),
                ("load e 0 big.csv", 'load "big.csv": column 1, row 1: an Int that does not fit '
                                     "in a signed 64-bit integer"),
        ]):
            got = error_of(ws, i, line)
            assert got == message, line
            assert SECRET not in got and "9999" not in got
        # the client's own text is its own: errors in it are quoted as ever
        got = error_of(ws, "src", "check bad.ddp", source=f"{SECRET} here;\n")
        assert got.startswith(f"bad.ddp:{bad_at}: ") and HIDDEN not in got
    # local use is the user's own: a script still gets the full message
    script = tree / "local.txt"
    script.write_text(f"install e {data / 'prog.ddp'}\nload e 0 {data / 'cells.csv'}\n")
    r = subprocess.run(PY + [str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert SECRET in r.stdout + r.stderr


def _located(line: str) -> str:
    """The local (unconfined) message of a located program error, whose
    ``file:line:col`` a network client gets too (the file is named
    absolutely here)."""
    r = subprocess.run(PY, input=line + "\n", cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    message = (r.stdout + r.stderr).strip().removeprefix("error: <stdin>:1: ")
    file = line.split()[-1]
    assert message.startswith(file + ":"), message
    return message.removeprefix(os.path.dirname(file) + "/")


# ---------------------------------------------------------------- writing


def test_save_outside_is_refused_and_keeps_modes(served, tree):
    data, out = tree / "data", tree / "outside"
    (data / "kept.csv").write_text("old\n")
    os.chmod(data / "kept.csv", 0o600)
    s = served(data, umask=0o027)
    with s.client() as ws:
        ask(ws, 0, "install e e.ddp", source=ECHO)
        ask(ws, 1, "feed e 0 1,2")
        ask(ws, 2, "tick")
        for i, path in enumerate(["wlink.csv", "up/target.csv", str(out / "target.csv"),
                                  "../outside/target.csv", "../outside/new.csv",
                                  str(out / "new.csv"), "dangling.csv", "nodir/x.csv",
                                  "sub.csv", "../data/x.csv"]):
            assert error_of(ws, i, f"save echoed {path}") == f'save "{path}": {OUT_WRITE}', path
        assert (out / "target.csv").read_text() == "keep,me\n1,2\n"
        assert stat.S_IMODE(os.stat(out / "target.csv").st_mode) == 0o600
        assert sorted(os.listdir(out)) == ["secret.csv", "secret.ddp", "target.csv"]
        # inside: a 0600 file stays 0600; a new one gets 0666 & ~umask (027: 0640)
        assert ask(ws, 3, "save echoed kept.csv")[-1]["kind"] == "saved"
        assert stat.S_IMODE(os.stat(data / "kept.csv").st_mode) == 0o600
        assert (data / "kept.csv").read_text() == '"key_0","key_1","diff"\n1,2,1\n'
        assert ask(ws, 4, "save echoed fresh.parquet")[-1]["kind"] == "saved"
        assert stat.S_IMODE(os.stat(data / "fresh.parquet").st_mode) == 0o640
        # the server's umask is what it was (nothing set it to 0, even for a moment)
        status = open(f"/proc/{s.proc.pid}/status").read()
        assert "Umask:\t0027" in status


def test_no_code_path_changes_the_umask(tmp_path, monkeypatch):
    """`save` and `checkpoint` (here in process, the way a program that runs
    ddir.Server in a thread would) never call os.umask: it is process-wide,
    and setting it to 0 for a moment races with every other thread."""
    def umask(mask):
        raise AssertionError("os.umask was called")
    with ddir.Server() as s:
        s.install("e", source=ECHO)
        s.feed("e", 0, (1, 2))
        s.tick()
        monkeypatch.setattr(os, "umask", umask)
        s.save("echoed", str(tmp_path / "a.csv"))
        s.save("echoed", str(tmp_path / "a.csv"))  # replacing
        s.checkpoint(str(tmp_path / "snap"))
        s.checkpoint(str(tmp_path / "snap"))
    monkeypatch.undo()
    assert (tmp_path / "snap" / "manifest.json").exists()


def _public(data):
    """A web app's directory with a manifest.json of its own."""
    pub = data / "public"
    (pub / "img").mkdir(parents=True)
    (pub / "manifest.json").write_text('{"name": "my app"}')
    (pub / "index.html").write_text("<html>")
    (pub / "img" / "logo.png").write_bytes(b"png")
    return pub


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_checkpoint_replaces_only_a_checkpoint(served, tree):
    data = tree / "data"
    pub = _public(data)
    before = _files(pub)
    # a ddir manifest with something else beside it is not a checkpoint either
    mixed = data / "mixed"
    mixed.mkdir()
    (mixed / "manifest.json").write_text('{"format": "ddir-checkpoint"}')
    (mixed / "notes.txt").write_text("mine")
    # the siblings a checkpoint uses are removed only when they hold a checkpoint's files
    (data / ".snap2.tmp").mkdir()
    (data / ".snap2.tmp" / "work.txt").write_text("mine")
    s = served(data)
    with s.client() as ws:
        ask(ws, 0, "install e e.ddp", source=ECHO)
        for i, name in enumerate(["public", "mixed"]):
            assert error_of(ws, i, f"checkpoint {name}") == (
                f'checkpoint "{name}": is a directory that holds no checkpoint (refusing to '
                "replace it)")
        assert error_of(ws, 2, "checkpoint snap2") == (
            'checkpoint "snap2": ".snap2.tmp" beside it is not a checkpoint\'s (refusing to '
            "remove it)")
        for i, path in enumerate(["../outside/snap", str(tree / "outside" / "snap"), "up/snap",
                                  "up", "nodir/snap", "good.csv", "."]):
            assert error_of(ws, (3, i), f"checkpoint {path}") == (
                f'checkpoint "{path}": {OUT_DIR}')
        # a real checkpoint is written, and replaced (its mode kept)
        assert ask(ws, 4, "checkpoint snap")[0]["kind"] == "checkpoint"
        os.chmod(data / "snap", 0o700)
        ask(ws, 5, "feed e 0 1,2")
        ask(ws, 6, "tick")
        assert ask(ws, 7, "checkpoint snap")[0]["epoch"] == 1
        assert stat.S_IMODE(os.stat(data / "snap").st_mode) == 0o700
    assert _files(pub) == before and (pub / "index.html").read_text() == "<html>"
    assert (mixed / "notes.txt").read_text() == "mine"
    assert (data / ".snap2.tmp" / "work.txt").read_text() == "mine"
    assert sorted(os.listdir(tree / "outside")) == ["secret.csv", "secret.ddp", "target.csv"]
    # local use (a script) refuses the web app's directory too
    script = tree / "local.txt"
    script.write_text(f"checkpoint {pub}\n")
    r = subprocess.run(PY + [str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "holds no checkpoint (refusing to replace it)" in r.stdout + r.stderr
    assert _files(pub) == before


# ---------------------------------------------------------------- code


def test_reinstall_functions_from_the_network_is_refused(served, tree):
    data = tree / "data"
    marker = tree / "imported"
    (data / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    s = served(data, "--functions", FN)
    with s.client() as ws:
        for i, module in enumerate(["evil.py", str(data / "evil.py"), "evil", "os",
                                    "tests.fn_module", "fn_module", FN + "c"]):
            assert error_of(ws, i, f"reinstall p functions={module}") == (
                f"functions={module}: a network client cannot make the server import Python "
                "code (only the server's own --functions module may be named)")
        # exactly the operator's module passes (and the registry answers as ever)
        assert error_of(ws, 9, f"reinstall p functions={FN}") == \
            'no program named "p"'
    assert not marker.exists()
    plain = served(data)  # without --functions nothing may be named
    with plain.client() as ws:
        assert error_of(ws, 1, f"reinstall p functions={FN}").startswith(
            f"functions={FN}: a network client cannot")
    assert not marker.exists()


def test_reinstall_functions_policy_on_a_read_only_program(tmp_path):
    """What the server runs for a network client's line (parse_command with
    the serve's DataDir) refuses to import a module into a server holding a
    read-only program; the operator's module makes it live; locally (a
    script, the API) any module may be named."""
    from ddir.server.confine import DataDir
    fn = str(ROOT / "tests" / "fn_module.py")
    snap = str(tmp_path / "snap")
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with ddir.Server(functions=fn) as s:
        s.install("p", source='export "scored" = input 0 | map($0 ; @score($0[0]));\n')
        s.checkpoint(snap)
    with ddir.Server.restore(snap) as s:
        assert s.list()["programs"][0]["readonly"]
        policy = DataDir(str(tmp_path), fn)
        with pytest.raises(ddir.DdirError, match="cannot make the server import Python code"):
            C.parse_command(f"reinstall p functions={evil}", paths=policy)
        assert not marker.exists()
        s.execute(C.parse_command(f"reinstall p functions={fn}", paths=policy))
        assert "readonly" not in s.list()["programs"][0]
    with ddir.Server.restore(snap) as s:  # local: the user's own process
        with pytest.raises(ddir.DdirError):
            s.execute(C.parse_command(f"reinstall p functions={evil}"))
        assert marker.exists()


# ---------------------------------------------------------------- a second user


def _as_nobody():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as a second user")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_a_second_user_cannot_read_or_overwrite_roots_files_through_the_server():
    """The server runs as root with a shared data directory (mode 1777);
    `nobody` cannot read root's 0600 file in a 0700 directory, so it links
    to it from the data directory and asks the server (as a network
    client, itself running as nobody) to load it, check it, save over it."""
    nobody = _as_nobody()
    base = tempfile.mkdtemp(prefix="ddir-confine-")
    try:
        os.chmod(base, 0o755)
        data, private = os.path.join(base, "data"), os.path.join(base, "private")
        os.mkdir(data)
        os.chmod(data, 0o1777)
        os.mkdir(private, 0o700)
        secret = os.path.join(private, "secret.csv")
        with open(secret, "w") as f:
            f.write(f"a\n{SECRET}\n")
        os.chmod(secret, 0o600)
        probe = subprocess.run(nobody + ["cat", secret], capture_output=True, text=True)
        assert probe.returncode != 0  # nobody cannot read it directly
        for name in ("steal.csv", "steal.ddp", "clobber.csv"):
            subprocess.run(nobody + ["ln", "-s", secret, os.path.join(data, name)], check=True)
        s = Served(data)
        try:
            client = textwrap.dedent(f"""
                import json
                from websockets.sync.client import connect
                out = []
                with connect({s.url!r}, open_timeout=10) as ws:
                    for i, line in enumerate(["install e e.ddp", "load e 0 steal.csv",
                                              "check steal.ddp", "load e 0 {secret}",
                                              "tick", "save echoed clobber.csv",
                                              "save echoed {secret}"]):
                        msg = {{"id": i, "line": line}}
                        if i == 0:
                            msg["source"] = {ECHO!r}
                        ws.send(json.dumps(msg))
                        while True:
                            r = json.loads(ws.recv(timeout=30))
                            if r["kind"] == "done":
                                break
                            out.append(r)
                print(json.dumps(out))
            """)
            r = subprocess.run(nobody + [sys.executable, "-c", client], cwd=base,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            records = json.loads(r.stdout)
        finally:
            assert s.stop() == 0
        errors = [x["message"] for x in records if x["kind"] == "error"]
        assert errors == [f'load "steal.csv": {OUT_READ}',
                          f'cannot read program file "steal.ddp": {OUT_READ}',
                          f'load "{secret}": {OUT_READ}',
                          f'save "clobber.csv": {OUT_WRITE}',
                          f'save "{secret}": {OUT_WRITE}']
        assert SECRET not in r.stdout
        with open(secret) as f:
            assert f.read() == f"a\n{SECRET}\n"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        assert os.path.islink(os.path.join(data, "clobber.csv"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
