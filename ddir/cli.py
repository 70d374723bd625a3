"""Command line: ``ddir [SCRIPT...] [-w N] [--json] [--strict]``, ``ddir check
FILE...``, ``ddir explain FILE`` (SPEC Part B "Running it")."""

from __future__ import annotations

import sys

from . import __version__
from .ir.explain import explain
from .lang.errors import ProgramError
from .server.commands import CommandError, load_program
from .server.session import Session

USAGE = """usage: ddir [SCRIPT...] [-w N] [--json] [--strict]
       ddir check FILE...
       ddir explain FILE

  SCRIPT          session scripts to replay, one after the other (stdin if none)
  -w N, --workers N
                  worker processes (1 to 64, default 1)
  --json          one JSON object per output line
  --strict        stop at the first error, exit status 1
  --version       print the version
  -h, --help      this help
"""


class UsageError(Exception):
    pass


def parse_args(argv: list) -> dict:
    opts = {"scripts": [], "workers": 1, "json": False, "strict": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-w", "--workers"):
            if i + 1 >= len(argv):
                raise UsageError(f"{a} needs a number")
            opts["workers"] = _workers(argv[i + 1])
            i += 2
            continue
        if a.startswith("-w") and len(a) > 2:
            opts["workers"] = _workers(a[2:])
        elif a.startswith("--workers="):
            opts["workers"] = _workers(a.split("=", 1)[1])
        elif a == "--json":
            opts["json"] = True
        elif a == "--strict":
            opts["strict"] = True
        elif a.startswith("-") and a != "-":
            raise UsageError(f"unknown option {a}")
        else:
            opts["scripts"].append(a)
        i += 1
    return opts


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"-w needs a number from 1 to 64, got `{text}`") from None
    if not 1 <= n <= 64:
        raise UsageError(f"-w needs a number from 1 to 64, got {n}")
    return n


def check(files: list) -> int:
    if not files:
        print("usage: ddir check FILE...", file=sys.stderr)
        return 2
    status = 0
    for path in files:
        try:
            load_program(path)
        except ProgramError as e:
            print(e.render())
            status = 1
        except CommandError as e:
            print(f"error: {e}")
            status = 1
        else:
            print(f"{path}: ok")
    return status


def explain_cmd(files: list) -> int:
    if len(files) != 1:
        print("usage: ddir explain FILE", file=sys.stderr)
        return 2
    try:
        program = load_program(files[0])
    except ProgramError as e:
        print(e.render())
        return 1
    except CommandError as e:
        print(f"error: {e}")
        return 1
    print(explain(program))
    return 0


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return check(argv[1:])
    if argv and argv[0] == "explain":
        return explain_cmd(argv[1:])
    if "-h" in argv or "--help" in argv:
        print(USAGE, end="")
        return 0
    if "--version" in argv:
        print(f"ddir {__version__}")
        return 0
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        return 2
    session = Session(json_mode=opts["json"], strict=opts["strict"])
    try:
        return run(session, opts)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run(session: Session, opts: dict) -> int:
    scripts = opts["scripts"]
    for path in scripts:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError as e:
            session.emit([{"kind": "error", "message": f'cannot read script "{path}": {e.strerror}'}])
            return 2
        if not session.run_script(path, lines):
            break
    if not scripts:
        if sys.stdin.isatty() and not opts["json"]:
            from .repl import run_prompt
            run_prompt(session)
        else:
            session.run_script("<stdin>", sys.stdin)
    if opts["strict"] and session.failed:
        return 1
    return 0
