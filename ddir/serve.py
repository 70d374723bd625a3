"""``ddir serve``: the server behind a WebSocket endpoint (SPEC C3).

::

    ddir serve [--host 127.0.0.1] [--port 7468] [-w N] [--token-file F]
               [--max-rounds N] [--functions MODULE] [--subscriber-queue N]
               [--json] [SCRIPT...]

Protocol: a client sends text frames, each a JSON object ``{"id": <any>,
"line": "<command line>"}`` (optionally ``"source": "<program text>"`` for
``install``/``check``); the server answers with the records ``--json`` would
print, each with the request's ``"id"`` first, then ``{"id": ..., "kind":
"done"}``. Every frame gets a ``done``, also one that is not JSON (its id is
``null``).

Structure (one sequencer, SPEC C3):

* The asyncio event loop (main thread) owns the sockets: one reader and one
  writer task per connection. It never runs a command.
* One *sequencer* thread owns the :class:`ddir.Server` (the engine is not
  thread-safe): requests of all clients go into one FIFO in arrival order and
  run there one at a time. Each result is handed back to the loop with
  ``call_soon_threadsafe``, which keeps that order, so every client sees one
  consistent history (a subscription push of a tick reaches a client before
  that client's reply to any later command).
* Each connection has an :class:`Outbox` drained by its writer task; a slow
  reader only fills its own outbox. Replies are bounded by the number of
  requests a connection may have in flight (``MAX_IN_FLIGHT``; past it the
  reader stops reading, so TCP pushes back on that client only); subscription
  pushes are bounded per subscription (``--subscriber-queue``, default
  10,000 records, and 64 MiB): the one that overflows is dropped from the
  outbox, ended on the server, and the client gets one error record. A
  client is never cut off for not answering keepalive pings (see
  :func:`listen`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus

from . import options
from .errors import DdirError, InvalidProgram, ServerStopped
from .lang.errors import ProgramError
from .options import UsageError
from .server import commands as C
from .server.confine import DataDir
from .server.functions import check_calls
from .server.output import changes_at, render_json

USAGE = """usage: ddir serve [--host HOST] [--port PORT] [-w N | --mpi] [--token-file F]
                  [--max-rounds N] [--functions MODULE] [--subscriber-queue N] [--json]
                  [SCRIPT...]

  SCRIPT            scripts to run before serving (their output goes to stdout)
  --host HOST       address to listen on (default 127.0.0.1); an address that is
                    not loopback needs --token-file
  --port PORT       TCP port (default 7468; 0 picks a free one)
  --token-file F    clients must send `Authorization: Bearer <the file's text>`
  -w N, --workers N worker processes (1 to 64, default 1)
  --mpi             the workers are the ranks of `mpiexec -n N ddir serve --mpi ...`;
                    rank 0 serves
  --max-rounds N    as for `ddir`
  --functions MODULE
                    as for `ddir`: terms of every client's programs may call the
                    module's public functions as @name(args...); `check` checks them
  --subscriber-queue N
                    records queued per subscription before it is ended (default 10000;
                    past 64 MiB queued it is ended too)
  --json            scripts' output as JSON lines

