"""Oracle test cases shared by the engine tests and the multi-worker tests:
the programs, random insert/retract streams, and a check that runs a stream
through a *driver* (the in-process engine, or a server with N workers) and
compares every export with the naive oracle after every epoch."""
import random

from conftest import ROOT
from ddir.engine.dataflow import Dataflow
from ddir.engine.naive import evaluate
from ddir.server import commands as C

REACH = """
let edges = input 0 | key($0[0] ; $0[1]);
let roots = input 1 | key($0[0] ;);
reach: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct; }
export "reach" = reach::reach;
"""
DIST = """
let edges = input 0 | key($0[0] ; $0[1]);
let roots = input 1 | key($0[0] ; 0);
sp: { var dist = roots + (dist | join(edges, ($2 ; $1[0] + 1))) | min; }
export "dist" = sp::dist;
"""
CC = """
let edges = input 0 | key($0[0] ; $0[1]);
let both = edges + (edges | key($1 ; $0));
cc: {
    var lab = (both | key($0 ; $0)) + (lab | join(both, ($2 ; $1))) | min;
}
export "cc" = cc::lab;
"""
COUNT_OF_COUNT = """
let edges = input 0 | key($0[0] ; $0[1]);
export "hist" = edges | count | key($1 ;) | count;
"""

PROGRAMS = {
    "reach": (REACH, {0: 2, 1: 1}),
    "dist": (DIST, {0: 2, 1: 1}),
    "cc": (CC, {0: 2}),
    "count_of_count": (COUNT_OF_COUNT, {0: 2}),
    "scc": ((ROOT / "tests/programs/scc.ddp").read_text(), {0: 2}),
    "adt_case": ((ROOT / "tests/programs/adt_case.ddp").read_text(), {0: 2}),
    "lift": ((ROOT / "tests/programs/lift.ddp").read_text(), {0: 2, 1: 1}),
    "joins": ((ROOT / "tests/programs/joins.ddp").read_text(), {0: 2, 1: 2}),
    "typed_values": ((ROOT / "tests/programs/typed_values.ddp").read_text(), {0: 2}),
}

# Upstream example programs with the input arity their header comments give.
UPSTREAM_ARITIES = {"adt.ddp": {0: 2}, "binders.ddp": {0: 2}, "reach.ddp": {0: 2, 1: 1},
                    "reach.ddir": {0: 2, 1: 1}, "unnest.ddp": {0: 2}}


def random_stream(seed: int, inputs: dict, epochs: int, domain: int = 6):
    """[(epoch, [(time, input, key, diff)])]: retractions only of rows present at
    every later time, so accumulated inputs stay non-negative (a negative
    edge makes `distinct` in a loop oscillate, in any implementation)."""
    rng = random.Random(seed)
    staged = []
    out = []
    for e in range(epochs):
        batch = []
        for _ in range(rng.randint(0, 7)):
            n = rng.choice(sorted(inputs))
            t = e + rng.choice([0, 0, 0, 1, 3])
            net, last = {}, {}
            for tt, nn, key, d in staged:
                if nn == n:
                    net[key] = net.get(key, 0) + d
                    last[key] = max(last.get(key, 0), tt)
            live = [k for k, c in net.items() if c > 0 and last[k] <= t]
            if live and rng.random() < 0.45:
                key, d = rng.choice(sorted(live)), -1
            else:
                key = tuple(rng.randint(0, domain - 1) for _ in range(inputs[n]))
                d = rng.choice([1, 1, 2])
            staged.append((t, n, key, d))
            batch.append((t, n, key, d))
        out.append((e, batch))
    return out


class EngineDriver:
    """One :class:`Dataflow` in this process."""

    def __init__(self, program, functions=None):
        self.df = Dataflow(program, max_rounds=10_000, functions=functions)

    def stage(self, n, t, key, d):
        self.df.stage(n, (t,), [(key, (), d)])

    def tick(self, epoch):
        self.df.run(epoch)
        self.df.compact(epoch)
        self.df.take_events()

    def export(self, name) -> dict:
        return self.df.exports[name].trace.contents()

    def close(self):
        pass


class ServerDriver:
    """The program installed in a running server (any cluster), driven by
    typed commands; stream epoch ``e`` is the server's epoch ``base + e``."""

    def __init__(self, server, program, name="under_test"):
        self.server, self.name = server, name
        self.base = server.epoch
        records = server.execute(C.Install(name, "<test>", program))
        assert records[0] == {"kind": "installed", "name": name}, records

    def stage(self, n, t, key, d):
        assert self.server.execute(C.Feed(self.name, n, key, (), self.base + t, d)) == []

    def tick(self, epoch):
        assert self.server.epoch == self.base + epoch
        records = self.server.execute(C.Tick())
        assert records[-1]["kind"] == "tick", records

    def export(self, name) -> dict:
        (record,) = self.server.execute(C.Peek(name, None, False, None, 0))
        return {(k, v): d for k, v, d in record["rows"]}

    def close(self):
        assert self.server.execute(C.Drop(self.name)) == [{"kind": "dropped", "name": self.name}]


def check_against_oracle(program, inputs: dict, seed: int, epochs: int = 7, driver=None,
                         functions=None):
    """``functions``: name -> callable for ``@name(...)``, given to the
    oracle (and to the default in-process driver)."""
    driver = driver or EngineDriver(program, functions)
    acc = {n: {} for n in program.inputs}
    pending = []
    for epoch, batch in random_stream(seed, inputs, epochs):
        for t, n, key, d in batch:
            driver.stage(n, t, key, d)
            pending.append((t, n, key, d))
        driver.tick(epoch)
        for t, n, key, d in [p for p in pending if p[0] == epoch]:
            a = acc[n]
            a[(key, ())] = a.get((key, ()), 0) + d
            if not a[(key, ())]:
                del a[(key, ())]
        want = evaluate(program, acc, functions=functions)
        for name, _ in program.exports:
            assert driver.export(name) == want[name], (seed, epoch, name)
    return driver


