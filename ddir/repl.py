"""The interactive prompt (prompt_toolkit): history, completion, colouring.

Kept apart from the server: it only reads the server's names for
completion and hands each line to the :class:`Session`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

from prompt_toolkit import PromptSession
from prompt_toolkit.buffer import CompletionState
from prompt_toolkit.completion import (CompleteEvent, Completer, Completion, PathCompleter,
                                       get_common_complete_suffix)
from prompt_toolkit.document import Document
from prompt_toolkit.filters import emacs_insert_mode, vi_insert_mode
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import Lexer

from .server.commands import COMMANDS, OPTION_KEYS
from .server.session import Session


def history_path() -> str:
    return os.environ.get("DDIR_HISTORY") or os.path.join(os.path.expanduser("~"), ".ddir_history")


class DdirCompleter(Completer):
    """Commands, then per command: program names, trace names, program
    files after ``install <name>``, and option keys."""

    def __init__(self, session: Session):
        self.session = session
        self.paths = PathCompleter(file_filter=lambda p: os.path.isdir(p) or p.endswith((".ddp", ".ddir")))
        self.data_paths = PathCompleter(file_filter=lambda p: os.path.isdir(p) or p.lower().endswith(
            (".parquet", ".arrow", ".feather", ".ipc", ".csv")))

    def get_completions(self, document: Document, complete_event):
        text = document.text_before_cursor
        words = text.split()
        if text and not text[-1].isspace():
            current = words[-1] if words else ""
            before = words[:-1]
        else:
            current, before = "", words
        server = self.session.server
        if not before:
            yield from self._words(current, COMMANDS)
            return
        cmd = before[0]
        position = len(before)
        candidates: list = []
        if (cmd == "install" and position == 2) or (cmd in ("load", "save") and position == {
                "load": 3, "save": 2}[cmd]):
            sub = Document(current, len(current))
            paths = self.paths if cmd == "install" else self.data_paths
            yield from paths.get_completions(sub, complete_event)
            return
        if cmd in ("feed", "drop", "load") and position == 1:
            candidates = [p.name for p in server.programs.values()
                          if cmd == "drop" or p.origin == "program"]
        elif cmd in ("peek", "save", "subscribe", "unsubscribe") and position == 1:
            candidates = sorted(server.traces)
        elif cmd == "help" and position == 1:
            candidates = list(COMMANDS)
        if cmd in OPTION_KEYS and position >= {"feed": 3, "load": 4}.get(cmd, 1):
            candidates += [k + "=" for k in OPTION_KEYS[cmd]]
        yield from self._words(current, candidates)

    @staticmethod
    def _words(prefix: str, words):
        for w in words:
            if w.startswith(prefix):
                yield Completion(w, start_position=-len(prefix))


class CommandLexer(Lexer):
    """Command word, option keys and numbers in distinct colours."""

    def lex_document(self, document):
        def line_tokens(lineno: int):
            line = document.lines[lineno]
            if line.lstrip().startswith(("#", "--")):
                return [("class:comment", line)]
            out = []
            first = True
            for part in _split_keep_spaces(line):
                if part.isspace():
                    out.append(("", part))
                elif first:
                    out.append(("class:command" if part in COMMANDS else "class:error", part))
                    first = False
                elif "=" in part and part.split("=", 1)[0].isidentifier():
                    key, value = part.split("=", 1)
                    out += [("class:option", key + "="), ("class:value", value)]
                else:
                    out.append(("class:value", part))
            return out
        return line_tokens


def _split_keep_spaces(line: str) -> list:
    return re.findall(r"\s+|\S+", line)


STYLE = {
    "command": "bold ansiblue", "option": "ansimagenta", "value": "ansigreen",
    "comment": "italic ansibrightblack", "error": "ansired",
}


def _tab_bindings() -> KeyBindings:
    """Tab completes the current word synchronously.

    prompt_toolkit's own Tab starts an asynchronous completion, and only one
    runs at a time: when keys arrive in one burst (a paste, then Tab) the
    complete-while-typing run is already in flight and Tab's request is
    dropped, so `peek ed<Tab>` stayed `peek ed`. Computing the completions
    right here makes Tab work whatever the timing."""
    kb = KeyBindings()

    @kb.add("c-i", filter=vi_insert_mode | emacs_insert_mode)  # as the default Tab
    def _(event) -> None:
        b = event.current_buffer
        if b.complete_state and b.complete_state.completions:
            b.complete_next()  # a menu is open: Tab walks through it, as before
            return
        if b.completer is None:
            return
        document = b.document
        completions = list(b.completer.get_completions(
            document, CompleteEvent(completion_requested=True)))
        if len(completions) == 1:
            b.apply_completion(completions[0])
        elif completions:
            common = get_common_complete_suffix(document, completions)
            if common:
                b.insert_text(common)
            else:  # nothing to insert: show the choices
                b.complete_state = CompletionState(original_document=document,
                                                   completions=completions)
    return kb


def make_prompt_session(session: Session, **kwargs) -> PromptSession:
    from prompt_toolkit.styles import Style
    return PromptSession(history=FileHistory(history_path()), completer=DdirCompleter(session),
                         lexer=CommandLexer(), style=Style.from_dict(STYLE),
                         enable_history_search=False, key_bindings=_tab_bindings(), **kwargs)


def progress_bar(after: float = 1.0, **bar_options):
    """A ``progress`` for the server (:attr:`ddir.server.registry.Server.progress`):
    a load or save that is still running after ``after`` seconds shows a
    prompt_toolkit progress bar (rows done of rows in the file) until it ends."""
    @contextlib.contextmanager
    def progress(label: str, total):
        from prompt_toolkit.shortcuts import ProgressBar
        lock = threading.Lock()
        state = {"done": 0, "total": total, "bar": None, "counter": None, "over": False}

        def show() -> None:
            with lock:
                if state["over"]:
                    return
                bar = ProgressBar(**bar_options)
                bar.__enter__()
                counter = bar(label=label + ": ", total=state["total"])
                counter.items_completed = state["done"]
                state["bar"], state["counter"] = bar, counter

        timer = threading.Timer(after, show)
        timer.daemon = True
        timer.start()

        def update(done: int, total=None) -> None:
            with lock:
                state["done"] = done
                if total is not None:
                    state["total"] = total
                counter = state["counter"]
                if counter is not None:
                    counter.total = state["total"]
                    counter.items_completed = done
                    state["bar"].invalidate()
        try:
            yield update
        finally:
            timer.cancel()
            with lock:
                state["over"] = True
                bar = state["bar"]
            if bar is not None:
                bar.__exit__(None, None, None)
    return progress


def run_prompt(session: Session, prompt_session: PromptSession | None = None) -> None:
    """Read lines until exit / Ctrl-D; Ctrl-C clears the line."""
    # Whoever built the Session, at the prompt `peek` pages (50 rows and how
    # to see the rest, SPEC B); scripts and --json never reach here.
    session.interactive = True
    session.server.progress = progress_bar()
    prompt = prompt_session or make_prompt_session(session)
    while True:
        try:
            # a callable: redrawn with the epoch of now (`connect` reads it
            # again while the prompt waits: another client's tick shows)
            line = prompt.prompt(lambda: f"ddir [{session.server.epoch}]> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        if not session.run_line(line):
            return
