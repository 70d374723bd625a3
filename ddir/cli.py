"""Command line: ``ddir [SCRIPT...] [-w N] [--json] [--strict]``, ``ddir check
FILE...``, ``ddir explain FILE`` (SPEC Part B "Running it")."""

from __future__ import annotations

import os
import signal
import sys

from . import __version__, options
from .ir.explain import explain
from .lang.errors import ProgramError
from .errors import ServerStopped
from .server.cluster import WorkerDied
from .server.commands import CommandError, load_program
from .server.functions import check_calls, load_functions
from .server.session import Session

USAGE = """usage: ddir [SCRIPT...] [-w N | --mpi] [--json] [--strict] [--max-rounds N]
                 [--max-memory SIZE] [--functions MODULE] [--restore DIR]
       ddir check [--functions MODULE] FILE...
       ddir explain FILE
       ddir serve [--host H] [--port P] [-w N | --mpi] [--token-file F] [--functions MODULE]
                  [SCRIPT...]
       ddir connect ws://HOST:PORT [--token-file F] [--json] [SCRIPT...]

  SCRIPT          session scripts to replay, one after the other (stdin if none)
  -w N, --workers N
                  worker processes (1 to 64, default 1)
  --mpi           run as an MPI job: `mpiexec -n N ddir --mpi ...` makes the N ranks
                  the workers (rank 0 also reads the commands); needs `pip install
                  'ddir[mpi]'`
  --max-rounds N  stop a loop that has not converged after N rounds in one tick
                  (default 1000000) and report it as an error
  --max-memory SIZE
                  what the workers' memory may grow by (e.g. 512M, 4G; split between
                  them; default 80% of the machine's): a tick that needs more fails
                  its program, as a loop that does not converge does
  --functions MODULE
                  a Python module (a name importable from here, or a .py file) whose
                  public functions terms may call as @name(args...); with check,
                  an @name the module lacks is an error
  --restore DIR   start from a checkpoint (written by `checkpoint DIR`), with any -w N
  --json          one JSON object per output line
  --strict        stop at the first error, exit status 1
  --version       print the version
  -h, --help      this help

exit status: 0 done, 1 an error with --strict, 2 bad usage or a missing script,
3 a worker process died
"""


def parse_args(argv: list) -> dict:
    opts, scripts = options.parse(
        argv, {"workers": None, "json": False, "strict": False, "max_rounds": None,
               "functions": None, "restore": None, "mpi": False, "max_memory": None},
        numbers={**options.WORKERS, **options.MAX_ROUNDS},
        texts={"--restore": ("restore", "a checkpoint directory"),
               "--functions": ("functions", "a module name or a .py file"),
               **options.MAX_MEMORY},
        flags={"--json": "json", "--mpi": "mpi", "--strict": "strict"})
    if opts["max_memory"] is not None:
        opts["max_memory"] = options.size("--max-memory", opts["max_memory"])
    opts["scripts"] = scripts
    return options.mpi_or_workers(opts)


def check(args: list) -> int:
    """``ddir check [--functions MODULE] FILE...``: without ``--functions``
    an ``@name(...)`` call is not checked (the server it is meant for may
    have it); with it, a name the module lacks is a located error."""
    files, functions = [], None
    if _asks_help(args, CHECK_USAGE):
        return 0
    i = 0
    while i < len(args):
        a = args[i]
        if _unknown_option(a, CHECK_USAGE):
            return 2
        if a == "--functions" or a.startswith("--functions="):
            value = args[i + 1] if a == "--functions" and i + 1 < len(args) else a[12:]
            if not value:
                print(CHECK_USAGE, end="", file=sys.stderr)
                return 2
            try:
                functions = load_functions(value)
            except CommandError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            i += 2 if a == "--functions" else 1
            continue
        files.append(a)
        i += 1
    if not files:
        print(CHECK_USAGE, end="", file=sys.stderr)
        return 2
    status = 0
    for path in files:
        try:
            program = load_program(path)
            if functions is not None:
                check_calls(program, functions, program.file, _source(path))
        except ProgramError as e:
            print(e.render())
            status = 1
        except CommandError as e:
            print(f"error: {e}")
            status = 1
        else:
            print(f"{path}: ok")
    return status


