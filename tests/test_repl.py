"""The prompt, driven without a terminal through prompt_toolkit's pipe input,
and in a real terminal (tmux) where timing matters."""
import io
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from prompt_toolkit.application import create_app_session
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from conftest import ROOT
from ddir.repl import DdirCompleter, make_prompt_session, run_prompt
from ddir.server.session import Session


def completions(session, text):
    return [c.text for c in DdirCompleter(session).get_completions(Document(text, len(text)), None)]


def test_completion_offers_commands_programs_traces_and_options(monkeypatch):
    monkeypatch.chdir(ROOT)
    s = Session(out=io.StringIO(), interactive=True)
    s.run_line("install prod programs/producer.ddp")
    s.run_line("install cc programs/hash_graph.ddp")
    assert "install" in completions(s, "ins") and "tick" in completions(s, "")
    assert completions(s, "feed p") == ["prod"]
    assert "edges" in completions(s, "peek ") and "iota:15" in completions(s, "peek i")
    assert "cc" in completions(s, "drop ") and "iota:15" in completions(s, "drop ")
    assert set(completions(s, "feed prod 0 1,2 ")) == {"val=", "time=", "diff="}
    assert set(completions(s, "peek edges ")) >= {"limit=", "offset="}
    paths = completions(s, "install x programs/pro")
    assert any(p.endswith("ducer.ddp") for p in paths)


def run_keys(keys: str, session: Session):
    with create_pipe_input() as inp:
        inp.send_text(keys)
        with create_app_session(input=inp, output=DummyOutput()):
            run_prompt(session, make_prompt_session(session, input=inp, output=DummyOutput()))


def test_history_persists_and_ctrl_d_exits(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DDIR_HISTORY", str(tmp_path / "hist"))
    out = io.StringIO()
    s = Session(out=out, interactive=True)
    run_keys("install prod programs/producer.ddp\rlist\r\x04", s)  # \x04 = Ctrl-D
    assert 'installed "prod"' in out.getvalue() and "epoch: 0" in out.getvalue()
    saved = (tmp_path / "hist").read_text()
    assert "list" in saved and "install prod" in saved
    # second session: Up recalls the last command of the first one
    out2 = io.StringIO()
    s2 = Session(out=out2, interactive=True)
    run_keys("\x1b[A\r\x04", s2)
    assert "epoch: 0" in out2.getvalue()


def test_prompt_pages_long_peeks(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DDIR_HISTORY", str(tmp_path / "hist"))
    out = io.StringIO()
    s = Session(out=out, interactive=True)
    prog = tmp_path / "big.ddp"
    prog.write_text('export "big" = import "iota:120";\n')
    s.run_line(f"install g {prog}")
    run_keys("tick\rpeek big\rpeek big offset=100\rexit\r", s)
    text = out.getvalue()
    assert 'peek "big" (120 rows):' in text and "... 70 more rows (peek big offset=50)" in text
    # one way on, not two (issue 26, item 13: the cursor line came too)
    assert "more: peek big cursor=" not in text
    assert len([line for line in text.splitlines() if line.startswith("  (")]) == 50 + 20


# ---------------------------------------------------------------- in a real terminal (tmux)

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Terminal:
    """`ddir` at its prompt in a detached tmux pane: keys go in as a terminal
    sends them, the screen comes back as the user sees it."""

    def __init__(self, history: str, *args: str):
        self.dir = tempfile.mkdtemp(prefix="ddir-tmux")  # short: socket paths are limited
        self.tmux = ["tmux", "-S", f"{self.dir}/sock"]
        command = " ".join([f"DDIR_HISTORY={history}", sys.executable, "-m", "ddir", *args])
        subprocess.run(self.tmux + ["new-session", "-d", "-x", "150", "-y", "50", "-c", str(ROOT),
                                    command], check=True)
        self.wait_for("ddir [0]>")

    def keys(self, *keys: str) -> None:
        """One `send-keys`: the keys reach the program in one burst."""
        subprocess.run(self.tmux + ["send-keys", *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(self.tmux + ["capture-pane", "-p", "-S", "-", "-E", "-"],
                              capture_output=True, text=True).stdout

    def wait_for(self, *texts: str, timeout: float = 30) -> str:
        """The screen once any of ``texts`` is on it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if any(text in screen for text in texts):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"none of {texts} appeared on screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(self.tmux + ["kill-server"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def terminal(tmp_path):
    started = []

    def start(*args):
        started.append(Terminal(str(tmp_path / "hist"), *args))
        return started[-1]
    yield start
    for t in started:
        t.close()


@needs_tmux
@pytest.mark.parametrize("workers", ["1", "2"])
def test_real_prompt_pages_a_long_peek(terminal, tmp_path, workers):
    prog = tmp_path / "big.ddp"
    prog.write_text('export "big" = import "iota:120";\n')
    t = terminal("-w", workers)
    t.keys(f"install g {prog}", "Enter", "tick", "Enter", "peek big", "Enter")
    screen = t.wait_for("more rows", "error")
    assert 'peek "big" (120 rows):' in screen
    assert "  ... 70 more rows (peek big offset=50)" in screen
    assert len([line for line in screen.splitlines() if line.startswith("  (")]) == 50


@needs_tmux
def test_real_prompt_tab_completes_keys_that_arrive_together(terminal):
    t = terminal()
    t.keys("install prod programs/producer.ddp", "Enter")
    t.wait_for('installed "prod"')
    t.keys("peek ed", "Tab", "Enter")  # a paste and Tab in one burst
    screen = t.wait_for('peek "edges"', "error")
    assert 'peek "edges" (0 rows):' in screen and "unknown trace" not in screen
    t.keys("in", "Tab", " x programs/reach_im", "Tab", "Enter")
    assert 'installed "x"' in t.wait_for('installed "x"', "error")
