"""SPEC E3 / issue 21 acceptance: attacks on a real `ddir serve` while a
bystander keeps asking.

Each attack runs against a fresh `ddir serve -w 2 --max-memory BUDGET`
(default 3G) while a *bystander* client sends `list` and `peek small limit=1`
alternately every 100 ms (a period: the next request goes 100 ms after the
last was sent, or at once when that one took longer). Per attack it prints
the bystander's median and p99 latency, its number of requests, the peak RSS
of the server (the `ddir serve` process and all its descendants, read from
/proc/<pid>/status VmRSS every 75 ms: the peak of the sum and of the largest
single process) and what the attacker saw. A row PASSes when the bystander's
p99 is under 1 s and the peak RSS sum is under the budget (for the time
attack, the bystander's requests may wait until the tick is cancelled: the
row says so and its p99 is judged against 1 s plus the time to the cancel).

Attacks (the numbered items of issue 21):

  base   no attack: the bystander alone
  6      memory: `a | join(a, ($1, $2 ;))` on 20,000 rows of one key (400M
         pairs), one tick; run with the default budget and with --max-memory
         1G (so the bound is what ends it); here the join refuses before it
         makes the pairs
  6g     (not in the issue) memory that grows round by round: a loop that
         doubles its rows every round, --max-memory 1G; only the budget's
         sampled check can stop it
  7      time: a loop that never converges; `cancel` from the ticking
         connection after 1 s
  8a     frames: 8 connections each send a frame header announcing 63 MiB
         and a few KB of it, then hold
  8b     pipelined peeks: 4 connections x 64 pipelined `peek big` (200k rows)
         that never read (SO_RCVBUF 4 KiB); RSS after they close
  8c     cursor pinning: one client re-pages one cursor of a 200k-row trace
         that another client changes wholly every tick, for 30 epochs; 8c0:
         the same ticks with no cursor (the control)
  9      connections: 1,100 WebSocket handshakes with the token, held idle
  10     subscriptions: a connection that never reads sends 10 `subscribe
         churn` (200k rows changing wholly every tick) while another client
         ticks 10 times; its ticks beside 10 ticks with no subscriber

A safety net: if the server's RSS sum passes 2 x budget + 1 GiB (or 3/4 of
the memory available at the start) the bench kills it and says so, so a
failed bound never brings in the machine's OOM killer.

    python bench/abuse.py [--quick] [--only base,6,7,...] [--budget 3G]
                          [--small-budget 1G] [--json] [-w 2] [--verbose]

--quick: 50k-row traces, fewer epochs, ticks, peeks and connections (about
2 minutes). Exit status 1 when a row FAILs.
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMALL = 'export "small" = input 0;\n'
BIG = 'export "big" = import "iota:{n}";\n'
CHURN = ('let s = input 0 | key(; $0);\n'
         'export "churn" = import "iota:{n}" | key(; $0) | join(s, ($1[0], $2[0] ;));\n')
MEMORY = 'let a = input 0 | key(; $0[0]);\nexport "x" = a | join(a, ($1, $2 ;));\n'
DOUBLING = ('let seed = input 0 | key($0[0] ;);\n'
            'loop: { var n = seed + (n | key($0[0] * 2 ;)) + (n | key($0[0] * 2 + 1 ;)) '
            '| distinct; }\n'
            'export "n" = loop::n;\n')
FOREVER = ('let seed = input 0 | key($0[0] ;);\n'
           'loop: { var n = seed + (n | map($0[0] + 1 ;)) | distinct; }\n'
           'export "n" = loop::n;\n')

MiB = 1 << 20
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_bytes(text: str) -> int:
    text = text.strip().upper()
    if text[-1:] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


# ================================================================ /proc


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list:
    """Direct children of every thread of ``pid``."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def tree(pid: int) -> list:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children(p))
    return seen


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


