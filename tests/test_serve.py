"""`ddir serve` and `ddir connect` (SPEC C3) with real websockets clients
against a real server process (plus, for the subscriber queue's bookkeeping,
a real websockets server in this process with a stand-in subscription hook)."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import ROOT

PY = [sys.executable, "-m", "ddir"]
ECHO = 'export "echoed" = input 0;\n'


class Served:
    def __init__(self, *args, cwd=None, **popen):
        self.proc = subprocess.Popen(PY + ["serve", "--port", "0", *args], cwd=cwd or ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     **popen)
        line = self.proc.stderr.readline()
        assert "serving on ws" in line, line + self.proc.stderr.read()
        self.url = line.split()[-1]
        self.token = None
        if "--no-token" not in args:  # SPEC E1: a token always, kept for local clients
            line = self.proc.stderr.readline()
            assert "token kept in " in line, line
            path = line.split("token kept in ")[1].split(" (")[0]
            with open(path) as f:
                self.token = f.read().strip()

    def client(self, token=..., **kw):
        token = self.token if token is ... else token
        headers = dict(kw.pop("additional_headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return connect(self.url, additional_headers=headers or None, open_timeout=10, **kw)

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
    """Send one request; its records (ids checked) up to its done."""
    ws.send(json.dumps({"id": req_id, "line": line, **extra}))
    return replies(ws, req_id)


def replies(ws, req_id):
    out = []
    while True:
        obj = json.loads(ws.recv(timeout=30))
        assert obj["id"] == req_id, (obj, req_id)
        if obj["kind"] == "done":
            return out
        out.append(obj)


def test_concurrent_clients_interleave_in_one_history(served):
    s = served("-w", "2")
    with s.client() as ws:
        assert ask(ws, "i", "install e x.ddp", source=ECHO) == [
            {"id": "i", "kind": "installed", "name": "e"}]
    n, k = 4, 15
    results = {}

    def run(c):
        with s.client() as ws:
            # pipelined: everything is sent before anything is read
            for j in range(k):
                ws.send(json.dumps({"id": [c, j, "f"], "line": f"feed e 0 {c},{j}"}))
                ws.send(json.dumps({"id": [c, j, "t"], "line": "tick"}))
            got = []
            for j in range(k):
                assert replies(ws, [c, j, "f"]) == []
                got.append(replies(ws, [c, j, "t"]))
            results[c] = got

    threads = [threading.Thread(target=run, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    epochs = sorted(r[-1]["epoch"] for got in results.values() for r in got)
    assert epochs == list(range(1, n * k + 1))  # one sequencer: every tick its own epoch
    for got in results.values():  # each client's ticks in its own order
        assert [r[-1]["epoch"] for r in got] == sorted(r[-1]["epoch"] for r in got)
    with s.client() as ws:
        (peek,) = ask(ws, 7, "peek echoed")
        assert peek["total"] == n * k and peek["offset"] == 0
        assert sorted(tuple(r[0]) for r in peek["rows"]) == [(c, j) for c in range(n)
                                                              for j in range(k)]


def test_records_ids_errors_and_exit(served):
    s = served()
    with s.client() as ws:
        assert ask(ws, {"any": ["json"]}, "feed nope 0 1") == [
            {"id": {"any": ["json"]}, "kind": "error", "message": 'no program named "nope"'}]
        assert ask(ws, None, "# a comment") == []
        (help_,) = ask(ws, 3, "help tick")
        assert help_["kind"] == "help" and help_["commands"][0]["name"] == "tick"
        assert ask(ws, 4, "exit") == []
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with s.client() as ws:  # the server goes on
        assert ask(ws, 5, "list")[0]["epoch"] == 0


SECRET = "s3cret-of-20-chars-x"


def token_file(tmp_path, text=SECRET, mode=0o600):
    path = tmp_path / "tok"
    path.write_text(text + "\n")
    path.chmod(mode)
    return str(path)


def test_tokens(served, tmp_path):
    s = served("--token-file", token_file(tmp_path))
    for token in (None, "wrong", SECRET + "2"):
        with pytest.raises(InvalidStatus) as e:
            s.client(token)
        assert e.value.response.status_code == 401
    with s.client(SECRET) as ws:
        assert ask(ws, 1, "list")[0]["kind"] == "list"


def test_non_loopback_host_needs_a_token(tmp_path):
    r = subprocess.run(PY + ["serve", "--host", "0.0.0.0", "--port", "0", "--no-token"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--no-token is for a loopback address only" in r.stderr
    r = subprocess.run(PY + ["serve", "--token-file", token_file(tmp_path, "  ")], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "must hold one token" in r.stderr


def test_malformed_frames_keep_the_connection(served):
    s = served()
    with s.client(max_size=None) as ws:
        def error_then_done(payload, req_id=None):
            ws.send(payload)
            first, done = json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))
            assert first["kind"] == "error" and first["id"] == req_id
            assert done == {"id": req_id, "kind": "done"}
            return first["message"]

        assert "not valid JSON" in error_then_done("feed e 0 1")
        assert "JSON object" in error_then_done("[1, 2]")
        assert 'no "line"' in error_then_done(json.dumps({"id": 9}), 9)
        assert 'no "line"' in error_then_done(json.dumps({"id": 8, "line": 5}), 8)
        assert "line breaks" in error_then_done(json.dumps({"id": 7, "line": "list\ntick"}), 7)
        assert "binary" in error_then_done(b"\x00\x01")
        assert "over the limit" in error_then_done(json.dumps({"id": 1, "line": "x" * (1 << 20)}))
        assert "goes with `install`" in ask(ws, 2, "tick", source="x")[0]["message"]
        # the limit is in UTF-8 bytes: 600k two-byte characters are over it
        assert "bytes is over the limit" in error_then_done("\u00e9" * 600_000)
        assert "over the limit" in error_then_done("x" * (3 << 20))  # still an error record
        assert ask(ws, 3, "list")[0]["kind"] == "list"  # still usable
        # SPEC E3: far past the limit, refused from the frame's header before it is
        # buffered whole: websockets closes (1009)
        ws.send("x" * (5 << 20))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1009
    with s.client() as ws:
        assert ask(ws, 4, "list")[0]["kind"] == "list"


def test_remote_install_with_source(served, tmp_path):
    s = served("--data-dir", str(tmp_path))  # a network client's checkpoint lies in it (SPEC E2)
    with s.client() as ws:
        # the name does not exist on the server: the text is what counts
        assert ask(ws, 1, "install a nowhere/app.ddir",
                   source='export "app" = MAP(INPUT 0, ($0[0] ;));\n')[0]["kind"] == "installed"
        (err,) = ask(ws, 2, "install b nowhere/bad.ddp", source="let = ;")
        assert err["kind"] == "error" and err["message"].startswith("nowhere/bad.ddp:1:")
        assert ask(ws, 3, "check z.ddp", source=ECHO) == [{"id": 3, "kind": "checked",
                                                           "file": "z.ddp"}]
        assert ask(ws, 4, "feed a 0 5,6")== []
        assert [r["kind"] for r in ask(ws, 5, "tick")] == ["tick"]
        assert ask(ws, 6, "peek app")[0]["rows"] == [[[5], [], 1]]
        # the text sent is what a checkpoint keeps (SPEC C5: the manifest has the source)
        assert ask(ws, 7, f"checkpoint {tmp_path / 'snap'}")[0]["kind"] == "checkpoint"
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert manifest["programs"][0]["source"] == 'export "app" = MAP(INPUT 0, ($0[0] ;));\n'


def test_killed_client_does_not_hurt_others(served):
    s = served("-w", "2")
    with s.client() as ws:
        ask(ws, 0, "install g big.ddp",
            source='export "big" = import "iota:200000";\n')
    killer = subprocess.Popen([sys.executable, "-c", f"""
