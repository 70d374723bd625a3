"""Every code block of docs/LANGUAGE.md and docs/TUTORIAL.md is run, so the docs cannot rot.

A document is read like a notebook: its blocks run in order, in one fresh temporary directory
(its working directory), so a program written by one block is there for a later session. A
fence's info string says what a block is (the first word is the language GitHub colours):

    ddp NAME, ddir NAME   a program: written to NAME; `ddir check NAME` must say ok
    ddp NAME error        the same, but the program is shown for its error: check must fail
    session NAME [ARGS]   a script: written to NAME and run as `ddir [ARGS] NAME`
    sh                    shell commands: bash in the working directory, the venv's bin first
                          on PATH (so `ddir` and `python` are this checkout's)
    sh serve              `ddir serve ...`: started with `--port 0` added (a fixed port could
                          be taken on a CI machine); in the blocks after it the documented
                          address ws://127.0.0.1:7468 is replaced by the one it printed; it is
                          stopped with Ctrl-C (SIGINT) when the document ends
    python [NAME]         a Python script run by the venv's python in the working directory
                          (written to NAME first if given: a module a later block imports)
    prompt                a transcript of the interactive prompt: each `ddir [N]> LINE` is typed
                          into an interactive Session (what `ddir` runs at a terminal); the
                          transcript (prompts, then outputs) must be the block itself
    output                what the block before it prints (stdout and stderr), compared exactly,
                          except that a cursor token is any token (`cursor=<token>`): tokens
                          are signed with a secret made at start
    text                  not code (a grammar, what a terminal looks like): the only kind that
                          is not run

Blocks that cannot run unattended are written so they can: a server is started with `--port 0`
and stopped by the test; `ddir connect` reads a script from stdin (its interactive prompt, like
`ddir`'s, needs a terminal: the prompt block stands for both). Nothing is written outside the
working directory (DDIR_RUNTIME_DIR, where a served token is kept, is conftest's).

Sessions, programs and prompts run in this process (`ddir.cli.main`, what `python -m ddir`
runs), which keeps the whole test to a few seconds; `sh` and `python` blocks are subprocesses.

When ddir's output changes on purpose, `DDIR_DOCS_UPDATE=1 pytest tests/test_docs.py` rewrites
the output blocks (and prompt transcripts) of both documents with what ddir prints now: read
the diff before committing it.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = ["LANGUAGE.md", "TUTORIAL.md"]
UPDATE = os.environ.get("DDIR_DOCS_UPDATE") == "1"
KINDS = {"ddp", "ddir", "session", "sh", "python", "prompt", "output", "text"}
DOC_ADDRESS = "ws://127.0.0.1:7468"
PROMPT = re.compile(r"^ddir \[\d+\]> (.*)$")
TOKEN = re.compile(r"cursor=[A-Za-z0-9_\-]+")
VENV_BIN = Path(sys.executable).parent
BLOCK_SECONDS = 60  # per block: the whole test takes a few seconds


@dataclass
class Block:
    info: list       # the info string's words
    text: str        # the body, with its final newline
    line: int        # 1-based line of the opening fence
    start: int       # character offsets of the body in the document
    end: int

    @property
    def kind(self) -> str:
        return self.info[0] if self.info else ""


def blocks_of(text: str) -> list:
    """The fenced blocks (```info ... ```) of a Markdown text."""
    out = []
    pattern = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
    for m in pattern.finditer(text):
        out.append(Block(m.group(1).split(), m.group(2), text.count("\n", 0, m.start()) + 1,
                         m.start(2), m.end(2)))
    return out


def normalise(text: str) -> str:
    return TOKEN.sub("cursor=<token>", text)


@contextlib.contextmanager
def time_limit(seconds: int = BLOCK_SECONDS):
    """A block run in this process that hangs fails the test instead of the suite
    (subprocesses have their own timeouts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"a block ran for more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def in_process(args: list) -> str:
    """`python -m ddir ARGS` in this process: stdout and stderr, together."""
    from ddir.cli import main
    buf = io.StringIO()
    before = set(sys.modules)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), time_limit():
            main(args)
    finally:
        # a --functions module of the document's (scoring.py) is not left for other tests
        here = os.getcwd()
        for name in set(sys.modules) - before:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(here + os.sep):
                del sys.modules[name]
    return buf.getvalue()


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DDIR_DOCS_UPDATE", None)
    return env


def run_prompt_transcript(text: str) -> str:
    """Type each `ddir [N]> LINE` of a transcript into an interactive session."""
    from ddir.server.session import Session
    out = io.StringIO()
    session = Session(out=out, interactive=True)
    for line in text.splitlines():
        m = PROMPT.match(line)
        if m is None:
            continue  # output lines: what the session prints
        out.write(f"ddir [{session.server.epoch}]> {m.group(1)}\n")
        if not session.run_line(m.group(1)):
            break
    session.client.close()
    return out.getvalue()