class Sampler(threading.Thread):
    """RSS of a process tree every ``every`` s: peak of the sum, peak of the
    largest process; kills the tree past ``guard`` bytes."""

    def __init__(self, server, guard: int, every: float = 0.075):
        super().__init__(daemon=True)
        self.server, self.guard, self.every = server, guard, every
        self.stop = threading.Event()
        self.peak_sum = self.peak_one = 0   # KiB
        self.last_sum = 0
        self.killed = None
        self.samples = 0

    def sample(self) -> int:
        pids = tree(self.server.proc.pid)
        self.server.known |= set(pids)
        sizes = [rss_kb(p) for p in pids]
        total = sum(sizes)
        self.peak_sum = max(self.peak_sum, total)
        self.peak_one = max([self.peak_one, *sizes])
        self.last_sum = total
        self.samples += 1
        return total

    def run(self):
        while not self.stop.is_set():
            total = self.sample()
            if total * 1024 > self.guard and self.killed is None:
                self.killed = f"bench killed the server at {total / 1024:.0f} MB RSS"
                self.server.kill()
            self.stop.wait(self.every)

    def reset(self):
        self.peak_sum = self.peak_one = 0


# ================================================================ the server


class Server:
    def __init__(self, tmp: str, workers: int, budget: str, *extra):
        self.data = tempfile.mkdtemp(prefix="data-", dir=tmp)
        env = dict(os.environ, DDIR_RUNTIME_DIR=os.path.join(tmp, "runtime"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ddir", "serve", "--port", "0", "-w", str(workers),
             "--max-memory", budget, "--data-dir", self.data, *extra],
            cwd=self.data, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        self.known = {self.proc.pid}
        self.stderr = bytearray()
        self.lines: list = []
        self._got = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_for(b"serving on ", 60).split()[-1]
        kept = self._wait_for(b"token kept in ", 10)
        path = kept.split("token kept in ")[1].split(" (")[0]
        with open(path) as f:
            self.token = f.read().strip()
        host, port = self.url.split("//")[1].rsplit(":", 1)
        self.addr = (host.strip("[]"), int(port))

    def _drain(self):
        for line in self.proc.stderr:
            with self._got:
                self.stderr += line
                self.lines.append(line)
                self._got.notify_all()
        with self._got:
            self._got.notify_all()

    def _wait_for(self, marker: bytes, timeout: float) -> str:
        end = time.monotonic() + timeout
        with self._got:
            while True:
                for line in self.lines:
                    if marker in line:
                        return line.decode(errors="replace").strip()
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("server did not start: " + self.stderr.decode(
                        errors="replace")[-2000:])
                self._got.wait(0.2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self):
        for pid in sorted(self.known, reverse=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for pid in self.known - {self.proc.pid}:  # workers left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return self.proc.returncode


# ================================================================ clients


def headers(token):
    return {"Authorization": f"Bearer {token}"}


class Client:
    """An asyncio websockets client that pairs replies with requests."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0
        self.waiters: dict = {}
        self.records: dict = {}
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, server: Server):
        from websockets.asyncio.client import connect
        ws = await connect(server.url, additional_headers=headers(server.token), max_size=None,
                           compression=None, open_timeout=10, ping_interval=None,
                           close_timeout=2)
        return cls(ws)

    async def _read(self):
        try:
            async for message in self.ws:
                obj = json.loads(message)
                key = json.dumps(obj.get("id"))
                if obj.get("kind") == "done":
                    fut = self.waiters.pop(key, None)
                    records = self.records.pop(key, [])
                    if fut is not None and not fut.done():
                        fut.set_result(records)
                else:
                    self.records.setdefault(key, []).append(obj)
        except Exception:
            pass
        finally:
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    async def send(self, line: str, source: str | None = None):
        self.n += 1
        key = json.dumps(self.n)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[key] = fut
        frame = {"id": self.n, "line": line}
        if source is not None:
            frame["source"] = source
        await self.ws.send(json.dumps(frame))
        return fut

    async def ask(self, line: str, source: str | None = None, timeout: float = 120) -> list:
        fut = await self.send(line, source)
        return await asyncio.wait_for(fut, timeout)

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass
        self.reader.cancel()


def errors(records: list) -> list:
    return [r["message"] for r in records if r.get("kind") == "error"]


async def ask_ok(c: Client, line: str, source=None, timeout=120) -> list:
    records = await c.ask(line, source, timeout)
    if errors(records):
        raise RuntimeError(f"{line!r}: {errors(records)}")
    return records


class Bystander(threading.Thread):
    """`list` and `peek small limit=1` alternately, one every 100 ms."""

    def __init__(self, server: Server, period: float = 0.1):
        super().__init__(daemon=True)
        self.server, self.period = server, period
        self.stop = threading.Event()
        self.latencies: list = []   # (sent at, seconds)
        self.problem = None
        self.ready = threading.Event()

    def run(self):
        from websockets.sync.client import connect
        try:
            with connect(self.server.url, additional_headers=headers(self.server.token),
                         open_timeout=10, max_size=None, compression=None,
                         close_timeout=2) as ws:
                self.ready.set()
                i = 0
                next_at = time.perf_counter()
                while not self.stop.is_set():
                    line = "list" if i % 2 == 0 else "peek small limit=1"
                    t0 = time.perf_counter()
                    ws.send(json.dumps({"id": i, "line": line}))
                    while True:
                        obj = json.loads(ws.recv(timeout=300))
                        if obj.get("kind") == "error" and obj.get("id") == i:
                            self.problem = self.problem or obj["message"][:80]
                        if obj.get("id") == i and obj.get("kind") == "done":
                            break
                    t1 = time.perf_counter()
                    self.latencies.append((t0, t1 - t0))
                    i += 1
                    next_at = max(t1, next_at + self.period)
                    self.stop.wait(max(0.0, next_at - time.perf_counter()))
        except Exception as e:
            self.problem = f"bystander: {type(e).__name__}: {e}"[:100]
        finally:
            self.ready.set()

    def times(self) -> list:
        return [dt for _, dt in self.latencies]


# ================================================================ raw WebSocket


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    if n:
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")
    return head + mask + payload


def upgrade_request(server: Server) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    host, port = server.addr
    return ("\r\n".join([f"GET / HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                         "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                         "Sec-WebSocket-Version: 13", f"Authorization: Bearer {server.token}"])
            + "\r\n\r\n").encode()


class Raw:
    """A WebSocket client on a bare socket: it sends what it is told and
    reads only when asked."""

    def __init__(self, server: Server, rcvbuf: int | None = None, timeout: float = 10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(server.addr)
        self.sock.sendall(upgrade_request(server))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, self.buf = data.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"handshake: HTTP {self.status}")

    def send(self, obj) -> None:
        self.sock.sendall(ws_frame(json.dumps(obj).encode()))

    def frames(self, quiet: float = 2.0, most: float = 30.0):
        """(opcode, payload) of what arrives until ``quiet`` s pass with
        nothing, the peer closes, or ``most`` s."""
        out = []
        end = time.monotonic() + most
        self.sock.settimeout(quiet)
        buf = self.buf
        eof = False
        while time.monotonic() < end:
            while True:  # parse whole frames out of buf
                if len(buf) < 2:
                    break
                n, at = buf[1] & 0x7F, 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, at = struct.unpack("!H", buf[2:4])[0], 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, at = struct.unpack("!Q", buf[2:10])[0], 10
                if len(buf) < at + n:
                    break
                out.append((buf[0] & 0x0F, buf[at:at + n]))
                buf = buf[at + n:]
            if eof or (out and out[-1][0] == 8):
                break
            try:
                chunk = self.sock.recv(1 << 20)
            except (socket.timeout, TimeoutError):
                break
            except OSError:
                break
            if not chunk:
                eof = True
                continue
            buf += chunk
        self.buf = buf
        return out, eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(frames) -> int | None:
    for op, payload in frames:
        if op == 8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


# ================================================================ attacks


class Attack:
    """What one row reports."""

    def __init__(self, name: str, budget: str):
        self.name, self.budget = name, budget
        self.saw = ""
        self.note = ""
        self.wait_allowed = 0.0   # s the bystander may wait (the time attack)
        self.extra: dict = {}


async def setup(server: Server, programs: dict, feeds: list) -> Client:
    """The bystander's trace "small" and the attack's programs, ticked
    once; the connection stays open for the attack."""
    c = await Client.open(server)
    await ask_ok(c, "install small small.ddp", SMALL)
    for i in range(5):
        await ask_ok(c, f"feed small 0 {i}")
    for name, text in programs.items():
        await ask_ok(c, f"install {name} {name}.ddp", text)
    for line in feeds:
        await ask_ok(c, line)
    await ask_ok(c, "tick", timeout=300)
    return c


async def attack_base(server, cfg, row, admin, sampler):
    await asyncio.sleep(cfg.base_seconds)
    row.saw = f"no attack ({cfg.base_seconds:g} s)"


async def attack_memory(server, cfg, row, admin, sampler):
    c = await Client.open(server)
    try:
        t0 = time.perf_counter()
        futs = [await c.send(f"feed m 0 {i}") for i in range(cfg.memory_rows)]
        bad = 0
        for f in futs:
            bad += bool(errors(await asyncio.wait_for(f, 300)))
        fed = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            records = await c.ask("tick", timeout=600)
        except (ConnectionError, asyncio.TimeoutError) as e:
            row.saw = f"tick: {type(e).__name__} after {time.perf_counter() - t0:.1f} s"
            return
        took = time.perf_counter() - t0
        msgs = errors(records)
        failed = "?"
        if server.alive():
            listing = (await c.ask("list", timeout=60))[0]
            failed = next((p.get("failed") for p in listing["programs"] if p["name"] == "m"),
                          None)
        if msgs:
            text = msgs[0].split(": ", 1)[-1].split("; it has stopped")[0]
            row.saw = f"program failed after {took:.1f} s: {text[:120]}"
        else:
            row.saw = f"tick succeeded after {took:.1f} s (no failure!)"
        row.note = f"fed {cfg.memory_rows} rows in {fed:.1f} s" + \
            (f", {bad} feed errors" if bad else "") + f"; list: failed={failed is not None}"
        row.extra.update(tick_s=took, feed_s=fed, failed=failed, messages=msgs)
    finally:
        await c.close()


async def attack_memory_gradual(server, cfg, row, admin, sampler):
    """Not in issue 21: memory that grows round by round (a loop that
    doubles its rows), which only the sampled check can see coming."""
    c = await Client.open(server)
    try:
        await ask_ok(c, "feed d 0 1")
        t0 = time.perf_counter()
        try:
            records = await c.ask("tick", timeout=300)
        except (ConnectionError, asyncio.TimeoutError) as e:
            row.saw = f"tick: {type(e).__name__} after {time.perf_counter() - t0:.1f} s"
            return
        took = time.perf_counter() - t0
        msgs = errors(records)
        failed = None
        if server.alive():
            listing = (await c.ask("list", timeout=60))[0]
            failed = next((p.get("failed") for p in listing["programs"] if p["name"] == "d"),
                          None)
        if msgs:
            text = msgs[0].split(": ", 1)[-1].split("; it has stopped")[0]
            row.saw = f"program failed after {took:.1f} s: {text[:120]}"
        else:
            row.saw = f"tick succeeded after {took:.1f} s (no failure!)"
        row.note = "a loop doubling its rows each round; list: failed=" + str(failed is not None)
        row.extra.update(tick_s=took, failed=failed, messages=msgs)
    finally:
        await c.close()


async def attack_time(server, cfg, row, admin, sampler):
    c = await Client.open(server)
    try:
        await ask_ok(c, "feed t 0 1")
        t0 = time.perf_counter()
        tick = await c.send("tick")
        await asyncio.sleep(1.0)
        t_cancel = time.perf_counter()
        cancel = await c.ask("cancel", timeout=30)
        t_reply = time.perf_counter() - t_cancel
        records = await asyncio.wait_for(tick, 300)
        t_end = time.perf_counter()
        listing = (await c.ask("list", timeout=60))[0]
        failed = next((p.get("failed") for p in listing["programs"] if p["name"] == "t"), None)
        running = cancel[0].get("running") if cancel else None
        row.saw = (f"cancel answered in {t_reply * 1000:.0f} ms (running={running}); tick "
                   f"ended {t_end - t_cancel:.2f} s after it ({t_end - t0:.2f} s in all); "
                   f"list: [failed: {failed}]")
        row.wait_allowed = t_end - t0
        row.note = "bystander may wait until the cancel (~1 s)"
        row.extra.update(cancel_reply_s=t_reply, tick_after_cancel_s=t_end - t_cancel,
                         failed=failed, tick_errors=errors(records))
    finally:
        await c.close()


async def attack_frames(server, cfg, row, admin, sampler):
    raws = []
    try:
        for _ in range(8):
            r = Raw(server)
            header = bytes([0x81, 0xFF]) + struct.pack("!Q", 63 << 20) + os.urandom(4)
            try:
                r.sock.sendall(header + os.urandom(4096))
            except OSError:
                pass
            raws.append(r)
        await asyncio.sleep(cfg.hold)
        codes = []
        for r in raws:
            frames, eof = await asyncio.to_thread(r.frames, 0.5, 5)
            codes.append(close_code(frames) or ("eof" if eof else None))
        closed = sum(c is not None for c in codes)
        shown = sorted({str(c) for c in codes if c is not None})
        row.saw = f"closed by the server: {closed}/8 (close codes: {', '.join(shown) or '-'})"
        row.extra.update(codes=[str(c) for c in codes])
    finally:
        for r in raws:
            r.close()


async def attack_peeks(server, cfg, row, admin, sampler):
    raws = []
    try:
        t0 = time.perf_counter()
        whole = await ask_ok(admin, "peek big", timeout=120)
        one = time.perf_counter() - t0
        reply = len(json.dumps(whole[0]))
        before = sampler.sample()
        for _ in range(cfg.peek_conns):
            r = Raw(server, rcvbuf=4096)
            for i in range(cfg.peek_depth):
                r.send({"id": i, "line": "peek big"})
            raws.append(r)
        await asyncio.sleep(cfg.hold)
        held = sampler.sample()
        t0 = time.perf_counter()
        records = await admin.ask("peek big limit=1", timeout=300)
        took = time.perf_counter() - t0
        for r in raws:
            r.close()
        raws = []
        await asyncio.sleep(3)
        after = sampler.sample()
        row.saw = (f"{cfg.peek_conns}x{cfg.peek_depth} peeks never read; RSS "
                   f"{before / 1024:.0f} -> {held / 1024:.0f} MB held, {after / 1024:.0f} MB "
                   f"3 s after they closed")
        row.note = (f"one `peek big`: {reply / MiB:.1f} MB, {one:.2f} s; a `peek big limit=1` "
                    f"after {cfg.hold:g} s of it: {took * 1000:.0f} ms")
        row.extra.update(rss_before_mb=before / 1024, rss_held_mb=held / 1024,
                         rss_after_mb=after / 1024, total=records[0].get("total"))
    finally:
        for r in raws:
            r.close()


async def churn_ticks(c: Client, first: int, n: int, between=None, failed=None) -> list:
    """Tick ``n`` times, each changing every row of churn (retract the
    value fed last, feed the next). -> each tick's seconds. A tick that
    reports an error stops them (its message appended to ``failed``)."""
    took = []
    for i in range(first, first + n):
        await ask_ok(c, f"feed g 0 {i} diff=-1")
        await ask_ok(c, f"feed g 0 {i + 1}")
        t0 = time.perf_counter()
        records = await c.ask("tick", timeout=300)
        took.append(time.perf_counter() - t0)
        if errors(records):
            if failed is None:
                raise RuntimeError(f"tick: {errors(records)}")
            failed.append(errors(records)[0])
            break
        if between is not None:
            await between(i)
    return took


async def attack_churn_only(server, cfg, row, admin, sampler):
    """8c's control: the same ticks, no cursor."""
    start = sampler.sample()
    took = await churn_ticks(admin, 1, cfg.cursor_epochs)
    end = sampler.sample()
    row.saw = (f"{cfg.cursor_epochs} epochs, no cursor; RSS {start / 1024:.0f} -> "
               f"{end / 1024:.0f} MB (+{(end - start) / 1024:.0f})")
    row.note = f"ticks median {statistics.median(took):.2f} s, max {max(took):.2f} s"
    row.extra.update(rss_start_mb=start / 1024, rss_end_mb=end / 1024, ticks=took)


async def attack_cursor(server, cfg, row, admin, sampler):
    pager = await Client.open(server)
    try:
        first = await ask_ok(pager, "peek churn limit=10")
        token = first[0].get("cursor")
        start = sampler.sample()
        pages = {"ok": 0, "errors": []}

        async def repage(i):
            records = await pager.ask(f"peek cursor={token} limit=10", timeout=120)
            e = errors(records)
            if e:
                pages["errors"].append(e[0])
            else:
                pages["ok"] += 1
        failed: list = []
        took = await churn_ticks(admin, 1, cfg.cursor_epochs, repage, failed)
        end = sampler.sample()
        peak = sampler.peak_sum
        err = f"; first page error: {pages['errors'][0][:60]}" if pages["errors"] else ""
        if failed:
            err += f"; the ticker's tick {len(took)} failed: {failed[0].split('; it has')[0]}"
        row.saw = (f"{len(took)} epochs, cursor re-paged ok {pages['ok']}x{err}; RSS "
                   f"{start / 1024:.0f} -> {end / 1024:.0f} MB (+{(end - start) / 1024:.0f})")
        row.note = f"ticks median {statistics.median(took):.2f} s, max {max(took):.2f} s"
        row.extra.update(rss_start_mb=start / 1024, rss_end_mb=end / 1024,
                         peak_mb=peak / 1024, ticks=took, pages_ok=pages["ok"],
                         page_errors=pages["errors"][:3], ticker_failed=failed)
    finally:
        await pager.close()


async def attack_connections(server, cfg, row, admin, sampler):
    statuses: dict = {}
    held = []
    err_before = len(server.stderr)
    sem = asyncio.Semaphore(100)

    async def one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*server.addr), 15)
            except Exception as e:
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                return
            try:
                writer.write(upgrade_request(server))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                status = int(head.split(b" ", 2)[1])
            except Exception as e:
                status = type(e).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 101:
                held.append((reader, writer))
            else:
                writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(cfg.connections)))
    opened = time.perf_counter() - t0
    await asyncio.sleep(cfg.hold)
    closed = 0
    for reader, writer in held:  # anything the server sent (a close frame) by now
        if reader.at_eof() or len(getattr(reader, "_buffer", b"")):
            closed += 1
    for _, writer in held:
        writer.close()
    await asyncio.sleep(1.5)
    grew = len(server.stderr) - err_before
    # the server takes new clients again once they left
    again = await Client.open(server)
    ok = (await again.ask("list", timeout=30))[0]["kind"] == "list"
    await again.close()
    parts = [f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))]
    row.saw = (f"{cfg.connections} handshakes in {opened:.1f} s -> " + ", ".join(parts) +
               (f"; {closed} of the accepted closed by the server" if closed else "") +
               f"; server stderr +{grew} B; a new client after: {'ok' if ok else 'FAILED'}")
    row.extra.update(statuses={str(k): v for k, v in statuses.items()}, stderr_bytes=grew,
                     closed_after_accept=closed)


