"""The prompt, driven without a terminal through prompt_toolkit's pipe input."""
import io

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
    assert len([line for line in text.splitlines() if line.startswith("  (")]) == 50 + 20
