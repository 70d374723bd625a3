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
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from . import options
from .errors import DdirError, InvalidProgram, ServerStopped
from .lang.errors import ProgramError
from .options import UsageError
from .server import commands as C
from .server.confine import DataDir
from .server.functions import check_calls
from .serve_auth import (Gate, RefusalLog, is_loopback, make_token, own_origins, parse_origins,
                         read_secret, remove_runtime_file, tls_context, write_runtime_file)
from .server.output import changes_at, render_json

USAGE = """usage: ddir serve [--host HOST] [--port PORT] [-w N | --mpi] [SCRIPT...]
                  [--token-file F | --no-token] [--allow-origin O,...]
                  [--certfile F --keyfile F] [--data-dir DIR] [--max-memory SIZE]
                  [--max-rounds N] [--functions MODULE] [--subscriber-queue N]
                  [--max-connections N] [--max-subscriptions N] [--idle-timeout S]
                  [--cursor-secret-file F] [--json]

  SCRIPT            scripts to run before serving (their output goes to stdout)
  --host HOST       address to listen on (default 127.0.0.1)
  --port PORT       TCP port (default 7468; 0 picks a free one)
  --token-file F    clients must send `Authorization: Bearer <the file's text>` (the
                    file must be yours alone, mode 600; 16 characters or more).
                    Without it a token is made at start; either way it is kept where
                    `ddir connect ws://127.0.0.1:PORT` on this machine finds it
  --no-token        no token (loopback only; any local user can then run commands)
  --allow-origin O  browser pages from these origins may connect (https://host:port,
                    comma-separated); the server's own console always may
  --certfile F, --keyfile F
                    serve wss:// (TLS) with this PEM certificate and key
  --data-dir DIR    every file a client names (load, save, checkpoint, install) must
                    resolve inside DIR (default: the directory serve started in)
  --max-memory SIZE what a tick may use (e.g. 4G; default: most of this machine's
                    memory); a tick past it fails its program, the server goes on
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
  --max-connections N
                    connections at once (default 256; past it a handshake gets HTTP 503)
  --max-subscriptions N
                    subscriptions per connection (default 64)
  --idle-timeout S  close a connection with nothing going on for S seconds (default 300)
  --cursor-secret-file F
                    sign peek cursors with this secret (default: one made at start)
  --json            scripts' output as JSON lines

The address served is printed on stderr once the server listens:
`ddir: serving on ws://HOST:PORT`, then where the token is kept. A client may
send `cancel` to stop the tick it started. SIGTERM / SIGINT stop it cleanly
(a running tick is cancelled). docs/SECURITY.md says who may do what.
"""

DEFAULT_PORT = 7468
MAX_FRAME = 1 << 20          # SPEC C3: a bigger frame gets an error record
HARD_FRAME = 4 << 20         # past this websockets refuses the frame from its header (1009),
                             # before buffering it: a memory guard (SPEC E3)
MAX_IN_FLIGHT = 64           # requests of one connection queued or running
PENDING_BYTES = 4 << 20      # ... and their bytes: past either the reader stops reading
KEEPS_UP_BYTES = 256 << 10  # a client with less than this unsent in its socket keeps up
CLIENT_BYTES = 16 << 20      # bytes queued for one client (replies and pushes) before its
                             # next request waits and its subscriptions' pushes end them
TOTAL_BYTES = 256 << 20      # bytes queued for all clients: past it only clients that have
                             # read everything get their next request run
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


# ============================================================ frames


def frame(req_id, record: dict, rendered: str | None = None) -> str:
    """A record as `--json` prints it, with ``"id"`` first (spliced into the
    rendered object: no second encoding; ``rendered``: the record's
    ``render_json`` when the caller has it already)."""
    return '{"id": ' + _id(req_id) + ", " + (rendered or render_json(record))[1:]


def done_frame(req_id) -> str:
    return '{"id": ' + _id(req_id) + ', "kind": "done"}'