async def attack_subscriptions(server, cfg, row, admin, sampler):
    hog = None
    try:
        alone = await churn_ticks(admin, 1, cfg.sub_ticks)
        hog = Raw(server, rcvbuf=4096)
        for i in range(10):
            hog.send({"id": i, "line": "subscribe churn"})
        await asyncio.sleep(2)
        beside = await churn_ticks(admin, 1 + cfg.sub_ticks, cfg.sub_ticks)
        frames, _ = await asyncio.to_thread(hog.frames, 2.0, 60)
        started = ended = 0
        for op, payload in frames:
            if op != 1:
                continue
            obj = json.loads(payload)
            started += obj.get("kind") == "subscribed"
            ended += obj.get("kind") == "error" and "ended" in obj.get("message", "")
        row.saw = (f"ticks median/max {statistics.median(alone):.2f}/{max(alone):.2f} s alone, "
                   f"{statistics.median(beside):.2f}/{max(beside):.2f} s with it; "
                   f"subscriptions started {started}/10, ended {ended}/{started}")
        row.extra.update(alone=alone, beside=beside, started=started, ended=ended)
    finally:
        if hog is not None:
            hog.close()


# ================================================================ running


ATTACKS = [
    # (key, label, function, setup programs (cfg -> dict), setup feeds, budget option)
    ("base", "base: no attack", attack_base, lambda cfg: {}, [], "budget"),
    ("6", "6 memory", attack_memory, lambda cfg: {"m": MEMORY}, [], "budget"),
    ("6s", "6 memory", attack_memory, lambda cfg: {"m": MEMORY}, [], "small_budget"),
    ("6g", "6g memory, gradual", attack_memory_gradual, lambda cfg: {"d": DOUBLING}, [],
     "small_budget"),
    ("7", "7 time (cancel)", attack_time, lambda cfg: {"t": FOREVER}, [], "budget"),
    ("8a", "8a 63 MiB frames", attack_frames, lambda cfg: {}, [], "budget"),
    ("8b", "8b pipelined peeks", attack_peeks, lambda cfg: {"g": BIG.format(n=cfg.rows)}, [],
     "budget"),
    ("8c0", "8c control: ticks only", attack_churn_only,
     lambda cfg: {"g": CHURN.format(n=cfg.rows)}, ["feed g 0 1"], "budget"),
    ("8c", "8c cursor pinning", attack_cursor, lambda cfg: {"g": CHURN.format(n=cfg.rows)},
     ["feed g 0 1"], "budget"),
    ("9", "9 connections", attack_connections, lambda cfg: {}, [], "budget"),
    ("10", "10 subscriptions", attack_subscriptions,
     lambda cfg: {"g": CHURN.format(n=cfg.rows)}, ["feed g 0 1"], "budget"),
]


