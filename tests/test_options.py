"""The one command-line parser of `ddir`, `ddir serve` and `ddir connect`:
every option takes the same forms and gets the same messages."""

import pytest

from ddir import cli, connect, serve
from ddir.options import UsageError


@pytest.mark.parametrize("parse", [cli.parse_args, serve.parse_args])
@pytest.mark.parametrize("argv", [["-w", "3"], ["-w3"], ["--workers", "3"], ["--workers=3"]])
def test_every_form_of_a_number(parse, argv):
    opts = parse(argv + ["s.txt", "-"])
    assert opts["workers"] == 3 and opts["scripts"] == ["s.txt", "-"]


@pytest.mark.parametrize("parse", [cli.parse_args, serve.parse_args])
@pytest.mark.parametrize("argv, message", [
    (["-w"], "-w needs a number"),
    (["-w", "0"], "-w needs a number from 1 to 64, got 0"),
    (["-wx"], "-w needs a number from 1 to 64, got `x`"),
    (["--max-rounds=abc"], "--max-rounds needs a number from 1 to 1000000000, got `abc`"),
    (["--functions"], "--functions needs a module name or a .py file"),
    (["--functions="], "--functions needs a module name or a .py file"),
    (["--json=1"], "unknown option --json=1"),
    (["--nope"], "unknown option --nope"),
    (["--mpi", "-w", "2"], "--mpi takes its workers from the MPI job"),
])
def test_the_same_messages(parse, argv, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse(argv)


def test_each_command_has_its_own_options():
    opts = cli.parse_args(["--restore=ck", "--strict", "--json", "a.txt"])
    assert (opts["restore"], opts["strict"], opts["json"], opts["workers"]) == ("ck", True, True, 1)
    with pytest.raises(UsageError, match="unknown option --port"):
        cli.parse_args(["--port", "1"])
    opts = serve.parse_args(["--port=0", "--host", "::1", "--subscriber-queue", "5", "--token-file=t"])
    assert (opts["port"], opts["host"], opts["subscriber_queue"], opts["token_file"]) == (0, "::1", 5, "t")
    with pytest.raises(UsageError, match="--port needs a number from 0 to 65535, got 65536"):
        serve.parse_args(["--port", "65536"])
    with pytest.raises(UsageError, match="unknown option --strict"):
        serve.parse_args(["--strict"])
    opts = connect.parse_args(["--token-file", "t", "ws://h:1", "s.txt"])
    assert (opts["token_file"], opts["url"], opts["scripts"]) == ("t", "ws://h:1", ["s.txt"])
    # no address: serve's default (issue 26, item 11); a first positional
    # without "://" is a script
    assert connect.parse_args(["--json"])["url"] == "ws://127.0.0.1:7468"
    opts = connect.parse_args(["s.txt"])
    assert (opts["url"], opts["scripts"]) == ("ws://127.0.0.1:7468", ["s.txt"])
    with pytest.raises(UsageError, match="must start with ws:// or wss://"):
        connect.parse_args(["http://h"])
    with pytest.raises(UsageError, match="unknown option -w"):
        connect.parse_args(["-w", "2", "ws://h"])
