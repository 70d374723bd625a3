"""`ddir serve` under load (SPEC C3): C clients each send N commands (feeds,
ticks, peeks; each waits for its `done`) against one server; throughput,
median and p99 latency per command, and a subscriber's delay from a `tick`
being sent to its `change` record arriving. Compared with the same commands
(every client's, in one order) sent as one script to `ddir` in the same run.

Server memory (RSS of the `ddir serve` process, from /proc; with -w N > 1 the
workers' RSS is shown apart): with 100 subscribers connected and reading
while a driver feeds and ticks, and with one subscriber that never reads
(its client paused, so it answers no keepalive ping either) while 2 others read
and a driver ticks past the subscriber queue (default 10,000 records): RSS
over the ticks, and what the non-reader finally receives.

Cursor pages (SPEC C4, through the Python API, the same registry and
workers): a trace with one key of R rows beside 1,000 one-row keys; the time
of `peek key` whole, of its first page (`limit=100`, which takes the lease
and prepares the pages), and of the 50 pages after it, for a key cursor and
for an all-keys cursor inside the big key; with -w 1 also the rows each page
touched (`cursor.PAGE_STATS`). `--checkout DIR` runs this part on another
checkout's `ddir` (for a before/after in one run).

    python bench/serve.py [--clients 16] [--commands 2000] [-w 1]
                          [--part all|throughput|memory|cursor] [--ticks 300]
                          [--stall-ticks 14000] [--subscriber-queue 10000]
                          [--key-rows 10000,100000,1000000] [--checkout DIR]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROGRAM = 'export "echoed" = input 0;\nexport "counts" = input 0 | key($0[0] ;) | count;\n'


def commands(client: int, n: int) -> list:
    """feed, feed, ..., a tick every 10th command, a peek of one key every
    10th (offset by 5): 80% feeds, 10% ticks, 10% peeks."""
    out = []
    for j in range(n):
        if j % 10 == 9:
            out.append("tick")
        elif j % 10 == 4:
            out.append(f"peek counts {client}")
        else:
            out.append(f"feed e 0 {client},{j}")
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def run_clients(url: str, n_clients: int, n_commands: int) -> dict:
    from websockets.asyncio.client import connect
    latencies, tick_sent, change_seen = [], {}, {}

    async def client(c):
        async with connect(url, max_size=None, compression=None) as ws:
            for j, line in enumerate(commands(c, n_commands)):
                t0 = time.perf_counter()
                await ws.send(json.dumps({"id": j, "line": line}))
                while True:
                    obj = json.loads(await ws.recv())
                    if obj["kind"] == "error":
                        raise SystemExit(f"error from the server: {obj}")
                    if obj["kind"] == "tick":
                        tick_sent[obj["epoch"] - 1] = t0  # the epoch it closed
                    if obj["kind"] == "done":
                        break
                latencies.append(time.perf_counter() - t0)

    async def subscriber(ready, stop):
        async with connect(url, max_size=None, compression=None) as ws:
            await ws.send(json.dumps({"id": "sub", "line": "subscribe echoed"}))
            while json.loads(await ws.recv())["kind"] != "done":
                pass
            ready.set()
            while not stop.is_set():
                try:
                    obj = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                if obj["kind"] == "change":
                    change_seen[obj["epoch"]] = time.perf_counter()

    ready, stop = asyncio.Event(), asyncio.Event()
    sub = asyncio.create_task(subscriber(ready, stop))
    await ready.wait()
    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(n_clients)))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    stop.set()
    await sub
    delays = [change_seen[e] - tick_sent[e] for e in change_seen if e in tick_sent]
    return {"elapsed": elapsed, "latencies": latencies, "delays": delays}


# ---------------------------------------------------------------- memory

# each tick moves "wide" from key i-1 to key i: a change of 2 x WIDTH rows
MEMORY_PROGRAM = ('let n = import "iota:{width}" | key(; $0);\n'
                  'export "wide" = input 0 | key(; $0) | join(n, ($1[0], $2[0] ;));\n')


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def workers_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sum(rss_mb(int(c)) for c in f.read().split())
    except OSError:
        return 0.0


def start_server(tmp: str, workers: str, program: str, *extra) -> tuple:
    prog = os.path.join(tmp, "m.ddp")
    with open(prog, "w") as f:
        f.write(program)
    setup = os.path.join(tmp, "msetup.txt")
    with open(setup, "w") as f:
        f.write(f"install m {prog}\n")
    server = subprocess.Popen([sys.executable, "-m", "ddir", "serve", "--port", "0", "--no-token",
                               "-w", workers, *extra, setup],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return server, server.stderr.readline().split()[-1]


async def drive(ws, first: int, ticks: int, on_tick=None, window: int = 20) -> None:
    """Feed key i, retract key i-1, tick; ``window`` ticks pipelined at a time."""
    i = first
    while i < first + ticks:
        n = min(window, first + ticks - i)
        sent = 0
        for k in range(i, i + n):
            lines = [f"feed m 0 {k}"] + ([f"feed m 0 {k - 1} diff=-1"] if k else []) + ["tick"]
            for line in lines:
                await ws.send(json.dumps({"id": sent, "line": line}))
                sent += 1
        done = 0
        while done < sent:
            obj = json.loads(await ws.recv())
            if obj["kind"] == "error":
                raise SystemExit(f"error from the server: {obj}")
            done += obj["kind"] == "done"
        i += n
        if on_tick is not None:
            on_tick(i)


async def reader(url: str, counts: dict, key, ready: asyncio.Event | None = None):
    from websockets.asyncio.client import connect
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"id": "sub", "line": "subscribe wide"}))
        while json.loads(await ws.recv())["kind"] != "done":
            pass
        counts[key] = 0
        if ready is not None:
            ready.set()
        async for message in ws:
            obj = json.loads(message)
            if obj["kind"] == "change":
                counts[key] = obj["epoch"] + 1
            elif obj["kind"] == "error":
                counts[key] = obj["message"]
                return


async def memory_subscribers(url: str, pid: int, n_subs: int, ticks: int) -> dict:
    from websockets.asyncio.client import connect
    out = {"start": (rss_mb(pid), workers_mb(pid))}
    counts: dict = {}
    readies = [asyncio.Event() for _ in range(n_subs)]
    tasks = [asyncio.create_task(reader(url, counts, k, readies[k])) for k in range(n_subs)]
    for r in readies:
        await r.wait()
    await asyncio.sleep(0.5)
    out["subscribed"] = (rss_mb(pid), workers_mb(pid))
    series = []
    async with connect(url, max_size=None, compression=None) as ws:
        t0 = time.perf_counter()

        def sample(i):
            if i * 10 // ticks > (series[-1][0] if series else 0) * 10 // ticks:
                series.append((i, rss_mb(pid)))
        await drive(ws, 0, ticks, sample)
        deadline = time.perf_counter() + 60
        while min(counts.values()) < ticks and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        out["elapsed"] = time.perf_counter() - t0
    out["delivered"] = sum(min(v, ticks) for v in counts.values() if isinstance(v, int))
    out["series"] = series
    out["end"] = (rss_mb(pid), workers_mb(pid))
    out["peak"] = rss_mb(pid, "VmHWM")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


async def memory_stalled(url: str, pid: int, n_readers: int, ticks: int) -> dict:
    from websockets.asyncio.client import connect
    out = {"start": rss_mb(pid)}
    # The non-reader keeps the kernel's default socket buffers: shrinking its
    # receive buffer (as the tests do, to overflow sooner) leaves TCP after a
    # long zero window sending ~5 frames per 200 ms persist probe once it
    # reads again, so it seemed to get nothing more.
    stalled = await connect(url, max_size=None, max_queue=1, compression=None,
                            ping_interval=None)
    await stalled.send(json.dumps({"id": "stalled", "line": "subscribe wide"}))
    while json.loads(await stalled.recv())["kind"] != "done":
        pass
    # from here on `stalled` is not read (its client stops reading the socket)
    counts: dict = {}
    readies = [asyncio.Event() for _ in range(n_readers)]
    tasks = [asyncio.create_task(reader(url, counts, k, readies[k])) for k in range(n_readers)]
    for r in readies:
        await r.wait()
    series, lat = [], []
    async with connect(url, max_size=None, compression=None) as ws:
        def sample(i):
            if i * 14 // ticks > (series[-1][0] if series else 0) * 14 // ticks:
                series.append((i, rss_mb(pid)))
        t0 = time.perf_counter()
        await drive(ws, 0, ticks, sample)
        out["elapsed"] = time.perf_counter() - t0
        for j in range(50):  # a command's latency with the stalled one still connected
            t1 = time.perf_counter()
            await ws.send(json.dumps({"id": j, "line": "peek wide limit=1"}))
            while json.loads(await ws.recv())["kind"] != "done":
                pass
            lat.append(time.perf_counter() - t1)
    out["series"], out["peak"], out["end"] = series, rss_mb(pid, "VmHWM"), rss_mb(pid)
    out["peek_ms"] = (statistics.median(lat) * 1e3, max(lat) * 1e3)
    deadline = time.perf_counter() + 60
    while min(counts.values()) < ticks and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    out["readers_complete"] = all(v == ticks for v in counts.values())
    changes, last = 0, None
    t0 = time.perf_counter()
    while True:  # now read what reached the stalled subscriber
        try:
            obj = json.loads(await asyncio.wait_for(stalled.recv(), 30))
        except asyncio.TimeoutError:
            last = "nothing more for 30 s (its queue never overflowed: more --stall-ticks)"
            break
        if obj["kind"] == "change":
            changes += 1
        else:
            last = obj
            break
    out["stalled_changes"], out["stalled_last"] = changes, last
    out["stalled_read_s"] = time.perf_counter() - t0
    await stalled.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def run_memory(args) -> None:
    w = args.workers
    program = MEMORY_PROGRAM.format(width=args.width)
    stall_program = MEMORY_PROGRAM.format(width=args.stall_width)
    extra = ["--subscriber-queue", str(args.subscriber_queue)]
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(tmp, w, program, *extra)
        try:
            r = asyncio.run(memory_subscribers(url, server.pid, 100, args.ticks))
        finally:
            server.terminate()
            server.wait()
        apart = int(w) > 1
        wk = (lambda pair: f" (+ workers {pair[1]:.1f} MB)") if apart else (lambda pair: "")
        print(f"ddir serve -w {w} memory: 100 subscribers reading \"wide\" "
              f"({2 * args.width} rows a change), a driver feeding and ticking {args.ticks} times")
        print(f"  RSS of the serve process: started {r['start'][0]:.1f} MB{wk(r['start'])}; "
              f"100 subscribed {r['subscribed'][0]:.1f} MB{wk(r['subscribed'])} "
              f"(= {(r['subscribed'][0] - r['start'][0]) * 1024 / 100:.0f} KB a subscriber); "
              f"after the ticks {r['end'][0]:.1f} MB{wk(r['end'])}; peak {r['peak']:.1f} MB")
        print("  over the ticks: " + ", ".join(f"{i}: {m:.1f}" for i, m in r["series"]))
        print(f"  {r['delivered']:,} change records delivered in {r['elapsed']:.2f} s")

        server, url = start_server(tmp, w, stall_program, *extra)
        try:
            r = asyncio.run(memory_stalled(url, server.pid, args.readers, args.stall_ticks))
        finally:
            server.terminate()
            server.wait()
        print(f"ddir serve -w {w} memory: one subscriber that never reads (queue "
              f"{args.subscriber_queue:,} records of {2 * args.stall_width} rows), "
              f"{args.readers} reading, a driver ticking {args.stall_ticks:,} times "
              f"({r['elapsed']:.1f} s)")
        print(f"  RSS of the serve process: started {r['start']:.1f} MB, peak {r['peak']:.1f} MB, "
              f"after the ticks {r['end']:.1f} MB")
        print("  over the ticks: " + ", ".join(f"{i}: {m:.1f}" for i, m in r["series"]))
        print(f"  the {args.readers} readers got every change: {r['readers_complete']}; a peek meanwhile: "
              f"median {r['peek_ms'][0]:.2f} ms, max {r['peek_ms'][1]:.2f} ms")
        print(f"  the non-reader, connected all along, reading at last: "
              f"{r['stalled_changes']:,} changes in {r['stalled_read_s']:.2f} s, then "
              f"{json.dumps(r['stalled_last'])}")


# ---------------------------------------------------------------- cursor pages


def run_cursor(args) -> None:
    import ddir
    try:
        from ddir.server.cursor import PAGE_STATS
    except ImportError:  # a checkout from before the counter
        PAGE_STATS = None
    w = int(args.workers)
    where = f" ({args.checkout})" if args.checkout else ""
    print(f"cursor pages -w {w}{where}: one key of R rows beside 1,000 one-row keys; "
          f"pages of 100 rows")
    for rows in [int(r) for r in args.key_rows.split(",")]:
        with ddir.Server(workers=w) as s:
            s.install("p", source='export "t" = input 0 | key($0[0] ; $0[1]);\n')
            s.feed_many("p", 0, keys=[(0, v) for v in range(rows)]
                        + [(k, 0) for k in range(1, 1001)])
            s.tick()
            t0 = time.perf_counter()
            whole = s.peek("t", (0,))
            full = time.perf_counter() - t0
            assert len(whole) == rows
            for label, key in (("key cursor", (0,)), ("all-keys cursor", None)):
                t0 = time.perf_counter()
                cursor = s.page("t", key, limit=100).cursor
                first = time.perf_counter() - t0
                touched = PAGE_STATS["touched"] if PAGE_STATS else 0
                times = []
                for _ in range(50):
                    t0 = time.perf_counter()
                    cursor = s.page(cursor=cursor).cursor
                    times.append(time.perf_counter() - t0)
                per_page = ""
                if PAGE_STATS and w == 1:
                    per_page = f"; {(PAGE_STATS['touched'] - touched) / 50:,.0f} rows touched a page"
                print(f"  R={rows:>9,} {label:>15}: peek key {full * 1e3:8.1f} ms; first page "
                      f"{first * 1e3:8.1f} ms; later pages median "
                      f"{statistics.median(times) * 1e3:7.2f} ms, p99 {pct(times, 99) * 1e3:7.2f} ms"
                      f"{per_page}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--commands", type=int, default=2000)
    ap.add_argument("-w", "--workers", default="1")
    ap.add_argument("--part", choices=["all", "throughput", "memory", "cursor"], default="all")
    ap.add_argument("--ticks", type=int, default=300, help="ticks with 100 subscribers")
    ap.add_argument("--stall-ticks", type=int, default=14000,
                    help="ticks with one subscriber that never reads")
    ap.add_argument("--subscriber-queue", type=int, default=10000)
    ap.add_argument("--width", type=int, default=10,
                    help="a change is 2 x WIDTH rows (100 subscribers)")
    ap.add_argument("--stall-width", type=int, default=100,
                    help="a change is 2 x WIDTH rows (the non-reader)")
    ap.add_argument("--readers", type=int, default=2,
                    help="subscribers that read, beside the non-reader")
    ap.add_argument("--key-rows", default="10000,100000,1000000",
                    help="rows of the big key, for the cursor pages")
    ap.add_argument("--checkout", help="run the cursor part on this checkout's ddir")
    args = ap.parse_args()
    if args.checkout:
        sys.path.insert(0, os.path.abspath(args.checkout))
    if args.part in ("all", "throughput"):
        run_throughput(args)
    if args.part in ("all", "memory"):
        run_memory(args)
    if args.part in ("all", "cursor"):
        run_cursor(args)


def run_throughput(args) -> None:
    total = args.clients * args.commands
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "e.ddp")
        with open(prog, "w") as f:
            f.write(PROGRAM)
        setup = os.path.join(tmp, "setup.txt")
        with open(setup, "w") as f:
            f.write(f"install e {prog}\n")
        server = subprocess.Popen([sys.executable, "-m", "ddir", "serve", "--port", "0", "--no-token",
                                   "-w", args.workers, setup],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = server.stderr.readline().split()[-1]
            r = asyncio.run(run_clients(url, args.clients, args.commands))
        finally:
            server.terminate()
            server.wait()
        # the same commands as one script (round-robin over the clients)
        per = [commands(c, args.commands) for c in range(args.clients)]
        script = os.path.join(tmp, "all.txt")
        with open(script, "w") as f:
            f.write(f"install e {prog}\n")
            for j in range(args.commands):
                for c in range(args.clients):
                    f.write(per[c][j] + "\n")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ddir", "-w", args.workers, "--json",
                              "--strict", script], stdout=subprocess.PIPE, check=True).stdout
        script_s = time.perf_counter() - t0
        assert out.count(b'"kind": "tick"') == args.clients * (args.commands // 10)
    lat = r["latencies"]
    print(f"ddir serve -w {args.workers}: {args.clients} clients x {args.commands} commands "
          f"(80% feed, 10% tick, 10% peek), each waiting for its done")
    print(f"  served: {total} commands in {r['elapsed']:.2f} s = {total / r['elapsed']:,.0f} "
          f"commands/s; latency median {statistics.median(lat) * 1e3:.2f} ms, "
          f"p99 {pct(lat, 99) * 1e3:.2f} ms")
    if r["delays"]:
        d = r["delays"]
        print(f"  subscriber: {len(d)} changes, tick sent -> change received median "
              f"{statistics.median(d) * 1e3:.2f} ms, p99 {pct(d, 99) * 1e3:.2f} ms")
    print(f"  one script to `ddir --json` (same commands, whole process): {script_s:.2f} s = "
          f"{total / script_s:,.0f} commands/s")


if __name__ == "__main__":
    main()