async def run_one(cfg, key, label, fn, programs, feeds, budget_opt, tmp) -> dict:
    budget = getattr(cfg, budget_opt)
    row = Attack(f"{label} ({budget})" if key in ("6", "6s", "6g") else label, budget)
    budget_b = size_bytes(budget)
    guard = min(2 * budget_b + (1 << 30), int(mem_available() * 0.75))
    server = sampler = bystander = admin = None
    t_start = t_attack = time.perf_counter()
    try:
        server = Server(tmp, cfg.workers, budget)
        sampler = Sampler(server, guard)
        sampler.start()
        admin = await setup(server, programs(cfg), feeds)
        bystander = Bystander(server)
        bystander.start()
        await asyncio.to_thread(bystander.ready.wait, 15)
        await asyncio.sleep(0.3)
        t_attack = time.perf_counter()
        await asyncio.wait_for(fn(server, cfg, row, admin, sampler), cfg.attack_timeout)
        await asyncio.sleep(0.5)
    except asyncio.TimeoutError:
        row.saw = (row.saw + "; " if row.saw else "") + \
            f"attack timed out after {cfg.attack_timeout} s"
    except Exception as e:
        row.saw = (row.saw + "; " if row.saw else "") + f"attack error: {type(e).__name__}: {e}"
        if cfg.verbose:
            traceback.print_exc()
    finally:
        if admin is not None:
            await admin.close()
        if bystander is not None:
            bystander.stop.set()
            await asyncio.to_thread(bystander.join, 60)
        if sampler is not None:
            sampler.stop.set()
            sampler.join(5)
        alive = server is not None and server.alive()
        rc = server.stop() if server is not None else None
    lat = bystander.times() if bystander is not None else []
    result = {
        "attack": row.name, "budget": budget,
        "bystander_n": len(lat),
        "median_ms": statistics.median(lat) * 1000 if lat else None,
        "p99_ms": pct(lat, 99) * 1000 if lat else None,
        "max_ms": max(lat) * 1000 if lat else None,
        "peak_rss_sum_mb": sampler.peak_sum / 1024 if sampler else None,
        "peak_rss_one_mb": sampler.peak_one / 1024 if sampler else None,
        "saw": row.saw, "note": row.note,
        "server_alive_after": alive, "server_rc": rc,
        "bystander_problem": bystander.problem if bystander else "not started",
        "guard_kill": sampler.killed if sampler else None,
        "seconds": time.perf_counter() - t_start,
        # the bystander's requests over 0.5 s: (s since the attack's start, seconds)
        "slow": [(round(t - t_attack, 2), round(dt, 2)) for t, dt in
                 (bystander.latencies if bystander is not None else []) if dt > 0.5],
        **row.extra,
    }
    limit_ms = 1000 + row.wait_allowed * 1000
    ok_lat = bool(lat) and result["p99_ms"] < limit_ms and bystander.problem is None
    ok_rss = sampler is not None and sampler.peak_sum * 1024 < budget_b and not sampler.killed
    ok = ok_lat and ok_rss and alive
    why = []
    if not ok_lat:
        why.append("bystander")
    if not ok_rss:
        why.append("rss")
    if not alive:
        why.append("server died")
    result["verdict"] = "PASS" if ok else "FAIL (" + ", ".join(why) + ")"
    return result


