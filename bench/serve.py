"""`ddir serve` under load (SPEC C3): C clients each send N commands (feeds,
ticks, peeks; each waits for its `done`) against one server; throughput,
median and p99 latency per command, and a subscriber's delay from a `tick`
being sent to its `change` record arriving. Compared with the same commands
(every client's, in one order) sent as one script to `ddir` in the same run.

    python bench/serve.py [--clients 16] [--commands 2000] [-w 1]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--commands", type=int, default=2000)
    ap.add_argument("-w", "--workers", default="1")
    args = ap.parse_args()
    total = args.clients * args.commands
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "e.ddp")
        with open(prog, "w") as f:
            f.write(PROGRAM)
        setup = os.path.join(tmp, "setup.txt")
        with open(setup, "w") as f:
            f.write(f"install e {prog}\n")
        server = subprocess.Popen([sys.executable, "-m", "ddir", "serve", "--port", "0",
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
