"""Command lines -> typed commands (the intake side of SPEC Part B).

Every command is a frozen dataclass of plain data (an install carries the
already-lowered IR program, never a path to re-read), so it can be
msgpack-encoded for worker processes. A malformed line raises
:class:`CommandError` with one message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import CommandError, InvalidProgram
from ..ir.lower import lower
from ..lang.errors import ProgramError
from ..lang.parser import parse_program
from ..lang.value_token import ValueTokenError, parse_value_token, split_words
from ..lang.words import is_option
from ..values import INT_MAX, INT_MIN


__all__ = ["CommandError", "InvalidProgram"]  # re-exported: defined in ddir.errors


@dataclass(frozen=True)
class Install:
    name: str
    path: str
    program: Any  # ddir.ir.nodes.Program
    source: Optional[str] = None  # its text, when known (kept for checkpoints)


@dataclass(frozen=True)
class Reinstall:
    """``reinstall <name> [<file>]``: a read-only program made live again,
    from its stored IR (``program`` None) or from a new file."""
    name: str
    path: Optional[str]
    program: Any = None
    source: Optional[str] = None
    functions: Optional[str] = None  # a module to import first (where `@f` comes from)


@dataclass(frozen=True)
class Feed:
    program: str
    input: int
    key: Any
    val: Any
    time: Optional[int]
    diff: int


@dataclass(frozen=True)
class Load:
    program: str
    input: int
    path: str             # as written (messages), resolved like install's
    resolved: str         # where to read it
    key: Optional[tuple]  # column names, None: every column not in val/diff
    val: Optional[tuple]  # column names, None: unit
    diff: Optional[str]   # a column name, None: +1 each
    time: Optional[int]
    confined: bool = False  # named by a network client: errors do not quote the file (SPEC E2)


@dataclass(frozen=True)
class Save:
    trace: str
    path: str                       # as written (messages, the record)
    resolved: Optional[str] = None  # where to write it (a network client's, SPEC E2)


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Checkpoint:
    path: str                       # as written (messages, the record)
    resolved: Optional[str] = None  # where to write it (a network client's, SPEC E2)


@dataclass(frozen=True)
class Drop:
    name: str


@dataclass(frozen=True)
class Peek:
    trace: str
    key: Any
    has_key: bool
    limit: Optional[int]
    offset: int
    cursor: Optional[str] = None  # `peek cursor=<token>`: the next page (SPEC C4)


@dataclass(frozen=True)
class Subscribe:
    trace: str
    key: Any
    has_key: bool


@dataclass(frozen=True)
class Unsubscribe:
    trace: str


@dataclass(frozen=True)
class ListCmd:
    pass


@dataclass(frozen=True)
class Help:
    topic: Optional[str]


@dataclass(frozen=True)
class Exit:
    pass


HELP = {
    "install": ("install <name> <file>", "parse, lower, validate and install a program "
                "(its terms may call `@f(...)`, the functions of --functions MODULE)"),
    "reinstall": ("reinstall <name> [<file>] [functions=<module>]",
                  "make a read-only program live again (once its functions are there, or from "
                  "a new file with the same exports); it catches up from its stored inputs"),
    "feed": ("feed <prog> <in#> <value> [val=<value>] [time=<t>] [diff=<int>]",
             "stage an input update"),
    "tick": ("tick", "close the current epoch, run every program to quiescence, print inspect events"),
    "drop": ("drop <name>", "remove a program (refused while a trace it publishes has importers)"),
    "peek": ("peek <trace> [key] [limit=<n>] [offset=<n>]", "print a trace's consolidated contents"),
    "peek cursor": ("peek [<trace>] cursor=<token> [limit=<n>]",
                    "the next page after a cursor, as of the cursor's epoch"),
    "subscribe": ("subscribe <trace> [key]",
                  "print the trace's contents, then its changes at every tick"),
    "unsubscribe": ("unsubscribe <trace>", "stop reporting the trace's changes"),
    "load": ("load <prog> <in#> <file> [key=<cols>] [val=<cols>] [diff=<col>] [time=<t>]",
             "stage one update per row of a .parquet/.arrow/.feather/.ipc/.csv file"),
    "save": ("save <trace> <file>", "write a trace's consolidated contents to a "
             ".parquet/.arrow/.feather/.ipc/.csv file"),
    "checkpoint": ("checkpoint <dir>", "write the whole server (programs, their inputs, the "
                   "epoch) to a directory, atomically; `ddir --restore <dir>` starts from it"),
    "list": ("list", "epoch, traces with importer counts, programs"),
    "help": ("help [command]", "the command table, or one command"),
    "exit": ("exit", "stop (also `quit`)"),
}
COMMANDS = tuple(t for t in HELP if " " not in t) + ("quit",)
OPTION_KEYS = {"feed": ("val", "time", "diff"), "peek": ("limit", "offset", "cursor"),
               "load": ("key", "val", "diff", "time"), "reinstall": ("functions",)}


def is_skipped(line: str) -> bool:
    """Blank lines and whole-line `#` / `--` comments."""
    s = line.strip()
    return not s or s.startswith("#") or s.startswith("--")


def _split_options(cmd: str, args: list) -> tuple:
    positional, options = [], {}
    allowed = OPTION_KEYS.get(cmd, ())
    for a in args:
        if is_option(a):
            key, _, value = a.partition("=")
            if key not in allowed:
                raise CommandError(f"`{cmd}` has no option `{key}=`"
                                   + (f" (options: {', '.join(k + '=' for k in allowed)})"
                                      if allowed else ""))
            if key in options:
                raise CommandError(f"option `{key}=` given twice")
            options[key] = value
        else:
            if options:
                raise CommandError(f"`{a}`: positional arguments must come before options")
            positional.append(a)
    return positional, options


_INTEGER = re.compile(r"-?[0-9]+")


def _int(text: str, what: str, minimum: int | None = None) -> int:
    """A decimal integer that fits in 64 bits (SPEC A1), at least ``minimum``."""
    if not _INTEGER.fullmatch(text):
        raise CommandError(f"{what} must be an integer, got `{text}`")
    if len(text.lstrip("-").lstrip("0")) > 19 or not INT_MIN <= (n := int(text)) <= INT_MAX:
        raise CommandError(f"{what} {_clip(text)} does not fit in a signed 64-bit integer")
    if minimum is not None and n < minimum:
        raise CommandError(f"{what} must be at least {minimum}, got {n}")
    return n


def _clip(text: str, width: int = 40) -> str:
    """``text`` for a message, shortened in the middle if it is long."""
    return text if len(text) <= width else f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


def _value(text: str):
    try:
        return parse_value_token(text)
    except ValueTokenError as e:
        raise CommandError(str(e)) from None


def _arity(cmd: str, positional: list, lo: int, hi: int) -> None:
    if not lo <= len(positional) <= hi:
        raise CommandError(f"usage: {HELP['exit' if cmd == 'quit' else cmd][0]}")


def resolve_path(path: str, script_dir: str | None) -> str:
    """Against the current directory, then the running script's directory."""
    if os.path.exists(path) or script_dir is None or os.path.isabs(path):
        return path
    candidate = os.path.join(script_dir, path)
    return candidate if os.path.exists(candidate) else path


