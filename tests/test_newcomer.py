"""Issue 26: stumbles a new user met, each fixed and pinned here (the others
are pinned beside the code they touch: test_serve, test_options,
test_interrupts)."""
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_serve import Served

PY = [sys.executable, "-m", "ddir"]


@pytest.mark.parametrize("command, first", [("check", "usage: ddir check"),
                                            ("explain", "usage: ddir explain FILE")])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_check_and_explain_have_help(command, first, flag):
    """Item 5: `ddir check --help` read `--help` as a file name."""
    r = subprocess.run(PY + [command, flag], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith(first) and "cannot read" not in r.stdout
    r = subprocess.run(PY + [command, "--nope", "x.ddp"], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown option --nope")


def test_worker_processes_have_their_own_titles():
    """Item 10: in `ps` every worker looked exactly like the server."""
    s = Served("-w", "3")
    try:
        kids = subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        titles = set()
        deadline = time.monotonic() + 10
        while len(titles) < 3 and time.monotonic() < deadline:
            titles = {open(f"/proc/{k}/cmdline").read().replace("\0", " ").strip() for k in kids}
            time.sleep(0.05)
        assert titles == {"ddir worker 0/3", "ddir worker 1/3", "ddir worker 2/3"}, titles
        assert "serve" in open(f"/proc/{s.proc.pid}/cmdline").read()
    finally:
        s.stop()


def test_a_missing_program_file_says_where_it_was_looked_for(tmp_path):
    """Item 6: `cd sessions && ddir shared_trace.txt` said only that
    `programs/producer.ddp` could not be read."""
    r = subprocess.run(PY + ["shared_trace.txt"], capture_output=True, text=True, timeout=30,
                       cwd=ROOT / "sessions")
    assert (f'cannot read program file "programs/producer.ddp": No such file or directory '
            f'(looked in {ROOT / "sessions"} (the current directory))') in r.stdout, r.stdout
    (tmp_path / "s.txt").write_text("install p nowhere.ddp\n")
    r = subprocess.run(PY + [str(tmp_path / "s.txt")], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert (f"(looked in {ROOT} (the current directory) and {tmp_path} (the script's "
            f"directory))") in r.stdout, r.stdout


def test_a_ddp_program_under_another_name_gets_a_hint(tmp_path):
    """Item 2: a `.ddp` program saved as `.txt` was read as `.ddir` with no
    word of it."""
    (tmp_path / "reach_as.txt").write_text((ROOT / "programs/reach_import.ddp").read_text())
    (tmp_path / "bad.txt").write_text("let = ;\n")
    r = subprocess.run(PY + ["check", "reach_as.txt", "bad.txt"], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    first, bad = [line for line in r.stdout.splitlines() if line.startswith(("reach", "bad"))]
    assert first.startswith("reach_as.txt:") and first.endswith(
        "(read as `.ddir`: the file name does not end in `.ddp`; it parses as `.ddp`: "
        "name the file `.ddp`)"), first
    assert bad.endswith("(read as `.ddir`: the file name does not end in `.ddp`)"), bad
    (tmp_path / "reach.ddp").write_text((ROOT / "programs/reach_import.ddp").read_text())
    r = subprocess.run(PY + ["check", "reach.ddp"], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path)
    assert r.stdout == "reach.ddp: ok\n"