def _id(req_id) -> str:
    # ids are checked at parse time (no NaN/Infinity: those are not JSON)
    return json.dumps(req_id, allow_nan=False)


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

    def __init__(self, max_per_client: int = MAX_SUBSCRIPTIONS):
        self.by_id: dict = {}     # registry subscription id -> Subscription
        self.pending: list = []   # (Subscription, record) of the command running
        self.max_per_client = max_per_client  # SPEC E3: a cap per connection

    def handles(self, cmd) -> bool:
        return isinstance(cmd, (C.Subscribe, C.Unsubscribe))

    def run(self, client, conn, req_id, cmd) -> tuple:
        """-> (reply records, new Subscription or None, [Subscriptions it ended])."""
        if isinstance(cmd, C.Subscribe):
            if sum(1 for s in self.by_id.values() if s.conn is conn) >= self.max_per_client:
                raise C.CommandError(
                    f"this connection has {self.max_per_client} subscriptions, the most a "
                    f"client may hold (--max-subscriptions): unsubscribe one first")
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
    """Frames waiting for one connection's writer, and their bytes.

    Pushes are bounded per subscription by ``limit`` records and
    ``byte_limit`` bytes (a record is always taken when none of that
    subscription is queued, so one huge change does not end a client that
    keeps up) and, with replies, per connection by the hub's ``client_bytes``
    (see :meth:`Hub._next_job`): a client that stops reading holds at most
    about that much of the server's memory."""

    def __init__(self, limit: int, byte_limit: int = SUBSCRIBER_BYTES, hub=None):
        self.frames: deque = deque()   # (Subscription or None, text)
        self.limit = limit
        self.byte_limit = byte_limit
        self.hub = hub                 # told of every byte queued and sent
        self.bytes = 0                 # what is queued, replies and pushes
        self.ready = asyncio.Event()
        self.closed = False

    def put(self, texts, sub: Subscription | None = None) -> str | None:
        """None, or what ``sub`` has queued when ``texts`` would overflow it
        (nothing is added then), for the error record."""
        if self.closed:
            return None
        size = sum(len(t) for t in texts)
        if sub is not None:
            if sub.ended:
                return None
            if sub.queued:
                if sub.queued + len(texts) > self.limit:
                    return f"{sub.queued} records queued"
                if sub.queued_bytes + size > self.byte_limit:
                    return f"{sub.queued_bytes / (1 << 20):.1f} MiB queued"
            if self.hub is not None and self.bytes and self.bytes + size > self.hub.client_bytes:
                return f"{self.bytes / (1 << 20):.1f} MiB queued for the client"
            sub.queued += len(texts)
            sub.queued_bytes += size
        self.frames.extend((sub, t) for t in texts)
        self._count(size)
        self.ready.set()
        return None

    def sent(self, sub: Subscription | None, text: str) -> None:
        """The writer took ``text`` off the queue."""
        if sub is not None:
            sub.queued -= 1
            sub.queued_bytes -= len(text)
        self._count(-len(text))

    def drop(self, sub: Subscription) -> None:
        """Forget every queued frame of ``sub`` (its memory is freed)."""
        kept = deque(item for item in self.frames if item[0] is not sub)
        self._count(-sum(len(t) for s, t in self.frames if s is sub))
        self.frames = kept
        sub.queued = sub.queued_bytes = 0

    def clear(self) -> None:
        self.closed = True
        self._count(-self.bytes)
        self.frames.clear()

    def _count(self, n: int) -> None:
        self.bytes += n
        if self.hub is not None:
            self.hub.queued_bytes += n
            if n < 0:
                self.hub.drained()