def looked_in(path: str, script_dir: str | None, error: Exception) -> str:
    """For a relative path that was found nowhere: where it was looked for
    (issue 26: `cd sessions && ddir shared_trace.txt` said only that
    `programs/producer.ddp` could not be read)."""
    if os.path.isabs(path) or not isinstance(error, FileNotFoundError):
        return ""
    places = [f"{os.path.abspath(os.curdir)} (the current directory)"]
    if script_dir is not None and os.path.abspath(script_dir) != os.path.abspath(os.curdir):
        places.append(f"{os.path.abspath(script_dir)} (the script's directory)")
    return " (looked in " + " and ".join(places) + ")"


def load_program(path: str, script_dir: str | None = None, paths=None):
    """Parse, lower and validate a program file (``CommandError`` /
    ``ProgramError`` on failure)."""
    return program_file(path, script_dir, paths)[0]


def program_file(path: str, script_dir: str | None = None, paths=None) -> tuple:
    """(program, its text) of a program file, read once. ``paths``: a
    network client's :class:`ddir.server.confine.DataDir` (SPEC E2): the file
    must be inside the data directory, and an error in it is given by its
    location only (``InvalidProgram``), never quoting the file."""
    head = f'cannot read program file "{path}"'
    resolved = resolve_path(path, script_dir) if paths is None else paths.read(path, head)
    try:
        with open(resolved, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        if paths is not None:  # a decoding error quotes bytes of the file
            raise InvalidProgram(f"{head}: not UTF-8 text") from None
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidProgram(f"{head}: {reason}{looked_in(path, script_dir, e)}") from None
    if paths is None:
        return program_from_source(source, path), source
    try:
        return program_from_source(source, path), source
    except ProgramError as e:
        raise InvalidProgram(paths.hide_program_error(str(e), path)) from None


def read_source(path: str):
    """A program file's text (None if it cannot be read now)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def program_from_source(source: str, path: str, syntax: str | None = None):
    """Parse, lower and validate program text; ``path`` labels errors and
    its extension chooses `.ddp` or `.ddir` unless ``syntax`` says
    (``ProgramError`` on failure), generated-source imports included."""
    from .generated import check_recipes
    from ..lang.ast import Export
    tree = parse_program(source, path, syntax)
    program = lower(tree)
    check_recipes(program, source, [(s.name, s.loc) for s in tree.body if isinstance(s, Export)])
    return program


def _columns(text: str, what: str) -> tuple:
    """``a,b`` -> ("a", "b"); an empty ``key=`` is no column (a unit key)."""
    names = tuple(text.split(",")) if text else ()
    if any(not n for n in names):
        raise CommandError(f"{what} needs column names separated by single commas, got `{text}`")
    return names


# `feed P N a,b,...` with short plain integers, the shape of bulk feed scripts:
# read in one match (what the general path would build, minus its checks,
# which such a line cannot fail: 18 digits always fit in i64).
_PLAIN_FEED = re.compile(r"[ \t]*feed[ \t]+([^\s=]+)[ \t]+([0-9]{1,18})[ \t]+"
                         r"(-?[0-9]{1,18}(?:,-?[0-9]{1,18})*)\s*")


def plain_feed(line: str):
    """The :class:`Feed` of a plain ``feed P N a,b,...`` line (integers, no
    options), else None: such lines can be staged together (a script's bulk)."""
    plain = _PLAIN_FEED.fullmatch(line)
    if plain is None:
        return None
    prog, n, key = plain.groups()
    return Feed(prog, int(n), tuple(map(int, key.split(","))), (), None, 1)


def pages_at_prompt(cmd) -> bool:
    """A plain ``peek`` typed at a prompt shows one page of
    ``output.PROMPT_PAGE`` rows (SPEC B); one with ``limit=`` or a cursor
    page keeps its own. The local prompt and ``connect`` both ask this."""
    return isinstance(cmd, Peek) and cmd.limit is None and cmd.cursor is None


def parse_command(line: str, script_dir: str | None = None, paths=None,
                  source: str | None = None):
    """One command line -> a command (``None`` for blank/comment lines).

    ``source``: the text of the program an ``install`` names, sent by a
    client (``serve``'s ``"source"``): the file name then only picks the
    syntax and labels errors, and no file is read.

    ``paths``: None for local use (scripts, the prompt, the API: paths are
    the user's, SPEC E2); for a network client of ``serve`` its
    :class:`ddir.server.confine.DataDir`, which resolves every path the line
    names, before any file is opened, or raises ``AccessRefused``."""
    if any(c in line.strip() for c in "\n\r\v\f"):  # (a CRLF script's lines end in \r: fine)
        raise CommandError("one command line at a time (this one has a line break inside)")
    plain = plain_feed(line)
    if plain is not None:
        return plain
    if is_skipped(line):
        return None
    words = split_words(line)  # blanks inside (), [] and "..." stay in their word (SPEC D1)
    cmd, args = words[0], words[1:]
    if cmd not in COMMANDS:
        raise CommandError(f"unknown command `{cmd}` (try `help`)")
    if cmd == "install":  # install <name> <file> [<import>=<trace or random(...)>]... (SPEC D3)
        from .generated import RecipeError, binding_source, bind_imports
        positional, words = args[:2], args[2:]
        if len(positional) < 2 or any(is_option(a) for a in positional) or \
                any(not w.partition("=")[0] or not w.partition("=")[1] for w in words):
            raise CommandError(f"usage: {HELP['install'][0]} [<import>=<trace>|"
                               "<import>=random(seed=..,arity=..,range=..,count=..,churn=..)]...")
        name, path = positional
        bindings: dict = {}
        for word in words:
            local, _, binding = word.partition("=")
            if local in bindings:
                raise CommandError(f"install: `{local}=` given twice")
            try:
                bindings[local] = binding_source(binding, f"install: `{word}`")
            except RecipeError as e:
                raise CommandError(str(e)) from None
            if not bindings[local]:
                raise CommandError(f"install: `{word}` names no trace")
        try:
            if source is None:
                program, source = program_file(path, script_dir, paths)
            else:
                program = program_from_source(source, path)
        except ProgramError as e:
            raise InvalidProgram(str(e)) from None
        try:
            program = bind_imports(program, bindings)
        except RecipeError as e:
            raise CommandError(f"install: {e}") from None
        return Install(name, path, program, source)
    positional, options = _split_options(cmd, args)
    if cmd == "reinstall":
        _arity(cmd, positional, 1, 2)
        module = options.get("functions")
        if module is not None and not module:
            raise CommandError("functions= needs a module name or a .py file")
        if paths is not None:
            module = paths.functions_module(module)
        if len(positional) == 1:
            return Reinstall(positional[0], None, functions=module)
        name, path = positional
        try:
            program, source = program_file(path, script_dir, paths)
        except ProgramError as e:
            raise InvalidProgram(str(e)) from None
        return Reinstall(name, path, program, source, module)
    if cmd == "feed":
        _arity(cmd, positional, 3, 3)
        prog, n, key = positional
        return Feed(prog, _int(n, "the input number", 0), _value(key),
                    _value(options.get("val", "")),
                    _int(options["time"], "time=", 0) if "time" in options else None,
                    _int(options.get("diff", "1"), "diff="))
    if cmd == "load":
        _arity(cmd, positional, 3, 3)
        prog, n, path = positional
        diff = options.get("diff")
        if diff is not None and not diff:
            raise CommandError("diff= needs a column name")
        key = _columns(options["key"], "key=") if "key" in options else None
        val = _columns(options["val"], "val=") if "val" in options else None
        time = _int(options["time"], "time=", 0) if "time" in options else None
        if paths is not None:
            from .bulk import file_format  # the extension first, as locally
            file_format(path, "load")
            return Load(prog, _int(n, "the input number", 0), path,
                        paths.read(path, f'load "{path}"'), key, val, diff, time, confined=True)
        return Load(prog, _int(n, "the input number", 0), path, resolve_path(path, script_dir),
                    key, val, diff, time)
    if cmd == "save":
        _arity(cmd, positional, 2, 2)
        if paths is not None:
            return Save(*positional, resolved=paths.write(positional[1],
                                                          f'save "{positional[1]}"'))
        return Save(*positional)
    if cmd == "checkpoint":
        _arity(cmd, positional, 1, 1)
        if paths is not None:
            return Checkpoint(positional[0], paths.directory(positional[0],
                                                             f'checkpoint "{positional[0]}"'))
        return Checkpoint(positional[0])
    if cmd == "peek" and "cursor" in options:
        if len(positional) > 2:
            raise CommandError(f"usage: {HELP['peek cursor'][0]}")
        if "offset" in options:
            raise CommandError("`offset=` cannot be combined with `cursor=` (a cursor knows "
                               "where it is)")
        if not options["cursor"]:
            raise CommandError("cursor= needs a token")
        has_key = len(positional) == 2
        limit = _int(options["limit"], "limit=", 1) if "limit" in options else None
        return Peek(positional[0] if positional else "",
                    _value(positional[1]) if has_key else None, has_key, limit, 0,
                    options["cursor"])
    if cmd in ("subscribe", "unsubscribe"):
        if cmd == "subscribe":
            _arity(cmd, positional, 1, 2)
            has_key = len(positional) == 2
            return Subscribe(positional[0], _value(positional[1]) if has_key else None, has_key)
        _arity(cmd, positional, 1, 1)
        return Unsubscribe(positional[0])
    if cmd == "peek":
        _arity(cmd, positional, 1, 2)
        has_key = len(positional) == 2
        return Peek(positional[0], _value(positional[1]) if has_key else None, has_key,
                    _int(options["limit"], "limit=", 0) if "limit" in options else None,
                    _int(options.get("offset", "0"), "offset=", 0))
    if cmd == "drop":
        _arity(cmd, positional, 1, 1)
        return Drop(positional[0])
    if cmd == "help":
        _arity(cmd, positional, 0, 2)
        # `help peek cursor`: an entry of the table is one or two words
        topic = " ".join(positional) if positional else None
        if topic is not None and topic not in COMMANDS and topic not in HELP:
            raise CommandError(f"no command `{topic}` (try `help`)")
        return Help(topic)
    _arity(cmd, positional, 0, 0)
    return {"tick": Tick, "list": ListCmd, "exit": Exit, "quit": Exit}[cmd]()