class Notebook:
    """Runs one document's blocks in order, in ``workdir``."""

    def __init__(self, doc: str, workdir: Path):
        self.doc, self.workdir = doc, workdir
        self.server = None          # a `sh serve` process
        self.server_output = None   # its output block, checked when it stops
        self.address = DOC_ADDRESS
        self.env = subprocess_env()

    def where(self, block: Block) -> str:
        return f"docs/{self.doc}:{block.line}"

    # Each runner returns what the block printed (None: nothing to compare).

    def run_program(self, block: Block) -> None:
        name = block.info[1] if len(block.info) > 1 else None
        assert name, f"{self.where(block)}: a program block needs a file name (```ddp NAME)"
        assert name.endswith("." + block.kind), f"{self.where(block)}: {name} is not .{block.kind}"
        (self.workdir / name).write_text(block.text)
        out = in_process(["check", name])
        if "error" in block.info[2:]:
            assert out != f"{name}: ok\n", f"{self.where(block)}: {name} was to fail its check"
        else:
            assert out == f"{name}: ok\n", f"{self.where(block)}: `ddir check {name}`:\n{out}"

    def run_session(self, block: Block) -> str:
        assert len(block.info) > 1, f"{self.where(block)}: ```session NAME [ARGS]"
        name, args = block.info[1], block.info[2:]
        (self.workdir / name).write_text(block.text)
        return in_process([*args, name])

    def run_sh(self, block: Block) -> str:
        if block.info[1:] == ["serve"]:
            return self.start_server(block)
        text = block.text.replace(DOC_ADDRESS, self.address)
        r = subprocess.run(["bash", "-c", text], cwd=self.workdir, env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_SECONDS)
        return r.stdout

    def start_server(self, block: Block) -> None:
        command = block.text.strip()
        assert command.startswith("ddir serve") and "\n" not in command, self.where(block)
        assert self.server is None, f"{self.where(block)}: one server per document"
        self.server = subprocess.Popen(
            ["bash", "-c", "exec " + command.replace("ddir serve", "ddir serve --port 0", 1)],
            cwd=self.workdir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        found = threading.Event()
        lines: list = []

        def read_stderr():
            for line in self.server.stderr:
                lines.append(line)
                m = re.search(r"serving on (ws://\S+)", line)
                if m:
                    self.address = m.group(1)
                    found.set()
            found.set()  # it ended without serving
        threading.Thread(target=read_stderr, daemon=True).start()
        assert found.wait(BLOCK_SECONDS) and self.address != DOC_ADDRESS, \
            f"{self.where(block)}: the server did not start:\n{''.join(lines)}"
        return None

    def stop_server(self) -> str:
        if self.server is None:
            return ""
        self.server.send_signal(signal.SIGINT)
        try:
            out, _ = self.server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            out, _ = self.server.communicate()
            raise AssertionError(f"docs/{self.doc}: the server did not stop at Ctrl-C")
        finally:
            self.server = None
        return out

    def run_python(self, block: Block) -> str:
        name = block.info[1] if len(block.info) > 1 else "_block.py"
        (self.workdir / name).write_text(block.text)
        r = subprocess.run([sys.executable, name], cwd=self.workdir, env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_SECONDS)
        if len(block.info) == 1:
            (self.workdir / name).unlink()
        assert r.returncode == 0, f"{self.where(block)}: python exited {r.returncode}:\n{r.stdout}"
        return r.stdout

    def run(self, text: str) -> tuple:
        """(the problems found, the document as it should be)."""
        blocks = blocks_of(text)
        problems, edits = [], []
        kinds = {"ddp": self.run_program, "ddir": self.run_program,
                 "session": self.run_session, "sh": self.run_sh, "python": self.run_python}
        serve_output = None
        for i, block in enumerate(blocks):
            assert block.kind in KINDS, (f"{self.where(block)}: a block of unknown kind "
                                         f"{block.kind!r}: tag it with one of {sorted(KINDS)}")
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            wants_output = following is not None and following.kind == "output"
            if block.kind == "prompt":
                with time_limit():
                    got = run_prompt_transcript(block.text)
                self.compare(block, block, got, problems, edits)
                continue
            if block.kind not in kinds:
                continue  # text, output
            got = kinds[block.kind](block)
            if block.kind == "sh" and block.info[1:] == ["serve"]:
                serve_output = following if wants_output else None
                continue
            if block.kind in ("session", "sh", "python"):
                assert wants_output or got == "" or block.kind == "python", \
                    f"{self.where(block)}: it prints something; show it in an ```output block"
            if wants_output:
                self.compare(block, following, got, problems, edits)
        got = self.stop_server()
        if serve_output is not None:
            self.compare(serve_output, serve_output, got, problems, edits)
        new = text
        for start, end, body in sorted(edits, reverse=True):
            new = new[:start] + body + new[end:]
        return problems, new

    def compare(self, block: Block, shown: Block, got: str, problems: list, edits: list):
        if normalise(got) != normalise(shown.text):
            problems.append(f"{self.where(block)}: printed\n{got}\ninstead of\n{shown.text}")
            edits.append((shown.start, shown.end, got))


@pytest.mark.parametrize("doc", DOCS)
def test_every_code_block_runs_and_prints_what_is_shown(doc, tmp_path, monkeypatch):
    path = ROOT / "docs" / doc
    text = path.read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DDIR_HISTORY", str(tmp_path / ".ddir_history"))
    notebook = Notebook(doc, tmp_path)
    try:
        problems, new = notebook.run(text)
    finally:
        notebook.stop_server()
    if UPDATE and new != text:
        path.write_text(new)
    assert not problems, "\n\n".join(problems) + (
        "\n\n(if ddir changed on purpose: DDIR_DOCS_UPDATE=1 pytest tests/test_docs.py)")


def test_docs_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for doc in ["LANGUAGE.md", "TUTORIAL.md", "SECURITY.md", "ARCHITECTURE.md"]:
        assert f"docs/{doc}" in readme, doc


def test_the_block_reader():
    text = "a\n```ddp x.ddp\nlet a = input 0;\n```\n\n```output\nok\n```\n"
    (a, b) = blocks_of(text)
    assert a.info == ["ddp", "x.ddp"] and a.text == "let a = input 0;\n" and a.line == 2
    assert b.kind == "output" and text[b.start:b.end] == "ok\n"
    assert normalise("more: peek t cursor=aB-_9") == "more: peek t cursor=<token>"