The address served is printed on stderr once the server listens:
`ddir: serving on ws://HOST:PORT`. SIGTERM / SIGINT stop it cleanly.
"""

DEFAULT_PORT = 7468
MAX_FRAME = 1 << 20          # SPEC C3: a bigger frame gets an error record
HARD_FRAME = 64 << 20        # past this websockets closes the connection (1009): a memory guard
MAX_IN_FLIGHT = 64           # requests of one connection queued or running
SUBSCRIBER_QUEUE = 10_000    # records queued per subscription
SUBSCRIBER_BYTES = 64 << 20  # ... and bytes: 10,000 records of 1 MB each are not "bounded"
PING_INTERVAL = 20.0         # websockets keepalive pings (no pong timeout: see listen())
TCP_KEEPALIVE = (60, 10, 6)  # idle s, interval s, probes: a vanished host is found in ~2 min
MAX_CONNECTIONS = 256        # open connections (SPEC E3); past it a handshake gets HTTP 503
MAX_SUBSCRIPTIONS = 64       # subscriptions per connection (SPEC E3: well under 1,000)
IDLE_TIMEOUT = 300           # s: a connection with no request, subscription or reply in flight


# ============================================================ arguments


def parse_args(argv: list) -> dict:
    opts, scripts = options.parse(
        argv, {"host": "127.0.0.1", "port": DEFAULT_PORT, "workers": None, "token_file": None,
               "max_rounds": None, "json": False, "subscriber_queue": SUBSCRIBER_QUEUE,
               "mpi": False, "functions": None, "no_token": False, "allow_origin": None,
               "certfile": None, "keyfile": None, "cursor_secret_file": None,
               "data_dir": None, "max_memory": None, "max_connections": MAX_CONNECTIONS,
               "max_subscriptions": MAX_SUBSCRIPTIONS, "idle_timeout": IDLE_TIMEOUT},
        numbers={**options.WORKERS, **options.MAX_ROUNDS, "--port": ("port", 0, 65535),
                 "--subscriber-queue": ("subscriber_queue", 1, 10 ** 9),
                 "--max-connections": ("max_connections", 1, 100_000),
                 "--max-subscriptions": ("max_subscriptions", 1, 100_000),
                 "--idle-timeout": ("idle_timeout", 1, 86_400)},
        texts={"--host": ("host", "a host name or address"),
               "--token-file": ("token_file", "a file"),
               "--functions": ("functions", "a module name or a .py file"),
               "--allow-origin": ("allow_origin", "origins (scheme://host[:port], comma-separated)"),
               "--certfile": ("certfile", "a PEM certificate file"),
               "--keyfile": ("keyfile", "a PEM private key file"),
               "--cursor-secret-file": ("cursor_secret_file", "a file"),
               "--data-dir": ("data_dir", "a directory"),
               **options.MAX_MEMORY},
        flags={"--json": "json", "--mpi": "mpi", "--no-token": "no_token"})
    opts["scripts"] = scripts
    if opts["max_memory"] is not None:
        opts["max_memory"] = options.size("--max-memory", opts["max_memory"])
    if opts["no_token"] and opts["token_file"]:
        raise UsageError("--no-token and --token-file exclude each other")
    if (opts["certfile"] is None) != (opts["keyfile"] is None):
        raise UsageError("--certfile and --keyfile go together (wss:// needs both)")
    return options.mpi_or_workers(opts)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f'cannot read token file "{path}": '
                         f"{getattr(e, 'strerror', None) or e}") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f'token file "{path}" must hold one token (no blanks), got '
                         f"{'nothing' if not token else 'blanks inside'}")
    return token


# ============================================================ frames


def frame(req_id, record: dict) -> str:
    """A record as `--json` prints it, with ``"id"`` first (spliced into the
    rendered object: no second encoding)."""
    return '{"id": ' + json.dumps(req_id) + ", " + render_json(record)[1:]


def done_frame(req_id) -> str:
    return '{"id": ' + json.dumps(req_id) + ', "kind": "done"}'


def error_frames(req_id, message: str) -> list:
    return [frame(req_id, {"kind": "error", "message": message}), done_frame(req_id)]


# ============================================================ subscriptions


@dataclass(eq=False)
class Subscription:
    """One client's subscription: pushed records are tagged with ``req_id``
    (the ``subscribe`` request's id). ``handle`` is whatever the engine's
    subscription API returns (see :class:`SubscriptionHook`)."""
    conn: "Connection"
    req_id: object
    trace: str
    handle: object = None
    queued: int = 0        # records of it in the outbox
    queued_bytes: int = 0  # and their size
    ended: bool = False


class SubscriptionHook:
    """THE ONE PLACE WHERE SUBSCRIPTIONS (SPEC C2) MEET THE ENGINE.

    Runs on the sequencer thread only. ``serve`` keeps the network side
    (tagging pushes with the ``subscribe`` request's id, a bounded queue per
    subscription, ending one that overflows, freeing a disconnected client's);
    the engine side is the registry's: ``execute(cmd, owner, deliver)`` with
    the connection as ``owner`` and :meth:`_deliver` collecting the ``change``
    / ``ended`` records a tick or drop produces (each carries ``"sub"``, the
    registry's id of the subscription), ``end_subscription(id)`` and
    ``release_owner(conn)`` (the subscriptions of a client that went away;
    cursor leases outlive it, so its cursors work after a reconnect)."""

    def __init__(self):
        self.by_id: dict = {}     # registry subscription id -> Subscription
        self.pending: list = []   # (Subscription, record) of the command running

    def handles(self, cmd) -> bool:
        return isinstance(cmd, (C.Subscribe, C.Unsubscribe))

    def run(self, client, conn, req_id, cmd) -> tuple:
        """-> (reply records, new Subscription or None, [Subscriptions it ended])."""
        if isinstance(cmd, C.Subscribe):
            records = client.execute(cmd, conn, self._deliver)
            started = records[-1]
            sub = Subscription(conn, req_id, started["trace"], started["sub"])
            self.by_id[sub.handle] = sub
            return records, sub, []
        records = client.execute(cmd, conn)
        name = records[-1]["trace"]
        ended = [s for s in self.by_id.values() if s.conn is conn and s.trace == name]
        for s in ended:
            del self.by_id[s.handle]
        return records, None, ended

    def _deliver(self, records) -> None:
        for r in records:
            sub = self.by_id.get(r.get("sub"))
            if sub is not None:
                self.pending.append((sub, r))
                if r["kind"] == "ended":  # its producer was dropped
                    del self.by_id[sub.handle]

    def drain(self, client) -> list:
        """The pushes of the command just run."""
        out, self.pending = self.pending, []
        return out

    def release(self, client, sub: Subscription) -> None:
        """End one on the server (its queue overflowed)."""
        if self.by_id.pop(sub.handle, None) is not None:
            client.core.end_subscription(sub.handle)

    def release_owner(self, client, conn) -> None:
        """A client went away: its subscriptions go (not its cursors' leases:
        a token works after a reconnect, SPEC C4; the lease ends unused)."""
        for key in [k for k, s in self.by_id.items() if s.conn is conn]:
            del self.by_id[key]
        client.core.release_owner(conn)


# ============================================================ connections


class Outbox:
    """Frames waiting for one connection's writer. Replies are bounded by
    the requests in flight; pushes per subscription by ``limit`` records and
    ``byte_limit`` bytes (a record is always taken when none of that
    subscription is queued, so one huge change does not end a client that
    keeps up)."""

    def __init__(self, limit: int, byte_limit: int = SUBSCRIBER_BYTES):
        self.frames: deque = deque()   # (Subscription or None, text)
        self.limit = limit
        self.byte_limit = byte_limit
        self.ready = asyncio.Event()
        self.closed = False

    def put(self, texts, sub: Subscription | None = None) -> str | None:
        """None, or what ``sub`` has queued when ``texts`` would overflow it
        (nothing is added then), for the error record."""
        if self.closed:
            return None
        if sub is not None:
            if sub.ended:
                return None
            size = sum(len(t) for t in texts)
            if sub.queued:
                if sub.queued + len(texts) > self.limit:
                    return f"{sub.queued} records queued"
                if sub.queued_bytes + size > self.byte_limit:
                    return f"{sub.queued_bytes / (1 << 20):.1f} MiB queued"
            sub.queued += len(texts)
            sub.queued_bytes += size
        self.frames.extend((sub, t) for t in texts)
        self.ready.set()
        return None

    def sent(self, sub: Subscription | None, text: str) -> None:
        """The writer took ``text`` off the queue."""
        if sub is not None:
            sub.queued -= 1
            sub.queued_bytes -= len(text)

    def drop(self, sub: Subscription) -> None:
        """Forget every queued frame of ``sub`` (its memory is freed)."""
        self.frames = deque(item for item in self.frames if item[0] is not sub)
        sub.queued = sub.queued_bytes = 0


class Connection:
    def __init__(self, ws, limit: int, byte_limit: int = SUBSCRIBER_BYTES):
        self.ws = ws
        self.outbox = Outbox(limit, byte_limit)
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.subs: list = []
        self.closing = False    # exit/quit was asked: close after its done
        self.gone = False


# ============================================================ the hub


class Hub:
    """The sequencer and the connections it answers."""

    def __init__(self, client, loop, subscriber_queue: int = SUBSCRIBER_QUEUE,
                 hook: SubscriptionHook | None = None, subscriber_bytes: int = SUBSCRIBER_BYTES,
                 local_output=None, paths=None):
        """``local_output(records)``: where the startup scripts' subscriptions
        report (their session's output, the server's stdout). ``paths``: what
        a network client may touch (:class:`ddir.server.confine.DataDir`,
        SPEC E2; default the current directory, no functions= module)."""
        self.paths = paths if paths is not None else DataDir(os.getcwd())
        self.client = client
        self.loop = loop
        self.limit = subscriber_queue
        self.byte_limit = subscriber_bytes
        self.hook = hook or SubscriptionHook()
        self.local_output = local_output or (lambda records: None)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.connections: set = set()
        self.fatal: str | None = None
        self.stopped = asyncio.Event()
        self.thread = threading.Thread(target=self._sequencer, name="ddir-sequencer", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------- loop side

    def submit(self, conn: Connection, req_id, line: str, source) -> None:
        self.jobs.put(lambda: self._execute(conn, req_id, line, source))

    def answer_now(self, conn: Connection, frames: list) -> None:
        """A reply that needs no command (a malformed frame), still in order
        with the replies to the requests before it."""
        self.jobs.put(lambda: self.loop.call_soon_threadsafe(self._deliver, conn, frames, 0, [], []))

    def disconnected(self, conn: Connection) -> None:
        conn.gone = True
        conn.outbox.closed = True
        conn.outbox.frames.clear()
        self.connections.discard(conn)
        subs, conn.subs = conn.subs, []
        for sub in subs:
            sub.ended = True
        self.jobs.put(lambda: self.hook.release_owner(self.client, conn))

    def _end(self, sub: Subscription) -> None:
        if not sub.ended:
            sub.ended = True
            sub.conn.outbox.drop(sub)
            self.jobs.put(lambda: self.hook.release(self.client, sub))

    def _deliver(self, conn: Connection, frames: list, at: int, pushes: list, ended: list) -> None:
        """On the loop: the reply to ``conn`` and the pushes of its command,
        in the local CLI's order (``at``: :func:`changes_at` of the reply's
        records): the tick's inspect events, the ``change`` pushes, the rest
        of the reply, ``ended`` pushes, and ``done`` last, so a client that
        ticks has every change its tick made by the time it sees ``done``."""
        for sub in ended:
            sub.ended = True
            if sub in sub.conn.subs:
                sub.conn.subs.remove(sub)
        if conn is not None:
            conn.in_flight.release()
            conn.outbox.put(frames[:at])
        for sub, record in pushes:
            if record["kind"] == "change":
                self._push(sub, record)
        if conn is not None:
            conn.outbox.put(frames[at:-1])
        for sub, record in pushes:
            if record["kind"] != "change":
                self._push(sub, record)
        if conn is not None:
            conn.outbox.put(frames[-1:])

    def _push(self, sub: Subscription, record: dict) -> None:
        c = sub.conn
        if c.gone or sub.ended:
            return
        if record["kind"] == "ended":  # its producer was dropped
            c.outbox.put([frame(sub.req_id, record)])
            sub.ended = True
            if sub in c.subs:
                c.subs.remove(sub)
            return
        full = c.outbox.put([frame(sub.req_id, record)], sub)
        if full is not None:
            # overflow (SPEC C3): drop what it queued, end it, say so once
            self._end(sub)
            if sub in c.subs:
                c.subs.remove(sub)
            c.outbox.put([frame(sub.req_id, {
                "kind": "error",
                "message": f'subscription "{sub.trace}" ended: the client did not keep up '
                           f"({full})"})])

    # ---------------------------------------------------------- sequencer side

    def _sequencer(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a bug here must not kill the server's only thread
                traceback.print_exc(file=sys.stderr)

    def stop(self) -> None:
        """Let the sequencer finish what it runs (never half a tick), then end."""
        self.jobs.put(None)
        self.thread.join()

    def _execute(self, conn: Connection, req_id, line: str, source) -> None:
        sub = None
        ended: list = []
        close = False
        try:
            records, sub, ended, close = self._records(conn, req_id, line, source)
        except ServerStopped as e:
            self.fatal = str(e)
            records = [{"kind": "error", "message": str(e)}]
            self.loop.call_soon_threadsafe(self.stopped.set)
        except DdirError as e:
            records = [{"kind": "error", "message": str(e)}]
        except Exception as e:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            records = [{"kind": "error", "message": f"internal error: {type(e).__name__}: {e}"}]
        frames = [frame(req_id, r) for r in records]
        frames.append(done_frame(req_id))
        at = changes_at(records)
        try:
            pushes = self.hook.drain(self.client)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            pushes = []
        self.loop.call_soon_threadsafe(self._finish, conn, frames, at, pushes, ended, sub, close)

    def _finish(self, conn, frames, at, pushes, ended, sub, close) -> None:
        if sub is not None:
            if conn.gone:  # subscribed, then left before the reply
                self._end(sub)
            else:
                conn.subs.append(sub)
        if close:
            conn.closing = True
        self._deliver(conn, frames, at, pushes, ended)

    def _records(self, conn, req_id, line: str, source) -> tuple:
        """(records, new subscription, ended subscriptions, close after)."""
        if C.is_skipped(line):
            return [], None, [], False
        words = line.split()
        if source is not None or words[0] == "check":
            return self._with_source(conn, words, source), None, [], False
        cmd = C.parse_command(line, paths=self.paths)  # SPEC E2: paths in the data directory
        if isinstance(cmd, C.Exit):
            return [], None, [], True
        if self.hook.handles(cmd):
            records, sub, ended = self.hook.run(self.client, conn, req_id, cmd)
            return records, sub, ended, False
        if isinstance(cmd, (C.Install, C.Reinstall)) and cmd.program is not None:
            try:  # a server file: an error located in it is given without its text
                return self._own(self.client.execute(cmd, conn)), None, [], False
            except DdirError as e:
                hidden = self.paths.hide_program_error(str(e), cmd.program.file)
                if hidden == str(e):
                    raise
                raise type(e)(hidden) from None
        return self._own(self.client.execute(cmd, conn)), None, [], False

    def _own(self, records: list) -> list:
        """The records that answer the client. A tick or drop also returns
        the change/ended records of subscriptions nobody delivers: those the
        startup scripts made, whose output is the server's stdout."""
        own, local = [], []
        for r in records:
            (local if r["kind"] in ("change", "ended") and "sub" in r else own).append(r)
        if local:
            self.local_output(local)
        return own

    def _with_source(self, conn, words: list, source) -> list:
        """``install <name> <file>`` / ``check <file>`` with the program text
        sent along (the file name still picks the syntax and labels errors);
        ``check <file>`` without it reads the server's file (in the data
        directory, its errors located but not quoted: SPEC E2)."""
        cmd = words[0]
        if cmd not in ("install", "check"):
            raise C.CommandError(f'"source" goes with `install` or `check`, not `{cmd}`')
        positional, _ = C._split_options(cmd, words[1:])
        if cmd == "check":
            if len(positional) != 1:
                raise C.CommandError("usage: check <file>")
            path = positional[0]
            try:
                if source is None:
                    program = C.load_program(path, paths=self.paths)
                else:
                    program = C.program_from_source(source, path)
                # what install would refuse: an @name this server was not given
                check_calls(program, self.client.core.functions, path, source)
            except ProgramError as e:
                message = str(e) if source is not None else self.paths.hide_program_error(
                    str(e), path)
                raise InvalidProgram(message) from None
            return [{"kind": "checked", "file": path}]
        C._arity(cmd, positional, 2, 2)
        name, path = positional
        if not isinstance(source, str):
            raise C.CommandError('"source" must be a string (the program text)')
        try:
            program = C.program_from_source(source, path)
        except ProgramError as e:
            raise InvalidProgram(str(e)) from None
        return self.client.execute(C.Install(name, path, program, source), conn)


# ============================================================ the websocket side


def _parse_request(message) -> tuple:
    """(id, line, source) or raise ValueError(message) with the id found."""
    if isinstance(message, bytes):
        raise _BadFrame(None, "frames must be text (JSON), not binary")
    if len(message) > MAX_FRAME // 4 and len(message.encode("utf-8")) > MAX_FRAME:
        raise _BadFrame(None, f"frame of {len(message.encode('utf-8'))} bytes is over the "
                              f"limit of {MAX_FRAME} (1 MiB)")
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError) as e:
        raise _BadFrame(None, f"frame is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _BadFrame(None, 'a request is a JSON object {"id": ..., "line": "<command>"}')
    req_id = obj.get("id")
    line = obj.get("line")
    if not isinstance(line, str):
        raise _BadFrame(req_id, 'request has no "line" (a string): {"id": ..., "line": "<command>"}')
    if "\n" in line or "\r" in line:
        raise _BadFrame(req_id, '"line" must be one command line (no line breaks)')
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        raise _BadFrame(req_id, '"source" must be a string (the program text)')
    return req_id, line, source


class _BadFrame(Exception):
    def __init__(self, req_id, message: str):
        super().__init__(message)
        self.req_id = req_id


def _tcp_keepalive(ws) -> None:
    """Dead peers are found by the kernel, not by websockets' pings (see
    :func:`listen`): TCP keepalive probes are answered by the client's
    kernel whether or not the client reads."""
    sock = ws.transport.get_extra_info("socket") if ws.transport else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = TCP_KEEPALIVE
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                            ("TCP_KEEPCNT", count)):
            if hasattr(socket, name):  # Linux; elsewhere the system's defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


async def _handler(hub: Hub, ws) -> None:
    _tcp_keepalive(ws)
    conn = Connection(ws, hub.limit, hub.byte_limit)
    hub.connections.add(conn)
    writer = asyncio.create_task(_writer(conn))
    try:
        async for message in ws:
            await conn.in_flight.acquire()
            if conn.closing:
                conn.in_flight.release()
                break
            try:
                req_id, line, source = _parse_request(message)
            except _BadFrame as e:  # its permit is released when the answer is delivered
                hub.answer_now(conn, error_frames(e.req_id, str(e)))
                continue
            hub.submit(conn, req_id, line, source)
    except Exception:  # connection errors: the client is gone
        pass
    finally:
        # let the writer send what is queued if the client asked to leave
        if conn.closing and not writer.done():
            try:
                await asyncio.wait_for(writer, 5)
            except (asyncio.TimeoutError, Exception):
                pass
        writer.cancel()
        hub.disconnected(conn)


async def _writer(conn: Connection) -> None:
    box = conn.outbox
    try:
        while True:
            await box.ready.wait()
            box.ready.clear()
            while box.frames:
                sub, text = box.frames.popleft()
                box.sent(sub, text)
                await conn.ws.send(text)
            if conn.closing:
                await conn.ws.close(1000, "exit")
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        return


def _authorizer(token: str | None):
    if token is None:
        return None
    expected = f"Bearer {token}".encode()

    def process_request(connection, request):
        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got.encode("utf-8", "replace"), expected):
            return connection.respond(HTTPStatus.UNAUTHORIZED,
                                      "401 Unauthorized: send `Authorization: Bearer <token>`\n")
        return None
    return process_request