class Connection:
    def __init__(self, ws, limit: int, byte_limit: int = SUBSCRIBER_BYTES, hub=None):
        self.ws = ws
        self.outbox = Outbox(limit, byte_limit, hub)
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.pending: deque = deque()   # jobs for the sequencer, in arrival order
        self.pending_bytes = 0          # bytes of the requests in ``pending``
        self.room = asyncio.Event()     # set when pending_bytes fell below PENDING_BYTES
        self.room.set()
        self.subs: list = []
        self.closing = False    # exit/quit was asked: close after its done
        self.gone = False
        self.busy = 0           # requests read and not yet answered
        self.last_request = time.monotonic()
        sock = ws.transport.get_extra_info("socket") if getattr(ws, "transport", None) else None
        self.fd = sock.fileno() if sock is not None else -1

    def keeps_up(self) -> bool:
        """Whether the client has taken what it was sent: nothing in the
        outbox, and little in the kernel's send queue (a first big reply
        leaves the outbox at once into a socket buffer of megabytes, whether
        or not the client reads)."""
        return not self.outbox.bytes and _unsent(self.fd) < KEEPS_UP_BYTES

    def idle_for(self, now: float) -> float:
        """Seconds with nothing going on (0 while a request is in flight, a
        subscription is live or frames wait to be sent; SPEC E3)."""
        if self.busy or self.subs or self.outbox.frames:
            return 0.0
        return now - self.last_request


# ============================================================ the hub