def table(rows: list) -> str:
    head = ["attack", "by. n", "median ms", "p99 ms", "RSS sum MB", "RSS max MB", "budget",
            "verdict", "attacker saw"]
    body = []
    for r in rows:
        f = lambda x, d=0: "-" if x is None else f"{x:,.{d}f}"  # noqa: E731
        saw = r["saw"]
        if r.get("note"):
            saw += f" [{r['note']}]"
        if r.get("bystander_problem"):
            saw += f" [{r['bystander_problem']}]"
        if r.get("guard_kill"):
            saw += f" [{r['guard_kill']}]"
        if not r["server_alive_after"]:
            saw += f" [server gone, rc={r['server_rc']}]"
        body.append([r["attack"], str(r["bystander_n"]), f(r["median_ms"], 1), f(r["p99_ms"], 1),
                     f(r["peak_rss_sum_mb"]), f(r["peak_rss_one_mb"]), r["budget"], r["verdict"],
                     saw])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head) - 1)]
    lines = []
    for cells in [head] + body:
        out = []
        for i, cell in enumerate(cells[:-1]):
            out.append(cell.ljust(widths[i]) if i in (0, 6, 7) else cell.rjust(widths[i]))
        lines.append("  ".join(out) + "  " + cells[-1])
    lines.insert(1, "-" * min(200, len(lines[0]) + 40))
    return "\n".join(lines)