async def listen(hub: Hub, host: str, port: int, token: str | None = None,
                 ping_interval: float | None = PING_INTERVAL):
    """The websockets server answering through ``hub``.

    Keepalive (a choice; SPEC C3 leaves it open): websockets pings every
    ``ping_interval`` seconds (keeping NAT and proxy mappings alive) but
    never closes a connection for a missing pong (``ping_timeout=None``). A
    pong says nothing useful here: a client that stops reading cannot answer,
    and one that reads slowly answers only after the backlog queued before
    the ping. With a pong timeout (websockets' default, 20 s) such a client
    could be cut off before its subscriber queue overflowed, so it never got
    the overflow record. Now its subscriptions end by their
    queue bound alone (records and bytes), which also bounds the server's
    memory, and a host that vanished is found by TCP keepalive."""
    from websockets.asyncio.server import serve
    import logging
    logger = logging.getLogger("ddir.serve")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False  # handshake failures (a 401, a port scan) are not our errors
    return await serve(lambda ws: _handler(hub, ws), host, port,
                       process_request=_authorizer(token), max_size=HARD_FRAME,
                       compression=None, logger=logger, ping_interval=ping_interval,
                       ping_timeout=None)


# What a worker's death runs before the process ends (cli.start_server): tell
# every client, so none sees only a dropped connection (SPEC B: reported).
LAST_WORDS: list = []