CHECK_USAGE = """usage: ddir check [--functions MODULE] FILE...

  parse, lower and validate each program file (.ddp pipe syntax, .ddir applicative);
  prints `FILE: ok` or the located error. --functions MODULE also checks that every
  @name(...) the programs call is a public function of MODULE.
exit status: 0 all ok, 1 an error in a program, 2 bad usage
"""

EXPLAIN_USAGE = """usage: ddir explain FILE

  print the lowered, optimised dataflow of a program (its operators, scopes,
  arrangements and exchanges)
"""


def _asks_help(args: list, usage: str) -> bool:
    """``-h``/``--help`` anywhere: the usage on stdout (a newcomer's
    ``ddir check --help`` read ``--help`` as a file name)."""
    if "-h" in args or "--help" in args:
        print(usage, end="")
        return True
    return False


def _unknown_option(arg: str, usage: str) -> bool:
    if arg.startswith("-") and arg != "-" and not arg.startswith("--functions"):
        print(f"error: unknown option {arg}", file=sys.stderr)
        print(usage, end="", file=sys.stderr)
        return True
    return False


def _source(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def explain_cmd(files: list) -> int:
    if _asks_help(files, EXPLAIN_USAGE):
        return 0
    if any(_unknown_option(a, EXPLAIN_USAGE) for a in files):
        return 2
    if len(files) != 1:
        print(EXPLAIN_USAGE, end="", file=sys.stderr)
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


def entry() -> None:
    """The `ddir` command (and `python -m ddir`): :func:`main`, then leave at
    once. A server may hold millions of small objects; freeing them one by
    one at exit took seconds (3.7 s after a transitive closure), and the
    operating system reclaims the memory anyway. Output is flushed first."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass
    mpi = sys.modules.get("ddir.server.mpi")  # --mpi: MPI needs its own way out
    (mpi.leave if mpi is not None else os._exit)(code)


def main(argv: list | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`ddir explain f | head`): end quietly (SPEC B),
        # for every command. Point stdout at /dev/null so that flushing what
        # is still buffered at exit cannot raise a second BrokenPipeError.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):  # stdout is not a real file
            pass
        return 0


def _main(argv: list | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return check(argv[1:])
    if argv and argv[0] == "explain":
        return explain_cmd(argv[1:])
    if argv and argv[0] == "serve":
        from .serve import main as serve_main
        return serve_main(argv[1:])
    if argv and argv[0] == "connect":
        from .connect import main as connect_main
        return connect_main(argv[1:])
    quiet = "--mpi" in argv and _not_rank_0()  # under mpiexec, rank 0 speaks for all
    if "-h" in argv or "--help" in argv:
        print("" if quiet else USAGE, end="")
        return 0
    if "--version" in argv:
        print("" if quiet else f"ddir {__version__}", end="" if quiet else "\n")
        return 0
    try:
        opts = parse_args(argv)
    except options.UsageError as e:
        if not _not_rank_0():  # under mpiexec, once (every rank parses the same argv)
            print(f"error: {e}", file=sys.stderr)
            print(USAGE, end="", file=sys.stderr)
        return 2
    ranks = None
    if opts["mpi"]:
        ranks = join_mpi(opts["functions"])
        if isinstance(ranks, int):
            return ranks
    try:
        return _serve_cli(opts, ranks)
    finally:
        if ranks is not None:
            ranks.finish()


def _not_rank_0() -> bool:
    from .server.mpi import launched_rank
    return launched_rank() != 0


def join_mpi(functions):
    """``--mpi``: join the MPI job. A worker rank serves rank 0 here until the
    job ends (never returns); rank 0 gets its :class:`ddir.server.mpi.Ranks`.
    An int is the exit status: MPI is missing (said once, by rank 0)."""
    from .server import mpi
    try:
        ranks = mpi.Ranks()
    except mpi.MpiUnavailable as e:
        if mpi.launched_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    if ranks.rank != 0:
        table = None
        if functions is not None:
            try:  # each rank imports the module itself (the same path on every host)
                table = load_functions(functions).table
            except CommandError as e:
                ranks.line.fail(f"--functions: {e}")
        ranks.serve(table)
    return ranks


def _serve_cli(opts: dict, ranks) -> int:
    sessions: list = []  # the session, once made: where a worker's death is reported
    try:
        client = start_server(opts["workers"], opts["max_rounds"], sessions, opts["functions"],
                              opts["restore"], ranks, json_mode=opts["json"],
                              max_memory=opts["max_memory"])
    except CommandError as e:  # --functions MODULE could not be imported, a bad --restore
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. too many open files for the worker mesh
        print(f"error: cannot start {opts['workers']} worker processes: {e.strerror or e}",
              file=sys.stderr)
        return 2
    # The CLI is a client of the Python API: the session parses lines, the
    # API executes them, the session renders the records.
    session = Session(json_mode=opts["json"], strict=opts["strict"], client=client)
    sessions.append(session)
    def terminate(signum, frame):
        client.cancel()  # a tick in progress stops at its workers' next round
        _terminate(signum, frame)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return run(session, opts)
    except KeyboardInterrupt:
        return 130
    except (WorkerDied, ServerStopped):  # reported by on_death, which exits; not reached
        return EXIT_WORKER_DIED
    finally:
        client.close()
        signal.signal(signal.SIGTERM, previous)


EXIT_WORKER_DIED = 3


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through `finally`: the workers are stopped


def start_server(workers: int, max_rounds, sessions: list, functions=None, restore=None,
                 ranks=None, json_mode: bool = False, last_words: list | None = None,
                 max_memory: int | None = None):
    """A :class:`ddir.Server`: ``-w 1`` runs the worker in this process; more
    start worker processes (or, with ``ranks``, are the MPI job's ranks). A
    worker's death is printed (through the session in ``sessions``) as one
    error and ends the server at once, whatever the intake was doing (even
    waiting at the prompt). ``functions``: the ``--functions`` module
    (imported before the workers are forked). ``last_words``: callables
    given the message before the process ends (``serve`` tells its clients).
    ``max_memory``: ``--max-memory`` in bytes (None: the default)."""
    from .api import Server
    if restore is not None:
        make = lambda *a, **k: Server.restore(restore, *a, **k)  # noqa: E731
    else:
        make = Server
    if ranks is not None:
        workers = ranks.size
    if workers == 1:
        return make(1, max_rounds=max_rounds, functions=functions, max_memory=max_memory)
    terminal = _terminal_state()
    from .server.output import render_json, render_text

    def render(message: str) -> str:
        record = {"kind": "error", "message": message}
        return render_json(record) if json_mode else render_text(record)

    if ranks is not None:  # it prints the line, even if the launcher kills rank 0 first
        ranks.start_reporter(render)

    def on_death(message: str) -> None:
        try:
            sys.stdout.flush()
            if ranks is None or not ranks.report(render(message)):
                for session in sessions:
                    session.emit([{"kind": "error", "message": message}])
                if not sessions:  # lost while starting (an MPI rank failed to set up)
                    print(render(message), flush=True)
        except Exception:
            pass
        for tell in last_words or ():
            try:
                tell(message)
            except Exception:
                pass
        if terminal is not None:  # the prompt may have left the terminal in raw mode
            import termios
            termios.tcsetattr(terminal[0], termios.TCSADRAIN, terminal[1])
        os._exit(EXIT_WORKER_DIED)

    return make(workers, max_rounds=max_rounds, on_death=on_death, functions=functions, mpi=ranks,
                max_memory=max_memory)


def _terminal_state():
    try:
        import termios
        fd = sys.stdin.fileno()
        return (fd, termios.tcgetattr(fd)) if os.isatty(fd) else None
    except (ImportError, OSError, ValueError):
        return None


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
