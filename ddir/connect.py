"""``ddir connect ws://HOST:PORT``: the prompt (or a script) against a
running ``ddir serve`` (SPEC C3).

A :class:`RemoteSession` stands in for :class:`ddir.server.session.Session`
at the prompt of :mod:`ddir.repl`: it sends each line as a request, waits for
its ``done``, rebuilds the JSON records into the records the server made
(values back from their JSON form) and renders them with
:func:`ddir.server.output.render_text`, so the text is the CLI's. ``install``
and ``check`` send the local file's text as ``"source"``; ``load``/``save``
name files on the server's machine. Names for completion and the epoch in the
prompt come from a ``list`` after each command. Records pushed by the server
(subscriptions) are printed as they arrive.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import sys
import threading
import time
from types import SimpleNamespace

from . import options
from .options import UsageError
from .server import commands as C
from .server.output import (PROMPT_PAGE, changes_at, error_record, prompt_page, render_json,
                            render_text, text_order)
from .values import from_json

DEFAULT_URL = "ws://127.0.0.1:7468"  # where `ddir serve` listens by default
POLL_SECONDS = 2.0  # at the prompt: how often the epoch is read again

USAGE = """usage: ddir connect [ws://HOST:PORT] [--token-file F] [--json] [SCRIPT...]

  ws://HOST:PORT  the server (default ws://127.0.0.1:7468, `ddir serve`'s default;
                  wss:// for a server with --certfile)

  SCRIPT          scripts to send, one after the other (stdin if none; the
                  prompt if stdin is a terminal)
  --token-file F  send `Authorization: Bearer <the file's text>` (the file must
                  be readable by you alone); without it, a server on this
                  machine is asked with the token it keeps for its port
  --json          print the server's JSON records (without their ids)

`install` and `check` send the local program file; `load` and `save` name files
on the server's machine.
exit status: 0 done, 2 bad usage or no connection, 3 the connection was lost
"""


def _refusal_hint(status: int, sent_token: bool, token_file) -> str:
    if status == 401 and sent_token:
        where = f" in {token_file}" if token_file else " this machine keeps for that port"
        return f" (the token{where} was refused: the server has another one)"
    if status == 401:
        return " (a token is needed: --token-file F, or connect from the server's machine)"
    if status == 429:
        return " (too many failed handshakes from here: wait a minute)"
    if status == 503:
        return " (the server has as many connections as it takes: try again later)"
    return ""


class ConnectionLost(Exception):
    pass


class RemoteState:
    """What the prompt reads from a server: names (for completion), epoch."""

    def __init__(self):
        self.programs: dict = {}
        self.traces: list = []
        self.epoch = 0
        self.progress = None  # the prompt sets a progress bar; remote loads show none

    def update(self, listing: dict) -> None:
        self.epoch = listing["epoch"]
        self.traces = [t["name"] for t in listing["traces"]]
        self.programs = {p["name"]: SimpleNamespace(name=p["name"], origin=p["origin"])
                         for p in listing["programs"]}


class RemoteSession:
    """Lines in, the server's records out (a Session over a websocket)."""

    def __init__(self, ws, json_mode: bool = False, out=None):
        self.ws = ws
        self.json_mode = json_mode
        self._out = out
        self.interactive = False
        self.failed = False
        self.finished = False
        self.server = RemoteState()
        self._ids = itertools.count(1)
        self._waiting: set = set()
        self._cancels: set = set()  # ids of our `cancel` requests (answered, not shown)
        self._pushed: list = []
        self._busy = False       # a line's reply is on its way to the screen
        self._late: list = []    # pushes that came meanwhile, after its done
        self._replies: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._talking = threading.RLock()  # one request on the wire at a time (the poller's too)
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()

    @property
    def out(self):
        return self._out or sys.stdout  # looked up each time: patch_stdout at the prompt

    # ---------------------------------------------------------- the wire

    def _receive(self) -> None:
        try:
            for message in self.ws:
                obj = json.loads(message)
                with self._lock:
                    if obj.get("id") in self._cancels:
                        if obj.get("kind") == "done":
                            self._cancels.discard(obj["id"])
                        continue
                    mine = obj.get("id") in self._waiting
                    if not mine and self._waiting:
                        # pushed while a request runs (its tick or drop made it,
                        # or a command sequenced before it): printed with its
                        # reply, where the local CLI prints it
                        self._pushed.append(obj)
                        continue
                    if mine and obj.get("kind") == "done":
                        # the server sends a command's pushes before its done;
                        # what comes after belongs to later commands, so the
                        # request ends here, not when the caller wakes up
                        self._waiting.discard(obj["id"])
                        obj["_pushed"], self._pushed = self._pushed, []
                    if not mine and self._busy:  # printed after that reply
                        self._late.append(obj)
                        continue
                    if not mine:  # pushed at the prompt: another client's tick
                        self.emit([rebuild(obj)])
                        continue
                self._replies.put(obj)
        except Exception:
            pass
        self._replies.put(None)

    def request(self, line: str, source: str | None = None) -> list:
        """The records answering one line (raw JSON objects, ids removed)."""
        with self._talking:
            return self._request(line, source)

    def _request(self, line: str, source: str | None) -> list:
        req_id = next(self._ids)
        body = {"id": req_id, "line": line}
        if source is not None:
            body["source"] = source
        with self._lock:
            self._waiting.add(req_id)
        try:
            self.ws.send(json.dumps(body))
        except Exception:
            raise ConnectionLost("the connection to the server was lost") from None
        records = []
        while True:
            try:
                obj = self._replies.get()
            except KeyboardInterrupt:  # SPEC E3: Ctrl-C cancels what runs; its answer still comes
                self._cancel()
                continue
            if obj is None:
                self._replies.put(None)
                raise ConnectionLost("the connection to the server was lost")
            if obj.get("id") != req_id:
                continue
            if obj.get("kind") == "done":
                return merge(records, obj["_pushed"])
            obj.pop("id", None)
            records.append(obj)

    def _cancel(self) -> None:
        cancel_id = f"cancel-{next(self._ids)}"
        with self._lock:
            self._cancels.add(cancel_id)
        try:
            self.ws.send(json.dumps({"id": cancel_id, "line": "cancel"}))
            print("^C: cancelling (the command ends as a failed tick would)", file=sys.stderr,
                  flush=True)
        except Exception:
            pass

    def poll(self, every: float, lost) -> threading.Thread:
        """At the prompt: the epoch and names stay current while another
        client ticks (a ``list`` every ``every`` seconds when no line is
        being run; pushes that come with it are printed at once), and a
        server that went away is said at once: ``lost(ConnectionLost)``,
        not at the next command (issue 26, item 7)."""
        def run():
            while True:
                time.sleep(every)
                if not self._talking.acquire(blocking=False):
                    continue  # a line is running: it refreshes after itself
                try:
                    records = self.request("list")
                except ConnectionLost as e:
                    lost(e)
                    return
                finally:
                    self._talking.release()
                listing = [r for r in records if r.get("kind") == "list"]
                if listing:
                    self.server.update(listing[0])
                self.emit([rebuild(r) for r in records if r.get("kind") != "list"])
        thread = threading.Thread(target=run, name="ddir-connect-poll", daemon=True)
        thread.start()
        return thread

    def refresh(self) -> None:
        records = self.request("list")
        listing = [r for r in records if r.get("kind") == "list"]
        if listing:
            self.server.update(listing[0])
        with self._lock:  # pushes that came with the list are printed after the line
            self._late += [r for r in records if r.get("kind") != "list"]

    # ---------------------------------------------------------- lines

    def emit(self, records) -> None:
        out = self.out
        if not self.json_mode:
            records = text_order(records)
        for record in records:
            out.write(render(record, self.json_mode) + "\n")
        out.flush()

    def run_line(self, line: str, file: str | None = None, lineno: int | None = None) -> bool:
        """Send one line; False once the session should stop."""
        if C.is_skipped(line):
            return True
        words = line.split()
        if words[0] in ("exit", "quit") and len(words) == 1:
            self.finished = True
            return False
        source = None
        if words[0] in ("install", "check") and len(words) == 3 - (words[0] == "check"):
            script_dir = os.path.dirname(os.path.abspath(file)) if file else None
            path = words[-1]
            try:
                with open(C.resolve_path(path, script_dir), encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                reason += C.looked_in(path, script_dir, e)  # as the local CLI says it
                return self._report([{"kind": "error",
                                      "message": f'cannot read program file "{path}": {reason}'}],
                                    file, lineno)
        paged = False
        if words[0] == "peek" and self.interactive:
            try:
                paged = C.pages_at_prompt(C.parse_command(line))
            except C.CommandError:
                pass  # the server says what is wrong with it
        if paged:
            line = f"{line.rstrip()} limit={PROMPT_PAGE}"
        with self._lock:
            self._busy = True
        try:
            records = [rebuild(r) for r in self.request(line, source)]
            if paged:
                records = prompt_page(records)
            if self.interactive:
                self.refresh()
            self._report(records, file, lineno)
        finally:
            with self._lock:  # (the receiver emits under the lock too: one order)
                self._busy = False
                late, self._late = self._late, []
                self.emit([rebuild(r) for r in late])
        return True

    def _report(self, records, file, lineno) -> bool:
        if file is not None:
            records = [error_record(r["message"], file, lineno) if r["kind"] == "error" else r
                       for r in records]
        self.emit(records)
        if any(r["kind"] == "error" for r in records):
            self.failed = True
        return True

    def run_script(self, path: str, lines) -> bool:
        for lineno, line in enumerate(lines, start=1):
            if not self.run_line(line.rstrip("\n"), path, lineno):
                return False
        return True


# ============================================================ records


def merge(records: list, pushed: list) -> list:
    """A reply with the subscription records its command produced, in the
    local CLI's order: changes right after the tick's inspect events, an
    ``ended`` after the drop's record."""
    for r in pushed:
        r.pop("id", None)
    changes = [r for r in pushed if r.get("kind") == "change"]
    others = [r for r in pushed if r.get("kind") != "change"]
    at = changes_at(records)
    return records[:at] + changes + records[at:] + others


def rebuild(obj: dict) -> dict:
    """A wire record back into the server's record (values, times and
    ``has_key`` as :func:`render_text` reads them)."""
    r = {k: v for k, v in obj.items() if k != "id"}
    kind = r.get("kind")
    try:
        if kind == "peek":
            r["has_key"] = r.get("key") is not None
            r["key"] = from_json(r["key"]) if r["has_key"] else None
            r["rows"] = [(from_json(k), from_json(v), d) for k, v, d in r["rows"]]
        elif kind == "inspect":
            r["key"], r["val"] = from_json(r["key"]), from_json(r["val"])
            r["time"] = tuple(r["time"])
        elif kind in ("subscribed", "change") and isinstance(r.get("rows"), list):
            r["has_key"] = "key" in r
            if r["has_key"]:
                r["key"] = from_json(r["key"])
            r["rows"] = [(from_json(row[0]), from_json(row[1]), *row[2:]) for row in r["rows"]]
        r["_wire"] = obj
    except (KeyError, TypeError, ValueError):
        r["_wire"] = obj
    return r


def render(record: dict, json_mode: bool) -> str:
    wire = record.get("_wire")
    plain = {k: v for k, v in record.items() if k != "_wire"}
    if json_mode:
        if wire is None:
            return render_json(plain)
        return json.dumps({k: v for k, v in wire.items() if k != "id"}, separators=(", ", ": "))
    if plain.get("kind") == "checked":
        return f"{plain['file']}: ok"
    try:
        return render_text(plain)
    except Exception:  # a record this client does not know: show it as JSON
        return json.dumps({k: v for k, v in (wire or plain).items() if k != "id"},
                          separators=(", ", ": "))


# ============================================================ command line


def parse_args(argv: list) -> dict:
    opts, positional = options.parse(argv, {"token_file": None, "json": False},
                                     texts={"--token-file": ("token_file", "a file")},
                                     flags={"--json": "json"})
    if positional and "://" in positional[0]:
        opts["url"], opts["scripts"] = positional[0], positional[1:]
    else:  # `serve`'s own default (a newcomer's `ddir connect` had no address to go to)
        opts["url"], opts["scripts"] = DEFAULT_URL, positional
    if not opts["url"].startswith(("ws://", "wss://")):
        raise UsageError(f"the address must start with ws:// or wss://, got `{opts['url']}`")
    return opts


def main(argv: list) -> int:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    from .serve_auth import find_local_token, read_secret
    if "-h" in argv or "--help" in argv:
        print(USAGE, end="")
        return 0
    try:
        opts = parse_args(argv)
        # SPEC E1: a local server keeps its token where we find it
        token = (read_secret(opts["token_file"]) if opts["token_file"]
                 else find_local_token(opts["url"]))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = connect(opts["url"], additional_headers=headers, max_size=None, compression=None,
                     open_timeout=10)
    except InvalidStatus as e:
        status = e.response.status_code
        hint = _refusal_hint(status, token is not None or "token=" in opts["url"],
                             opts["token_file"])
        print(f"error: {opts['url']} refused the connection: HTTP {status}{hint}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"error: cannot connect to {opts['url']}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return 2
    session = RemoteSession(ws, json_mode=opts["json"])
    try:
        for path in opts["scripts"]:
            try:
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
            except OSError as e:
                session.emit([{"kind": "error",
                               "message": f'cannot read script "{path}": {e.strerror}'}])
                return 2
            if not session.run_script(path, lines):
                break
        if not opts["scripts"]:
            if sys.stdin.isatty() and not opts["json"]:
                from prompt_toolkit.patch_stdout import patch_stdout
                from .repl import make_prompt_session, run_prompt
                session.refresh()
                prompt = make_prompt_session(session, refresh_interval=POLL_SECONDS)

                def lost(e):  # end the prompt from the poller's thread
                    app = prompt.app
                    if app.is_running:
                        app.loop.call_soon_threadsafe(lambda: app.exit(exception=e))
                session.poll(POLL_SECONDS, lost)
                with patch_stdout(raw=True):
                    run_prompt(session, prompt)
            else:
                session.run_script("<stdin>", sys.stdin)
        return 0
    except ConnectionLost as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            ws.close()
        except Exception:
            pass