def _farewell(hub: "Hub", message: str) -> None:
    """From the thread that saw the death: an error record (id null) and a
    close frame (1011) to every connection, waiting at most 2 s for them."""
    done = threading.Event()

    async def tell_all():
        try:
            text = frame(None, {"kind": "error", "message": message})
            for conn in list(hub.connections):
                try:
                    await asyncio.wait_for(conn.ws.send(text), 1)
                    await asyncio.wait_for(conn.ws.close(1011, "a worker died"), 1)
                except Exception:
                    pass
        finally:
            done.set()
    try:
        asyncio.run_coroutine_threadsafe(tell_all(), hub.loop)
    except RuntimeError:  # the loop is gone
        return
    done.wait(2)


async def _serve(client, opts: dict, token: str | None, local_output=None,
                 paths: DataDir | None = None) -> int:
    loop = asyncio.get_running_loop()
    hub = Hub(client, loop, opts["subscriber_queue"], local_output=local_output, paths=paths)
    LAST_WORDS.append(lambda message: _farewell(hub, message))
    try:
        server = await listen(hub, opts["host"], opts["port"], token)
    except OSError as e:
        hub.stop()
        print(f"error: cannot listen on {opts['host']}:{opts['port']}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hub.stopped.set)
    sock = next(iter(server.sockets))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"ddir: serving on ws://{shown}:{port}", file=sys.stderr, flush=True)
    if paths is not None:  # SPEC E2: where network clients' load/save/... paths must lie
        print(f"ddir: data directory {paths.real}", file=sys.stderr, flush=True)
    await hub.stopped.wait()
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 5)
    except asyncio.TimeoutError:
        pass
    await loop.run_in_executor(None, hub.stop)
    if hub.fatal is not None:
        print(f"error: {hub.fatal}", file=sys.stderr)
        return 3
    return 0


