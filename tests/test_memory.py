"""The engine runs with fewer young collections (engine/memory.running) and
puts Python's collector settings back afterwards, also when a run fails."""

import gc

import pytest

from ddir.engine.dataflow import Dataflow
from ddir.engine.memory import RUNNING_THRESHOLD, running
from ddir.engine.scope import NonConvergence
from ddir.ir.lower import lower
from ddir.lang.parser import parse_program


def test_running_raises_the_young_threshold_and_restores_it():
    before = gc.get_threshold()
    with running():
        assert gc.get_threshold() == (max(before[0], RUNNING_THRESHOLD),) + before[1:]
    assert gc.get_threshold() == before
    with pytest.raises(ZeroDivisionError):
        with running():
            1 / 0
    assert gc.get_threshold() == before


def test_a_run_that_does_not_converge_restores_the_collector():
    program = 'let x = input 0;\ns: { var c = x + (c | key($0[0] + 1 ;)); }\nexport "c" = s::c;\n'
    df = Dataflow(lower(parse_program(program, "loop.ddp")), max_rounds=20)
    df.stage(0, (0,), [((1,), (), 1)])
    before = gc.get_threshold()
    seen = []
    real = df.root.run_prefix
    df.root.run_prefix = lambda *a, **k: (seen.append(gc.get_threshold()), real(*a, **k))[1]
    with pytest.raises(NonConvergence):
        df.run(0)
    assert seen and seen[0][0] >= RUNNING_THRESHOLD
    assert gc.get_threshold() == before


def test_overlapping_runs_restore_the_collector_once_the_last_ends():
    """Two in-process servers in two threads: the runs overlap."""
    import threading
    before = gc.get_threshold()
    first_in, second_done = threading.Event(), threading.Event()

    def first():
        with running():
            first_in.set()
            second_done.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with running():  # starts after the first, ends before it
        pass
    assert gc.get_threshold()[0] >= RUNNING_THRESHOLD  # the first is still running
    second_done.set()
    thread.join(10)
    assert gc.get_threshold() == before