class Hub:
    """The sequencer and the connections it answers.

    Clients take turns (SPEC E3): each connection has its own queue of
    requests and the sequencer takes one request from each connection with
    work in turn, so one client's 64 pipelined requests do not starve
    another's single one; a client that has read all it was sent goes before
    one with replies still waiting to be sent (a client that pipelines big
    `peek`s and reads slowly or not at all does not put a request of each
    of them in front of every request of a client that keeps up); every request still runs alone, in one total
    order, so all clients see one consistent history (SPEC C3). A connection
    whose client has not read its replies (more than ``client_bytes`` queued
    for it, or anything queued while all clients together hold more than
    ``total_bytes``) waits for its turn until its writer has drained: memory
    stays bounded whatever a client sends and however little it reads."""

    def __init__(self, client, loop, subscriber_queue: int = SUBSCRIBER_QUEUE,
                 hook: SubscriptionHook | None = None, subscriber_bytes: int = SUBSCRIBER_BYTES,
                 local_output=None, client_bytes: int = CLIENT_BYTES,
                 total_bytes: int = TOTAL_BYTES, max_subscriptions: int = MAX_SUBSCRIPTIONS,
                 max_connections: int = MAX_CONNECTIONS, paths=None):
        """``local_output(records)``: where the startup scripts' subscriptions
        report (their session's output, the server's stdout). ``paths``: what
        a network client may touch (:class:`ddir.server.confine.DataDir`,
        SPEC E2; default the current directory, no functions= module)."""
        self.paths = paths if paths is not None else DataDir(os.getcwd())
        self.client = client
        self.loop = loop
        self.limit = subscriber_queue
        self.byte_limit = subscriber_bytes
        self.client_bytes = client_bytes
        self.total_bytes = total_bytes
        self.max_connections = max_connections
        self.queued_bytes = 0     # queued in every outbox (loop thread writes, sequencer reads)
        self.hook = hook or SubscriptionHook(max_subscriptions)
        self.local_output = local_output or (lambda records: None)
        self.connections: set = set()
        self.fatal: str | None = None
        self.stopped = asyncio.Event()
        self.cv = threading.Condition()
        self.turns: deque = deque()     # connections with pending requests, in turn order
        self.control: deque = deque()   # server-side jobs (releases): before any request
        self.running = None             # the connection whose request runs now
        self.stopping = False
        self.thread = threading.Thread(target=self._sequencer, name="ddir-sequencer", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------- loop side

    def submit(self, conn: Connection, req_id, line: str, source, size: int = 0) -> None:
        self._enqueue(conn, lambda: self._execute(conn, req_id, line, source), size,
                      _only_reads(line))

    def answer_now(self, conn: Connection, frames: list) -> None:
        """A reply that needs no command (a malformed frame), still in order
        with the replies to the requests before it."""
        self._enqueue(conn, lambda: self.loop.call_soon_threadsafe(
            self._deliver, conn, frames, 0, [], []), 0, True)

    def _enqueue(self, conn: Connection, job, size: int, only_reads: bool) -> None:
        """``only_reads``: the job changes nothing (dropped if its client goes
        away before it runs; a command that changes state still runs, as it
        would have had the client stayed to read the answer)."""
        conn.busy += 1
        conn.pending_bytes += size
        if conn.pending_bytes >= PENDING_BYTES:
            conn.room.clear()
        with self.cv:
            conn.pending.append((job, size, only_reads))
            if len(conn.pending) == 1:
                self.turns.append(conn)
            self.cv.notify()

    def _control(self, job) -> None:
        with self.cv:
            self.control.append(job)
            self.cv.notify()

    def drained(self) -> None:
        """A writer sent something: a connection that waited may go on."""
        if self.turns:
            with self.cv:
                self.cv.notify()

    def cancel(self, conn: Connection) -> bool:
        """``cancel`` from ``conn``: stop its running command (SPEC E3: a
        client may cancel what it started, nobody else's)."""
        return self.running is conn and bool(self.client.cancel())

    def disconnected(self, conn: Connection) -> None:
        conn.gone = True
        conn.outbox.clear()
        self.connections.discard(conn)
        subs, conn.subs = conn.subs, []
        for sub in subs:
            sub.ended = True
        with self.cv:  # what it asked and was not run yet runs if it changes state
            conn.pending = deque(job for job in conn.pending if not job[2])
        self._control(lambda: self.hook.release_owner(self.client, conn))

    def _end(self, sub: Subscription) -> None:
        if not sub.ended:
            sub.ended = True
            sub.conn.outbox.drop(sub)
            self._control(lambda: self.hook.release(self.client, sub))

    def _deliver(self, conn: Connection, frames: list, at: int, pushes: list, ended: list) -> None:
        """On the loop: the reply to ``conn`` and the pushes of its command,
        in the local CLI's order (``at``: :func:`changes_at` of the reply's
        records): the tick's inspect events, the ``change`` pushes, the rest
        of the reply, ``ended`` pushes, and ``done`` last, so a client that
        ticks has every change its tick made by the time it sees ``done``.
        Pushes come rendered (``(sub, record, text)``): the sequencer
        renders, the loop only queues."""
        for sub in ended:
            sub.ended = True
            if sub in sub.conn.subs:
                sub.conn.subs.remove(sub)
        if conn is not None:
            conn.in_flight.release()
            conn.busy -= 1
            conn.outbox.put(frames[:at])
        for push in pushes:
            if push[1]["kind"] == "change":
                self._push(*push)
        if conn is not None:
            conn.outbox.put(frames[at:-1])
        for push in pushes:
            if push[1]["kind"] != "change":
                self._push(*push)
        if conn is not None:
            conn.outbox.put(frames[-1:])

    def _push(self, sub: Subscription, record: dict, text: str) -> None:
        c = sub.conn
        if c.gone or sub.ended:
            return
        if record["kind"] == "ended":  # its producer was dropped
            c.outbox.put([text])
            sub.ended = True
            if sub in c.subs:
                c.subs.remove(sub)
            return
        full = c.outbox.put([text], sub)
        if full is not None:
            self._overflow(sub, full)

    def _overflow(self, sub: Subscription, full: str) -> None:
        """On the loop (SPEC C3): drop what ``sub`` queued, end it, say so once."""
        c = sub.conn
        if c.gone or sub.ended:
            return
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
            with self.cv:
                job = self._next_job()
                while job is None and not self.stopping:
                    self.cv.wait(1.0)  # also re-checks clients whose writers drained
                    job = self._next_job()
                if job is None:
                    return
            try:
                job()
            except Exception:  # a bug here must not kill the server's only thread
                traceback.print_exc(file=sys.stderr)
            finally:
                self.running = None

    def _next_job(self):
        """Under ``cv``: a control job, else the next request in turn from a
        connection whose client has read enough of what it was sent."""
        if self.stopping:
            return None
        if self.control:
            return self.control.popleft()
        over_all = self.queued_bytes > self.total_bytes
        chosen = None
        if not all(conn.pending for conn in self.turns):  # a client left, its reads dropped
            self.turns = deque(conn for conn in self.turns if conn.pending)
        for conn in self.turns:
            box = conn.outbox.bytes
            if not conn.gone and (box > self.client_bytes or (over_all and box)):
                continue  # it waits for its writer
            if conn.gone or conn.keeps_up():
                chosen = conn  # a client that has read everything goes first
                break
            if chosen is None:
                chosen = conn
        if chosen is None:
            return None
        self.turns.remove(chosen)
        job, size, _ = chosen.pending.popleft()
        if chosen.pending:
            self.turns.append(chosen)
        self.running = chosen
        self.loop.call_soon_threadsafe(self._made_room, chosen, size)
        return job

    def _made_room(self, conn: Connection, size: int) -> None:
        conn.pending_bytes -= size
        if conn.pending_bytes < PENDING_BYTES:
            conn.room.set()

    def stop(self) -> None:
        """Let the sequencer finish what it runs (never half a tick; a
        SIGTERM cancels a long one first), drop what waits, then end."""
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join()

    def _shed(self) -> None:
        """Before a tick: a subscription whose client has ``client_bytes``
        or more waiting would overflow at its first push anyway; it ends now,
        before the tick builds, sorts and renders a change for it (ten such
        subscriptions of a 200k-row trace made one tick 19 s instead of 2)."""
        for sub in list(self.hook.by_id.values()):
            if not sub.ended and sub.conn.outbox.bytes >= self.client_bytes:
                self.hook.release(self.client, sub)  # here: the registry is ours
                queued = sub.conn.outbox.bytes / (1 << 20)
                self.loop.call_soon_threadsafe(
                    self._overflow, sub, f"{queued:.1f} MiB queued for the client")

    def _execute(self, conn: Connection, req_id, line: str, source) -> None:
        if self.hook.by_id and line.lstrip().startswith("tick"):
            self._shed()
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
            pushes = self._rendered(self.hook.drain(self.client))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            pushes = []
        self.loop.call_soon_threadsafe(self._finish, conn, frames, at, pushes, ended, sub, close)

    @staticmethod
    def _rendered(pushes: list) -> list:
        """``(sub, record, frame)``: rendered here, on the sequencer thread
        (a change of 200k rows takes a while: the event loop must not), and
        each record once however many subscriptions carry it."""
        texts: dict = {}
        out = []
        for sub, record in pushes:
            # subscribers of one trace share the registry's list of rows
            same = (id(record.get("rows")), record["kind"], record.get("trace"),
                    record.get("epoch"), record.get("reason"))
            body = texts.get(same)
            if body is None:
                body = texts[same] = render_json(record)
            out.append((sub, record, frame(sub.req_id, record, body)))
        return out

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
            return self._with_source(conn, line, words, source), None, [], False
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

    def _with_source(self, conn, line: str, words: list, source) -> list:
        """``install <name> <file>`` / ``check <file>`` with the program text
        sent along (the file name still picks the syntax and labels errors);
        ``check <file>`` without it reads the server's file (in the data
        directory, its errors located but not quoted: SPEC E2)."""
        cmd = words[0]
        if cmd not in ("install", "check"):
            raise C.CommandError(f'"source" goes with `install` or `check`, not `{cmd}`')
        if cmd == "check":
            positional, _ = C._split_options(cmd, words[1:])
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
        if not isinstance(source, str):
            raise C.CommandError('"source" must be a string (the program text)')
        # the command line's own rules (bindings such as edges=random(...) too)
        return self.client.execute(C.parse_command(line, paths=self.paths, source=source), conn)


# ============================================================ the websocket side


def _parse_request(message) -> tuple:
    """(id, line, source) or raise ValueError(message) with the id found."""
    if isinstance(message, bytes):
        raise _BadFrame(None, "frames must be text (JSON), not binary")
    if len(message) > MAX_FRAME // 4 and len(message.encode("utf-8")) > MAX_FRAME:
        raise _BadFrame(None, f"frame of {len(message.encode('utf-8'))} bytes is over the "
                              f"limit of {MAX_FRAME} (1 MiB)")
    try:
        obj = json.loads(message, parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise _BadFrame(None, f"frame is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _BadFrame(None, 'a request is a JSON object {"id": ..., "line": "<command>"}')
    req_id = obj.get("id")
    try:  # an id must go back as valid JSON: 1e999 reads as inf
        json.dumps(req_id, allow_nan=False)
    except (ValueError, RecursionError):
        raise _BadFrame(None, '"id" must be JSON that can be sent back (not NaN or '
                              'Infinity, not nested past 1,000 levels)') from None
    line = obj.get("line")
    if not isinstance(line, str):
        raise _BadFrame(req_id, 'request has no "line" (a string): {"id": ..., "line": "<command>"}')
    if "\n" in line or "\r" in line:
        raise _BadFrame(req_id, '"line" must be one command line (no line breaks)')
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        raise _BadFrame(req_id, '"source" must be a string (the program text)')
    return req_id, line, source


def _only_reads(line: str) -> bool:
    """A request whose only effect is its answer."""
    words = line.split(None, 1)
    return not words or words[0] in ("peek", "list", "help", "subscribe", "check", "#")


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


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
    if len(hub.connections) >= hub.max_connections:  # handshakes that raced past the gate
        await ws.close(1013, "too many connections")
        return
    conn = Connection(ws, hub.limit, hub.byte_limit, hub)
    hub.connections.add(conn)
    writer = asyncio.create_task(_writer(conn))
    try:
        async for message in ws:
            conn.last_request = time.monotonic()
            if isinstance(message, str) and _is_cancel(message):
                _answer_cancel(hub, conn, message)  # at once: never behind what it cancels
                continue
            await conn.in_flight.acquire()
            await conn.room.wait()
            if conn.closing:
                conn.in_flight.release()
                break
            try:
                req_id, line, source = _parse_request(message)
            except _BadFrame as e:  # its permit is released when the answer is delivered
                hub.answer_now(conn, error_frames(e.req_id, str(e)))
                continue
            hub.submit(conn, req_id, line, source, len(message))
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


def _unsent(fd: int) -> int:
    """Bytes in a socket's send queue not yet acknowledged by the peer
    (Linux ``SIOCOUTQ``; 0 where it cannot be read)."""
    if fd < 0 or _SIOCOUTQ is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _SIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


try:
    import fcntl
    import termios
    _SIOCOUTQ = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except ImportError:
    _SIOCOUTQ = None


def _is_cancel(message: str) -> bool:
    """``{"id": .., "line": "cancel"}``: read before it is queued (cheap: a
    cancel is a short frame)."""
    if len(message) > 1000 or "cancel" not in message:
        return False
    try:
        obj = json.loads(message, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("line"), str) and \
        obj["line"].strip() == "cancel"


def _answer_cancel(hub: Hub, conn: Connection, message: str) -> None:
    """SPEC E3: ``cancel`` stops the command this client started and is
    running now (a tick: its programs fail as a tick that does not converge
    does); it does not wait behind it in the queue."""
    req_id = json.loads(message).get("id")
    try:
        json.dumps(req_id, allow_nan=False)
    except (ValueError, RecursionError):
        req_id = None
    cancelled = hub.cancel(conn)
    record = {"kind": "cancelled", "running": cancelled}
    conn.outbox.put([frame(req_id, record), done_frame(req_id)])


async def _writer(conn: Connection) -> None:
    box = conn.outbox
    try:
        while True:
            await box.ready.wait()
            box.ready.clear()
            while box.frames:
                sub, text = box.frames.popleft()
                await conn.ws.send(text)
                box.sent(sub, text)
            if conn.closing:
                await conn.ws.close(1000, "exit")
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        return


async def _close_idle(hub: Hub, timeout: float) -> None:
    """SPEC E3: a connection with nothing going on for ``timeout`` seconds
    (no complete request, no subscription, nothing in flight) is closed."""
    every = min(5.0, timeout / 4)
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        for conn in list(hub.connections):
            if conn.idle_for(now) >= timeout:
                conn.last_request = now  # once
                asyncio.ensure_future(_close(conn.ws, 1000, f"idle for {timeout:g} s"))


async def _close(ws, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code, reason), 5)
    except Exception:
        ws.transport.abort() if ws.transport else None


async def listen(hub: Hub, host: str, port: int, token: str | None = None,
                 ping_interval: float | None = PING_INTERVAL, allow_origins: set = frozenset(),
                 ssl=None, refusals: RefusalLog | None = None):
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
    memory, and a host that vanished is found by TCP keepalive.

    Every handshake passes :class:`ddir.serve_auth.Gate` first (token,
    ``Origin``, rate limit, the connection cap; SPEC E1, E3); the server's
    own origins are added once its port is known. A handshake must complete
    within 10 s (websockets' ``open_timeout``), so sockets that never speak
    do not pile up."""
    from websockets.asyncio.server import serve
    import logging
    logger = logging.getLogger("ddir.serve")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False  # handshake failures are logged by the gate, rate-limited
    gate = Gate(token, set(allow_origins), refusals,
                full=lambda: len(hub.connections) >= hub.max_connections)
    server = await serve(lambda ws: _handler(hub, ws), host, port,
                         process_request=gate, max_size=HARD_FRAME, ssl=ssl,
                         compression=None, logger=logger, ping_interval=ping_interval,
                         ping_timeout=None, open_timeout=10, max_queue=4)
    bound = next(iter(server.sockets)).getsockname()
    for name in {host, bound[0]}:
        gate.allowed |= own_origins(name, bound[1], ssl is not None)
    return server


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
    refusals = RefusalLog()
    loop.set_exception_handler(_quiet(refusals))
    hub = Hub(client, loop, opts["subscriber_queue"], local_output=local_output,
              max_subscriptions=opts["max_subscriptions"],
              max_connections=opts["max_connections"], paths=paths)
    LAST_WORDS.append(lambda message: _farewell(hub, message))
    try:
        tls = tls_context(opts["certfile"], opts["keyfile"]) if opts["certfile"] else None
        server = await listen(hub, opts["host"], opts["port"], token,
                              allow_origins=parse_origins(opts["allow_origin"]), ssl=tls,
                              refusals=refusals)
    except UsageError as e:
        hub.stop()
        _usage_error(e)
        return 2
    except OSError as e:
        hub.stop()
        print(f"error: cannot listen on {opts['host']}:{opts['port']}: {e.strerror or e}",
              file=sys.stderr)
        return 2

    def stop():  # SIGTERM/SIGINT: a long tick is cancelled, not waited for
        hub.stopped.set()
        cancel = getattr(client, "cancel", None)
        if cancel is not None:
            cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    sock = next(iter(server.sockets))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'wss' if tls else 'ws'}://{shown}:{port}"
    print(f"ddir: serving on {url}", file=sys.stderr, flush=True)
    kept = _announce(url, port, token, opts, tls is not None)
    if paths is not None:  # SPEC E2: where network clients' load/save/... paths must lie
        print(f"ddir: data directory {paths.real}", file=sys.stderr, flush=True)
    idle = asyncio.ensure_future(_close_idle(hub, opts["idle_timeout"]))
    try:
        await hub.stopped.wait()
    finally:
        idle.cancel()
        remove_runtime_file(kept, token)
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


def _announce(url: str, port: int, token: str | None, opts: dict, tls: bool) -> str | None:
    """After the "serving on" line: where the token is (SPEC E1: kept in a
    user-only file where `ddir connect` finds it) and the warnings."""
    kept = None
    if token is not None:
        try:
            kept = write_runtime_file(port, token)
            print(f"ddir: token kept in {kept} (`ddir connect {url}` reads it)",
                  file=sys.stderr, flush=True)
        except OSError as e:
            print(f"ddir: warning: could not keep the token for local clients "
                  f"({getattr(e, 'strerror', None) or e}); give them --token-file",
                  file=sys.stderr, flush=True)
        if opts["token_file"] is None:
            print(f"ddir: or give clients the token in the address: {url}/?token={token}",
                  file=sys.stderr, flush=True)
    else:
        print("ddir: warning: --no-token: every local user and program can run commands "
              "as you", file=sys.stderr, flush=True)
    if not tls and not is_loopback(opts["host"]):
        print("ddir: warning: not loopback and no --certfile/--keyfile: the token and the "
              "data travel in clear", file=sys.stderr, flush=True)
    return kept


def _quiet(refusals: RefusalLog):
    """The event loop's error handler: what the loop itself reports (an
    ``accept`` that ran out of file descriptors, a socket reset) goes
    through the rate-limited log, one line each, never a traceback a second."""
    def handler(loop, context):
        e = context.get("exception")
        what = context.get("message", "error")
        refusals.refused("?", f"{what}: {e}" if e is not None else what)
    return handler


def _raise_file_limit() -> None:
    """Each connection is a file descriptor: allow as many as the system
    lets this user have (the soft limit is often 1,024)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 16
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))
    except (ImportError, ValueError, OSError):
        pass


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