def main(argv: list) -> int:
    from .cli import _not_rank_0, join_mpi
    if "-h" in argv or "--help" in argv:
        print("" if "--mpi" in argv and _not_rank_0() else USAGE, end="")
        return 0
    try:
        opts = parse_args(argv)
    except UsageError as e:
        if not _not_rank_0():  # under mpiexec, once
            _usage_error(e)
        return 2
    ranks = None
    if opts["mpi"]:  # a worker rank serves rank 0 in here and never returns
        ranks = join_mpi(None)
        if isinstance(ranks, int):
            return ranks
    try:
        return _main(opts, ranks)
    finally:
        if ranks is not None:
            ranks.finish()


def _usage_error(e: UsageError) -> None:
    print(f"error: {e}", file=sys.stderr)
    print(USAGE, end="", file=sys.stderr)


def _main(opts: dict, ranks) -> int:
    from .cli import start_server, EXIT_WORKER_DIED
    from .server.session import Session
    try:
        token = read_token(opts["token_file"]) if opts["token_file"] else None
        if token is None and not is_loopback(opts["host"]):
            raise UsageError(f"--host {opts['host']} is not a loopback address: serving it needs "
                             "--token-file (anyone who reaches the port could run commands)")
        data_dir = opts["data_dir"] or os.getcwd()  # SPEC E2: default, where serve started
        if not os.path.isdir(data_dir):
            raise UsageError(f'--data-dir "{data_dir}": not a directory')
        paths = DataDir(data_dir, opts["functions"])
    except UsageError as e:
        _usage_error(e)
        return 2
    sessions: list = []
    try:
        client = start_server(opts["workers"], opts["max_rounds"], sessions, opts["functions"],
                              ranks=ranks, json_mode=opts["json"], last_words=LAST_WORDS,
                              max_memory=opts["max_memory"])
    except DdirError as e:  # --functions MODULE could not be imported
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot start {opts['workers']} worker processes: {e.strerror or e}",
              file=sys.stderr)
        return 2
    session = Session(json_mode=opts["json"], client=client)
    sessions.append(session)
    try:
        for path in opts["scripts"]:
            try:
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
            except OSError as e:
                session.emit([{"kind": "error",
                               "message": f'cannot read script "{path}": {e.strerror}'}])
                return 2
            session.run_script(path, lines)  # `exit` ends that script; then we serve
        sys.stdout.flush()
        try:
            def local_output(records):  # the startup scripts' subscriptions
                session.emit(records)
                sys.stdout.flush()
            return asyncio.run(_serve(client, opts, token, local_output, paths))
        except KeyboardInterrupt:
            return 130
    except ServerStopped:
        return EXIT_WORKER_DIED
    finally:
        client.close()