import json, os, signal
from websockets.sync.client import connect
ws = connect({s.url!r}, additional_headers={{"Authorization": "Bearer {s.token}"}})
ws.send(json.dumps({{"id": 1, "line": "peek big"}}))
ws.send(json.dumps({{"id": 2, "line": "tick"}}))
os.kill(os.getpid(), signal.SIGKILL)
"""])
    killer.wait(timeout=30)
    with s.client() as ws:  # answered: nothing waits on the dead client's socket
        assert ask(ws, 1, "list")[0]["kind"] == "list"
        assert ask(ws, 2, "peek big limit=1")[0]["total"] == 200000
    assert s.proc.poll() is None


def test_sigterm_stops_the_server_and_its_workers(served):
    s = served("-w", "3")
    children = open(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read().split()
    assert len(children) == 3
    with s.client() as ws:
        ask(ws, 1, "list")
    assert s.stop() == 0
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{c}") for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # (zombies of a reaped parent are gone at once)
    assert not any(os.path.exists(f"/proc/{c}/status") and "zombie" not in
                   open(f"/proc/{c}/status").read() for c in children)


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigint_stops_the_server_and_its_workers(served, to):
    """SIGINT to the server alone (`kill -INT`), or to its process group as
    Ctrl-C in a terminal sends it (the workers get it too and ignore it)."""
    s = served("-w", "2", start_new_session=True)
    children = open(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read().split()
    assert len(children) == 2
    with s.client() as ws:
        ask(ws, 1, "install e e.ddp", source=ECHO)
        ask(ws, 2, "feed e 0 1")
        assert ask(ws, 3, "tick")[-1]["epoch"] == 1
        if to == "process":
            s.proc.send_signal(signal.SIGINT)
        else:
            os.killpg(s.proc.pid, signal.SIGINT)
        assert s.proc.wait(timeout=20) == 0, s.proc.stderr.read()
        with pytest.raises(ConnectionClosed):  # the connection is closed, not left hanging
            ws.recv(timeout=10)
    assert "Traceback" not in s.proc.stderr.read()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{c}") for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{c}/status") and "zombie" not in
                   open(f"/proc/{c}/status").read() for c in children)


def test_scripts_run_before_serving(served):
    s = served("sessions/shared_trace.txt")
    with s.client() as ws:
        assert ask(ws, 1, "list")[0]["epoch"] == 3
    s.stop()
    assert s.proc.stdout.read().startswith('installed "prod"\ninstalled "reach"\n')


def test_a_startup_scripts_subscription_reports_on_the_servers_stdout(served, tmp_path):
    """Its changes are the script's output (stdout), never a record of the
    client whose tick made them; that client cannot end it."""
    (tmp_path / "e.ddp").write_text(ECHO)
    (tmp_path / "s.txt").write_text("install e e.ddp\nfeed e 0 1\ntick\nsubscribe echoed\n")
    s = served(str(tmp_path / "s.txt"))
    with s.client() as ws:
        assert ask(ws, 1, "feed e 0 2") == []
        assert [r["kind"] for r in ask(ws, 2, "tick")] == ["tick"]
        assert ask(ws, 3, "unsubscribe echoed")[0]["kind"] == "error"
        assert [r["kind"] for r in ask(ws, 4, "drop e")] == ["dropped"]
    s.stop()
    assert s.proc.stdout.read().endswith(
        'subscribed "echoed" at epoch 1 (1 rows)\n  {echoed} (1) ; ()  x1\n'
        '  {echoed} (2) ; ()  @1  +1\nsubscription "echoed" ended: its producer was dropped\n')


def test_a_dead_worker_is_told_to_every_client(tmp_path):
    """SPEC B: a worker that dies is reported; under serve every client gets
    the error record and a close frame (1011), and the server exits 3."""
    s = Served("-w", "3")
    try:
        with s.client() as ws:
            assert ask(ws, 1, "list")[0]["kind"] == "list"
            kids = subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            os.kill(int(kids[-1]), signal.SIGKILL)
            record = json.loads(ws.recv(timeout=20))
            assert record["id"] is None and record["kind"] == "error"
            assert "died" in record["message"] and record["message"].endswith("the server stops")
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=10)
            assert e.value.rcvd.code == 1011
        assert s.proc.wait(timeout=20) == 3
        # on the server's stderr, where it reports, not among the scripts' output
        out, err = s.proc.stdout.read(), s.proc.stderr.read()
        assert "died" not in out and "error: worker " in err and "the server stops" in err
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_a_cursor_pages_on_after_its_client_reconnects(served):
    """SPEC C4: the token is self-contained, so a client whose connection
    dropped goes on paging on a new one, as of the first page's epoch, while
    others tick in between; the lease outlives the connection (it ends only
    unused or with a drop)."""
    s = served("-w", "2")
    edges = 'export "edges" = input 0 | key($0[0] ; $0[1]);\n'
    with s.client() as a:
        ask(a, 1, "install prod p.ddp", source=edges)
        for i in range(10):
            ask(a, [2, i], f"feed prod 0 {i},{i}")
        ask(a, 3, "tick")
        (whole,) = ask(a, 4, "peek edges")
        (first,) = ask(a, 5, "peek edges limit=3")
    with s.client() as b:  # a is gone; b changes the trace and ticks
        for i in range(10):
            ask(b, [6, i], f"feed prod 0 {i},{i} diff=-1")
        ask(b, 7, "tick")
    with s.client() as a:
        rows, token = first["rows"], first["cursor"]
        while token:
            (page,) = ask(a, 8, f"peek edges cursor={token} limit=4")
            rows += page["rows"]
            token = page.get("cursor")
        assert rows == whole["rows"] and len(rows) == 10
        (now,) = ask(a, 9, "peek edges")
        assert now["rows"] == []


def test_serve_with_functions(served):
    """`ddir serve --functions MODULE`: every client's programs may call the
    module's functions (in the workers too, -w 2); `check` and `install`
    refuse an @name the server was not given, located; a module that cannot
    be imported stops the start with one error line."""
    s = served("-w", "2", "--functions", "tests/fn_module.py")
    with s.client() as ws:
        prog = 'export "scored" = input 0 | map($0[0] ; @score($0[0]));\n'
        assert ask(ws, 1, "check s.ddp", source=prog) == [{"id": 1, "kind": "checked",
                                                           "file": "s.ddp"}]
        (err,) = ask(ws, 2, "check bad.ddp", source=prog.replace("@score", "@nope"))
        assert err["kind"] == "error" and err["message"].startswith(
            "bad.ddp:1:41: unknown function `@nope`: the functions given (fn_module) are @")
        (err,) = ask(ws, 3, "install b bad.ddp", source=prog.replace("@score", "@nope"))
        assert err["message"].startswith("bad.ddp:1:41: unknown function `@nope`")
        assert ask(ws, 4, "install s s.ddp", source=prog)[0]["kind"] == "installed"
        for i in range(4):
            ask(ws, [5, i], f"feed s 0 {i}")
        ask(ws, 6, "tick")
        assert ask(ws, 7, "peek scored")[0]["rows"] == [[[i], [i * 10 + 1], 1] for i in range(4)]
    r = subprocess.run(PY + ["serve", "--port", "0", "--functions", "tests/nowhere.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr == 'error: cannot import functions from "tests/nowhere.py": no such file\n'
    plain = served()  # without --functions, check says what install would
    with plain.client() as ws:
        (err,) = ask(ws, 1, "check s.ddp", source=prog)
        assert "unknown function `@score`: no functions were given" in err["message"]


# ---------------------------------------------------------------- ddir connect

SCRIPT = """install p prog.ddp
subscribe echoed
feed p 0 1,2
feed p 0 (3,[4])
feed p 0 #2(1,2) val=7
tick
subscribe echoed 1,2
feed p 0 1,2 diff=2
tick
unsubscribe echoed
peek echoed
peek echoed 1,2
bogus
install q missing.ddp
list
help peek
"""


def test_connect_with_piped_stdin_prints_what_ddir_prints(served, tmp_path):
    (tmp_path / "prog.ddp").write_text('export "echoed" = input 0 | inspect(seen);\n')
    s = served()  # its working directory is ROOT: prog.ddp is read by the client
    local = subprocess.run(PY, input=SCRIPT, capture_output=True, text=True, cwd=tmp_path,
                           timeout=60)
    remote = subprocess.run(PY + ["connect", s.url], input=SCRIPT, capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert 'peek "echoed" (3 rows)' in remote.stdout and "{echoed} (1, 2) ; ()  @1  +2" in remote.stdout and "error: <stdin>:13:" in remote.stdout
    r = subprocess.run(PY + ["connect", "ws://127.0.0.1:1"], input="list\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot connect" in r.stderr


def test_connect_token_refused(served, tmp_path):
    s = served("--token-file", token_file(tmp_path))
    elsewhere = {**os.environ, "DDIR_RUNTIME_DIR": str(tmp_path / "other")}  # finds no token
    r = subprocess.run(PY + ["connect", s.url], input="list\n", capture_output=True, text=True,
                       timeout=30, env=elsewhere)
    assert r.returncode == 2 and "HTTP 401 (a token is needed" in r.stderr
    (tmp_path / "wrong").write_text("x" * 20)
    (tmp_path / "wrong").chmod(0o600)
    r = subprocess.run(PY + ["connect", s.url, "--token-file", str(tmp_path / "wrong")],
                       input="list\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "HTTP 401 (the token in " in r.stderr and "was refused" in r.stderr
    r = subprocess.run(PY + ["connect", s.url, "--token-file", str(tmp_path / "tok"), "--json"],
                       input="list\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "list"
    # SPEC E1: on the server's machine, no flags: the token the server keeps is found
    r = subprocess.run(PY + ["connect", s.url, "--json"], input="list\n", capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "list"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_connect_in_a_real_terminal(served, tmp_path):
    from test_repl import Terminal
    s = served()
    with s.client() as ws:
        ask(ws, 1, "install gen g.ddp", source='export "bigtrace" = import "iota:120";\n')
    (tmp_path / "prog.ddp").write_text('export "echoed" = input 0;\n')
    t = Terminal(str(tmp_path / "hist"), "connect", s.url)
    try:
        t.keys(f"install p {tmp_path / 'prog.ddp'}", "Enter")
        t.wait_for('installed "p"')
        t.keys("tick", "Enter")
        t.wait_for("ddir [1]>")
        t.keys("peek bi", "Tab", "Enter")  # a remote trace name completes
        screen = t.wait_for("more rows", "error")
        assert 'peek "bigtrace" (120 rows):' in screen
        assert "... 70 more rows (peek bigtrace offset=50)" in screen
        t.keys("subscribe ech", "Tab", "Enter")  # completion again, of the new trace
        t.wait_for('subscribed "echoed" at epoch 1 (0 rows)')
        with s.client() as ws:  # another client's tick shows at the waiting prompt
            ask(ws, 2, "feed p 0 7,8")
            ask(ws, 3, "tick")
        screen = t.wait_for("{echoed} (7, 8) ; ()  @1  +1")
        assert "error" not in screen
    finally:
        t.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_connects_prompt_follows_other_clients_and_notices_a_stop(served, tmp_path):
    """Issue 26, item 7: the epoch in `connect`'s prompt followed only this
    client's own commands, and a server that stopped was noticed at the
    next command only."""
    from test_repl import Terminal
    s = served()
    with s.client() as ws:
        ask(ws, 1, "install e e.ddp", source=ECHO)
    t = Terminal(str(tmp_path / "hist"), "connect", s.url, ";", "echo", "exit=$?", ";",
                 "sleep", "30")
    try:
        with s.client() as ws:  # another client ticks twice; nobody types
            ask(ws, 2, "tick")
            ask(ws, 3, "tick")
        t.wait_for("ddir [2]>", timeout=15)
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=20)
        screen = t.wait_for("exit=3", timeout=15)  # nobody typed a thing
        assert "error: the connection to the server was lost" in screen
    finally:
        t.close()


# ---------------------------------------------------------------- subscriptions


def test_subscriptions_are_pushed_to_the_subscriber_tagged_with_its_id(served):
    s = served("-w", "2")
    with s.client() as a, s.client() as b:
        ask(a, 1, "install e e.ddp", source=ECHO)
        ask(a, 2, "feed e 0 1,1")
        ask(a, 3, "tick")
        (sub,) = ask(b, "sub", "subscribe echoed")
        assert sub == {"id": "sub", "kind": "subscribed", "trace": "echoed", "epoch": 1,
                       "rows": [[[1, 1], [], 1]]}
        (keyed,) = ask(b, "key", "subscribe echoed 2,2")
        assert keyed["rows"] == [] and keyed["key"] == [2, 2]
        ask(a, 4, "feed e 0 2,2")
        ask(a, 5, "feed e 0 1,1 diff=-1")
        assert [r["kind"] for r in ask(a, 6, "tick")] == ["tick"]  # a is not subscribed
        pushed = [json.loads(b.recv(timeout=10)) for _ in range(2)]
        assert sorted(pushed, key=lambda r: r["id"]) == [
            {"id": "key", "kind": "change", "trace": "echoed", "epoch": 1,
             "rows": [[[2, 2], [], 1]]},
            {"id": "sub", "kind": "change", "trace": "echoed", "epoch": 1,
             "rows": [[[1, 1], [], -1], [[2, 2], [], 1]]}]
        assert ask(b, 7, "unsubscribe echoed") == [{"id": 7, "kind": "unsubscribed",
                                                    "trace": "echoed"}]
        (again,) = ask(b, "s2", "subscribe echoed")
        assert again["rows"] == [[[2, 2], [], 1]]  # replay = peek, also when late
        assert ask(a, 8, "drop e") == [{"id": 8, "kind": "dropped", "name": "e"}]
        assert json.loads(b.recv(timeout=10)) == {
            "id": "s2", "kind": "ended", "trace": "echoed",
            "reason": "its producer was dropped"}
        assert ask(b, 9, "list")[0]["traces"] == []


def test_a_ticking_subscriber_gets_the_clis_order_on_the_wire(served, tmp_path):
    """The records of one tick reach its own subscriber in the order
    `ddir --json` prints them: inspect events, changes, tick, then done;
    a drop's `ended` follows its `dropped`."""
    s = served()
    program = 'export "echoed" = input 0 | inspect(seen);\n'
    with s.client() as ws:
        ask(ws, 1, "install p p.ddp", source=program)
        ask(ws, "sub", "subscribe echoed")
        ask(ws, 2, "feed p 0 1")
        ws.send(json.dumps({"id": 3, "line": "tick"}))
        wire = [json.loads(ws.recv(timeout=30)) for _ in range(4)]
        assert [(r["id"], r["kind"]) for r in wire] == [
            (3, "inspect"), ("sub", "change"), (3, "tick"), (3, "done")]
        ws.send(json.dumps({"id": 4, "line": "drop p"}))
        wire = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
        assert [(r["id"], r["kind"]) for r in wire] == [
            (4, "dropped"), ("sub", "ended"), (4, "done")]
    script = tmp_path / "s.txt"
    (tmp_path / "p.ddp").write_text(program)
    script.write_text("install p p.ddp\nsubscribe echoed\nfeed p 0 1\ntick\ndrop p\n")
    cli = subprocess.run([sys.executable, "-m", "ddir", "--json", str(script)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    kinds = [json.loads(line)["kind"] for line in cli.stdout.splitlines()]
    assert kinds == ["installed", "subscribed", "inspect", "change", "tick", "dropped", "ended"]


def subscriber_streams(served, workers: str) -> tuple:
    """What two subscribers receive over the wire (records, ids and all)
    while another client grows and shrinks the edges under reach over 8
    ticks: one from the start, one late and by key; and the final peek."""
    s = served("-w", workers)
    producer = (ROOT / "programs/producer.ddp").read_text()
    reach = (ROOT / "programs/reach_import.ddp").read_text()
    with s.client() as a, s.client() as b, s.client() as c:
        ask(a, 1, "install prod producer.ddp", source=producer)
        ask(a, 2, "install reach reach_import.ddp", source=reach)
        ask(a, 3, "feed reach 0 1")
        early = ask(b, "s", "subscribe reachable")
        for epoch in range(8):
            for i in range(epoch, epoch + 6):
                ask(a, [4, epoch, i], f"feed prod 0 {i},{(i * 7) % 13}")
            if epoch % 3 == 2:
                ask(a, [5, epoch], f"feed prod 0 {epoch},{(epoch * 7) % 13} diff=-1")
            ask(a, [6, epoch], "tick")
            if epoch == 4:
                late = ask(c, "k", "subscribe reachable 5")
        streams = []
        for ws, got in ((b, early), (c, late)):
            # one sequencer: every push of a's ticks is queued before this reply
            ws.send(json.dumps({"id": "end", "line": "list"}))
            while (obj := json.loads(ws.recv(timeout=30)))["id"] != "end":
                got.append(obj)
            streams.append(got)
        (final,) = ask(a, 7, "peek reachable")
    return streams, final


def test_subscribers_get_the_same_stream_from_1_and_3_workers(served):
    one, final = subscriber_streams(served, "1")
    three, final3 = subscriber_streams(served, "3")
    assert one == three and final == final3
    early, late = one
    assert [r["kind"] for r in early] == ["subscribed"] + ["change"] * (len(early) - 1)
    assert len(early) >= 5 and late[0]["epoch"] == 5 and len(late) >= 2
    total: dict = {}  # replay + every change = the final peek
    for r in early:
        for k, v, d in r["rows"]:
            total[json.dumps([k, v])] = total.get(json.dumps([k, v]), 0) + d
    assert {k: d for k, d in total.items() if d} == {json.dumps([k, v]): d
                                                     for k, v, d in final["rows"]}


# ---------------------------------------------------------------- the subscriber queue


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# each tick moves "wide" from key i-1 to key i: a change record of 2,000 rows, ~640 KB of JSON
WIDE = ('let n = import "iota:1000" | key(; $0);\n'
        'export "wide" = input 0 | key(; $0) | join(n, ($1[0], $2[0] ; %s));\n'
        % ", ".join(["1234567890123"] * 20))


def test_a_subscriber_that_never_reads_is_ended_alone_by_the_real_server(served):
    """A real `ddir serve` and its registry: one client subscribes and then
    reads nothing (its socket's receive buffer small, its websockets client
    holding at most one frame), another ticks 150 times, ~100 MB of changes
    for the subscriber. Once the kernel's buffers are full its queue (5
    records here) overflows: the subscription ends on the server, the
    ticking client never waits on it, and the server's memory stays flat.
    When the subscriber finally reads it gets the changes that had left the
    server, in order, then one error record, and nothing after it."""
    s = served("--subscriber-queue", "5")
    port = int(s.url.rsplit(":", 1)[1])
    with s.client() as fast:
        assert ask(fast, 1, "install w w.ddp", source=WIDE)[0]["kind"] == "installed"
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        with connect(s.url, sock=sock, max_queue=1, max_size=None, ping_interval=None,
                     compression=None, open_timeout=10,
                     additional_headers={"Authorization": f"Bearer {s.token}"}) as slow:
            assert ask(slow, "sub", "subscribe wide")[0]["kind"] == "subscribed"
            # from here on `slow` reads nothing until the ticks are over
            before = rss_mb(s.proc.pid)
            rss = {}
            # every command of the ticking client is answered although the
            # subscriber's socket is full: nothing waits on it (the delay
            # itself is measured in bench/serve.py)
            for i in range(150):
                lines = [f"feed w 0 {i}"] + ([f"feed w 0 {i - 1} diff=-1"] if i else [])
                for line in lines + ["tick"]:
                    got = ask(fast, [i, line], line)
                    assert not [r for r in got if r["kind"] == "error"], got
                if i % 25 == 24:
                    rss[i + 1] = rss_mb(s.proc.pid)
            # bounded: ~64 MB more were pushed after tick 50; the server grew by little
            assert rss[150] - rss[50] < 16, (before, rss)
            assert rss[150] - before < 48, (before, rss)

            epochs = []
            # (generous: after a long zero window with a small receive buffer,
            # TCP may wait for its next persist probe, which backs off)
            while (obj := json.loads(slow.recv(timeout=60)))["kind"] == "change":
                assert obj["id"] == "sub" and len(obj["rows"]) in (1000, 2000)
                epochs.append(obj["epoch"])
            assert obj == {"id": "sub", "kind": "error",
                           "message": 'subscription "wide" ended: the client did not keep up '
                                      '(5 records queued)'}
            # what had left the server, in order, no gap; far fewer than the 150 ticks
            assert epochs == list(range(epochs[0], epochs[0] + len(epochs))) and len(epochs) < 100
            # ended in the registry too: nothing more is pushed, nothing to unsubscribe
            ask(fast, "f", "feed w 0 149 diff=-1")
            ask(fast, "t", "tick")
            assert ask(slow, "u", "unsubscribe wide") == [
                {"id": "u", "kind": "error", "message": 'no subscription to "wide"'}]
            assert ask(slow, "l", "list")[0]["epoch"] == 151
            (again,) = ask(slow, "s2", "subscribe wide")  # and it may subscribe again
            assert again["rows"] == []


def test_a_subscriber_that_never_reads_is_ended_alone():
    """The network side of subscriptions with a stand-in engine hook: each
    tick pushes 100 KB records to every subscription; a client that never
    reads overflows its queue (limit 20 records), gets one error record, its
    subscription ends and its queued frames are freed, while another client
    goes on without delay."""
    import ddir
    from websockets.asyncio.client import connect as aconnect
    from ddir.serve import Hub, Subscription, SubscriptionHook, listen

    class Hook(SubscriptionHook):
        def __init__(self):
            super().__init__()
            self.subs, self.released = [], []

        def run(self, client, conn, req_id, cmd):
            sub = Subscription(conn, req_id, cmd.trace)
            self.subs.append(sub)
            return [{"kind": "subscribed", "trace": sub.trace, "epoch": 0, "rows": []}], sub, []

        def release(self, client, sub):
            self.released.append(sub)
            self.subs.remove(sub)

        def release_owner(self, client, conn):
            pass

    hook = Hook()

    async def scenario():
        with ddir.Server() as client:
            loop = asyncio.get_running_loop()
            hub = Hub(client, loop, subscriber_queue=20, hook=hook)
            server = await listen(hub, "127.0.0.1", 0)
            url = "ws://127.0.0.1:%d" % next(iter(server.sockets)).getsockname()[1]
            slow = await aconnect(url, max_size=None, max_queue=1)
            fast = await aconnect(url, max_size=None)

            assert (await ask_async(slow, "s", "subscribe t"))[0]["kind"] == "subscribed"
            (slow_conn,) = [c for c in hub.connections if c.subs]
            big = {"kind": "change", "trace": "t", "epoch": 1, "rows": [[1, 2, 3]] * 20000}
            for i in range(150):  # each answered while the slow client's socket is full
                hook.pending = [(s, big) for s in hook.subs]
                assert (await ask_async(fast, i, "tick"))[0]["kind"] == "tick"
            assert hook.released and not slow_conn.subs          # ended on the server
            assert len(slow_conn.outbox.frames) <= 21             # memory freed
            # the slow client finally reads: some pushes, then one error, tagged "s"
            kinds = []
            while True:
                obj = json.loads(await asyncio.wait_for(slow.recv(), 60))
                assert obj["id"] == "s"
                kinds.append(obj["kind"])
                if obj["kind"] == "error":
                    assert "did not keep up (20 records queued)" in obj["message"]
                    break
            assert set(kinds[:-1]) <= {"change"}
            await slow.close()
            await fast.close()
            server.close()
            await server.wait_closed()
            await loop.run_in_executor(None, hub.stop)

    asyncio.run(asyncio.wait_for(scenario(), 60))


async def ask_async(ws, req_id, line, **extra):
    await ws.send(json.dumps({"id": req_id, "line": line, **extra}))
    out = []
    while (obj := json.loads(await ws.recv()))["kind"] != "done":
        assert obj["id"] == req_id, obj
        out.append(obj)
    return out


def test_a_non_reader_outlives_keepalive_and_gets_the_overflow_record():
    """The server's own code (Hub, listen, the registry) with keepalive
    pings every 50 ms: a real websockets client subscribes, then reads
    nothing, so it answers no ping either. Its subscription ends when its
    queue is full (here by bytes: 2 MiB of ~640 KB changes), not when pongs
    are missing: after many unanswered pings the connection is still open,
    the client reads the changes that had left the server, then the one
    overflow record, and its next command is answered. Meanwhile the other
    client's every command is answered and the non-reader's queue never
    holds more than the bound. (websockets' default pong timeout cut such a
    client off before its queue could overflow.)"""
    import ddir
    from websockets.asyncio.client import connect as aconnect
    from ddir.serve import Hub, listen

    async def scenario():
        with ddir.Server() as client:
            loop = asyncio.get_running_loop()
            hub = Hub(client, loop, subscriber_queue=10_000, subscriber_bytes=2 << 20)
            server = await listen(hub, "127.0.0.1", 0, ping_interval=0.05)
            try:
                await non_reader(client, loop, hub, server)
            finally:  # a failure must not leave the loop with a blocked writer
                server.close()
                await server.wait_closed()
                await loop.run_in_executor(None, hub.stop)

    async def non_reader(client, loop, hub, server):
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        fast = await aconnect(url, max_size=None)
        assert (await ask_async(fast, 1, "install w w.ddp", source=WIDE))[0]["kind"] == \
            "installed"
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        slow = await aconnect(url, sock=sock, max_size=None, max_queue=1,
                              ping_interval=None, compression=None)
        assert (await ask_async(slow, "sub", "subscribe wide"))[0]["kind"] == "subscribed"
        (slow_conn,) = [c for c in hub.connections if c.subs]
        server_side = slow_conn.ws.transport.get_extra_info("socket")
        assert server_side.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        # from here on `slow` reads nothing: its client stops reading the socket
        i, most = 0, 0
        while slow_conn.subs:  # ends by its queue bound, or this test times out
            lines = [f"feed w 0 {i}"] + ([f"feed w 0 {i - 1} diff=-1"] if i else [])
            for line in lines + ["tick"]:
                got = await ask_async(fast, [i, line], line)
                assert not [r for r in got if r["kind"] == "error"], got
            most = max(most, sum(len(t) for s, t in slow_conn.outbox.frames
                                 if s is not None))
            i += 1
        assert most <= 2 << 20
        assert not slow_conn.outbox.frames or all(
            s is None for s, _ in slow_conn.outbox.frames)  # its changes were freed
        # the overflow queued its release on the one sequencer: a command after it sees it done
        await ask_async(fast, "sync", "list")
        assert not hub.hook.by_id and not client.core.subscriptions
        # a ping has waited for its pong for 20 ping intervals (websockets'
        # default pong timeout is one interval): the connection stays
        pending = slow_conn.ws.pending_pings
        assert pending
        while loop.time() - min(sent for _, sent in pending.values()) < 20 * 0.05:
            await asyncio.sleep(0.05)
        assert not slow_conn.gone and slow_conn.ws.state.name == "OPEN"
        epochs = []
        while (obj := json.loads(await asyncio.wait_for(slow.recv(), 60)))["kind"] == "change":
            epochs.append(obj["epoch"])
        assert epochs == list(range(epochs[0], epochs[0] + len(epochs))), epochs
        assert obj["id"] == "sub" and obj["kind"] == "error"
        assert obj["message"].startswith(
            'subscription "wide" ended: the client did not keep up (')
        assert obj["message"].endswith(" MiB queued)")
        assert (await ask_async(slow, "l", "list"))[0]["epoch"] == i  # still connected
        await slow.close()
        # a client killed mid-request (no close handshake) frees its subscriptions
        killed = await aconnect(url)
        await ask_async(killed, "k", "subscribe wide")
        assert len(client.core.subscriptions) == 1
        await killed.send(json.dumps({"id": "t", "line": "tick"}))
        killed.transport.abort()
        while len(hub.connections) > 1:
            await asyncio.sleep(0.01)
        await ask_async(fast, "after", "list")  # (one sequencer: the release ran before it)
        assert not client.core.subscriptions and not hub.hook.by_id
        await fast.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_install_with_source_takes_bindings(served):
    """SPEC D3's call form over serve, with the program text sent along: the
    same parse as a local `install` (it was refused: one rule in two places)."""
    s = served()
    with s.client() as ws:
        (r,) = ask(ws, 1, "install g g.ddp edges=random(seed=1,arity=2,range=10,count=5)",
                   source='export "e" = import "edges";\n')
        assert r["kind"] == "installed", r
        ask(ws, 2, "tick")
        assert ask(ws, 3, "peek e")[0]["total"] >= 1
        (err,) = ask(ws, 4, "install h h.ddp edges=random(range=0,count=4)",
                     source='export "f" = import "edges";\n')
        assert err["kind"] == "error" and "range must be positive" in err["message"]