class _Stderr:
    """Where ``cli.start_server`` reports a dead worker under serve: the
    server's stderr, beside its other reports (stdout is the startup
    scripts' output; issue 26, item 14). Clients get the record too
    (``LAST_WORDS``)."""

    def emit(self, records) -> None:
        from .server.output import render_text
        for record in records:
            print(render_text(record), file=sys.stderr, flush=True)


def _usage_error(e: UsageError) -> None:
    print(f"error: {e}", file=sys.stderr)
    print(USAGE, end="", file=sys.stderr)


def _main(opts: dict, ranks) -> int:
    from .cli import start_server, EXIT_WORKER_DIED
    from .server.session import Session
    try:
        if opts["token_file"]:
            token = read_secret(opts["token_file"])
        elif opts["no_token"]:
            if not is_loopback(opts["host"]):
                raise UsageError(f"--no-token is for a loopback address only: --host "
                                 f"{opts['host']} can be reached by others (use a token)")
            token = None
        else:
            token = make_token()
        if opts["cursor_secret_file"]:
            secret = read_secret(opts["cursor_secret_file"], "cursor secret file").encode()
        elif os.environ.get("DDIR_CURSOR_SECRET"):  # fixed on purpose (the tests' tokens)
            secret = os.environ["DDIR_CURSOR_SECRET"].encode()
        else:
            secret = os.urandom(32)
        data_dir = opts["data_dir"] or os.getcwd()  # SPEC E2: default, where serve started
        if not os.path.isdir(data_dir):
            raise UsageError(f'--data-dir "{data_dir}": not a directory')
        paths = DataDir(data_dir, opts["functions"])
    except UsageError as e:
        _usage_error(e)
        return 2
    _raise_file_limit()
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
    # SPEC E1: cursor tokens are signed with this server's own secret, so a
    # token of another server (or one forged) never reads here
    client.core.cursors.secret = secret
    session = Session(json_mode=opts["json"], client=client)
    sessions.append(_Stderr())  # a worker's death: said on stderr, where serve reports

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
