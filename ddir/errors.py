"""The errors of bad input (SPEC Part B "Errors", C6).

Every refused command raises one of these; ``str(error)`` is exactly the
message the command line prints after ``error: `` (the CLI adds ``file:line:``
in scripts), and the server is as it was before the command. One subclass per
kind, so a Python caller can catch what it expects::

    DdirError
    +-- CommandError         a malformed command: unknown command, arity, option, number, value
    |   +-- InvalidProgram   install: unreadable file, parse / lowering / validation error
    |   +-- CheckpointError  restore: a missing, malformed or damaged checkpoint
    +-- ServerError          refused by the server's state
    |   +-- UnknownName      no such program, trace, input or imported trace
    |   +-- NameTaken        a program / trace / generated-source name already in use
    |   +-- InvalidSource    a malformed generated-source name (`iota:x`)
    |   +-- DropRefused      drop while a trace is imported
    |   +-- UpdateRefused    feed/load: time in the past, diff=0, a failed or generated program
    |   +-- InstallFailed    install: the catch-up hit the iteration bound
    |   +-- CursorError      peek cursor=: a forged, expired or dropped cursor
    |   +-- AccessRefused    serve: a network client named a path outside the data
    |                        directory, or a Python module (SPEC E2)
    +-- DataFileError        load / save: a missing, unreadable or malformed file, a bad column
    +-- ServerStopped        a worker died or the server was closed: nothing more can run
"""

from __future__ import annotations


class DdirError(Exception):
    """Bad input: one message (``str(e)``, also ``e.message``); nothing changed."""

    @property
    def message(self) -> str:
        return str(self)


class CommandError(DdirError):
    """A line (or API call) that is not a valid command; nothing is executed."""


class InvalidProgram(CommandError):
    """A program that cannot be read, parsed, lowered or validated."""


class CheckpointError(CommandError):
    """``--restore DIR`` / ``Server.restore``: no checkpoint there, or one whose
    manifest or data files are malformed or damaged; no server is started."""


class ServerError(DdirError):
    """A well-formed command the server's state refuses."""


class UnknownName(ServerError):
    pass


class NameTaken(ServerError):
    pass


class InvalidSource(ServerError):
    pass


class DropRefused(ServerError):
    pass


class UpdateRefused(ServerError):
    pass


class InstallFailed(ServerError):
    pass


class CursorError(ServerError):
    """``peek cursor=``: a token this server did not issue, or one whose lease
    expired or whose trace was dropped."""


class AccessRefused(ServerError):
    """``ddir serve``: a path a network client named is not a file (or a
    directory name) inside the server's data directory, or it named a Python
    module the operator did not give (SPEC E2). The message never says
    whether a file exists outside."""


class DataFileError(DdirError):
    """load/save: the file, its format or one of its columns."""


class ServerStopped(DdirError):
    """The server cannot go on (a worker died) or was closed."""
