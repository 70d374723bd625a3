"""Ctrl-C while a command runs is held until it finishes (server/interrupts.py):
the API raises it afterwards, the CLI drops it, a nested command leaves it
to the outer guard, and between commands it interrupts at once."""

import os
import signal

import pytest

from ddir.server.interrupts import InterruptGuard, defer_interrupts


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread before kill returns


def test_held_until_the_command_returns():
    done = []

    def command():
        ctrl_c()
        done.append("after the Ctrl-C")  # not cut short
        return 42

    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:  # a job started in the background inherits SIGINT ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # give the test a Ctrl-C
        before = signal.default_int_handler
    try:
        assert defer_interrupts(command) == (42, True)
        assert done == ["after the Ctrl-C"]
        # what the guard promises: what was there before is back (issue 26, item
        # 16: this asserted default_int_handler, which failed under `nohup ... &`)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_handler_that_was_there_is_restored():
    """Whatever the handler was (a program's own, or SIG_IGN), it is back."""
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGINT, mine)
    try:
        assert defer_interrupts(lambda: 7) == (7, False)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_api_raises_it_afterwards(tmp_path):
    import ddir
    with ddir.Server() as server:
        server.install("e", source='export "e" = input 0;\n', path="e.ddp")
        real = server.core.tick
        server.core.tick = lambda *a, **k: (ctrl_c(), real(*a, **k))[1]
        with pytest.raises(KeyboardInterrupt):
            server.tick()
        assert server.epoch == 1  # the tick happened, whole


def test_a_nested_command_leaves_it_to_the_outer_guard(capsys):
    with InterruptGuard("held\n") as guard:
        def outer():
            inner = defer_interrupts(ctrl_c)  # e.g. the API's feed_many under a script
            assert inner == (None, False)
            ctrl_c()  # still inside the outer command: held too, said once
            return "finished"
        assert guard.running(outer) == "finished"
        assert guard.held
        with pytest.raises(KeyboardInterrupt):  # between commands: at once
            ctrl_c()
    assert capsys.readouterr().err == "held\n"


def test_a_call_from_another_thread_leaves_the_main_guard_alone():
    """Only the main thread gets signals: another thread's command must not
    mark the main thread's command finished (a Ctrl-C would then cut it)."""
    import threading
    with InterruptGuard() as guard:
        def main_command():
            other = threading.Thread(target=lambda: defer_interrupts(lambda: None))
            other.start()
            other.join(10)
            assert guard.busy  # still inside the main thread's command
            ctrl_c()           # so this is held, not raised
            return "finished"
        assert guard.running(main_command) == "finished" and guard.held