def config(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes)")
    p.add_argument("--only", default=None,
                   help="comma-separated: base,6,6s,6g,7,8a,8b,8c0,8c,9,10 (6s: memory "
                        "with --small-budget; 6g: memory growing round by round; "
                        "8c0: 8c's ticks with no cursor)")
    p.add_argument("--budget", default="3G")
    p.add_argument("--small-budget", default="1G")
    p.add_argument("-w", "--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="JSON rows instead of the table")
    p.add_argument("--verbose", action="store_true")
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.base_seconds = 3 if q else 5
    cfg.memory_rows = 20_000
    cfg.rows = 50_000 if q else 200_000
    cfg.hold = 3 if q else 6
    cfg.peek_conns, cfg.peek_depth = (4, 16) if q else (4, 64)
    cfg.cursor_epochs = 10 if q else 30
    cfg.connections = 400 if q else 1_100
    cfg.sub_ticks = 4 if q else 10
    cfg.attack_timeout = 240
    return cfg


async def main(argv) -> int:
    cfg = config(argv)
    keys = [a[0] for a in ATTACKS]
    only = keys if cfg.only is None else [k.strip() for k in cfg.only.split(",") if k.strip()]
    unknown = [k for k in only if k not in keys]
    if unknown:
        print(f"unknown attacks: {unknown} (known: {keys})", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard if hard != resource.RLIM_INFINITY else 1 << 16, 1 << 16))
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    rows = []
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddir-abuse-") as tmp:
        os.makedirs(os.path.join(tmp, "runtime"), mode=0o700)
        for key, label, fn, programs, feeds, budget_opt in ATTACKS:
            if key not in only:
                continue
            if not cfg.json:
                print(f"... {label}", file=sys.stderr, flush=True)
            rows.append(await run_one(cfg, key, label, fn, programs, feeds, budget_opt, tmp))
            if not cfg.json:
                r = rows[-1]
                print(f"    {r['verdict']}: {r['saw']} ({r['seconds']:.0f} s)", file=sys.stderr,
                      flush=True)
                if cfg.verbose:
                    print(f"    slow bystander requests (at s, took s): {r['slow']}",
                          file=sys.stderr)
                    for k in ("ticks", "alone", "beside"):
                        if k in r:
                            print(f"    {k}: {[round(x, 2) for x in r[k]]}", file=sys.stderr)
    info = {"workers": cfg.workers, "quick": cfg.quick, "seconds": time.perf_counter() - t0,
            "loadavg_start": load0, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count()}
    if cfg.json:
        print(json.dumps({"run": info, "rows": rows}, indent=1, default=str))
    else:
        print(table(rows))
        print(f"\n-w {cfg.workers}{' --quick' if cfg.quick else ''}, {info['seconds']:.0f} s, "
              f"{info['cpus']} CPUs, load average {load0[0]:.1f} at the start, "
              f"{info['loadavg_end'][0]:.1f} at the end")
    return 0 if all(r["verdict"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
