"""What a network client may touch (SPEC E2), and how the server writes files.

A network client of ``ddir serve`` is not the user who started the server:
it may name files only inside the server's *data directory* (``--data-dir``,
default the directory ``serve`` started in), it may not make the server
import Python code, and no error it gets quotes a file's contents. Local use
(scripts, the prompt, the Python API) is the user's own process and is not
confined (SPEC E2, last bullet): there ``paths`` is ``None`` everywhere.

:class:`DataDir` is the one policy. ``commands.parse_command(line,
paths=policy)`` asks it for every path of a command *before* any file is
opened (``install``/``reinstall`` read their file while parsing), and the
server uses what it returns (the resolved path) rather than what the client
wrote (kept for messages and records):

* a path, relative (to the data directory) or absolute, is taken
  lexically first: one with a ``..`` component is refused (even one that
  would come back: nothing outside can be probed), an absolute one must
  name the data directory's path; then it is resolved with every symlink
  (``os.path.realpath``), and the result must lie strictly inside the data
  directory's real path;
* a file to read must then be a regular file (not a directory, FIFO,
  device); a file to write (``save``) or a checkpoint directory must have
  an existing directory inside the data directory as its parent;
* anything else is :class:`ddir.errors.AccessRefused` with one message per
  verb that says nothing about what is there: the same for a missing file,
  a file outside, a symlink pointing out, a directory, a FIFO.

Errors that would quote a file read for a network client are reduced:
``load`` names the file, the column (by the name the client gave in
``key=``/``val=``/``diff=``, else by its position: a CSV header is the
file's first line) and the row, never a cell's text or the reader's
message; a server-side program file that does not parse, lower or validate
gives ``file:line:col`` and no text (a client that wants the reason sends
the text as ``"source"``).

``reinstall ... functions=<module>`` from the network is refused unless it
is exactly the text the operator gave ``--functions``; ``@f`` only ever
resolves to the functions the server was given (server/functions.py).

Writing files (every user): :func:`file_mode` is the mode a new file gets
(``0o666 & ~umask``, the umask read from ``/proc/self/status`` without
changing it) or, when a file is replaced, the mode it had (never wider);
:func:`fsync_file` / :func:`fsync_dir` make a rename durable. Nothing in
ddir changes the process-wide umask (it is shared by every thread).

What is not covered: the checks are made when the command is parsed, then
the server opens the resolved path. A local user who can write inside the
data directory could swap a component for a symlink in between; the data
directory is the operator's, and only people trusted with the server's
files should write there.
"""

from __future__ import annotations

import os
import re

from ..errors import AccessRefused

__all__ = ["DataDir", "AccessRefused", "file_mode", "process_umask", "fsync_file", "fsync_dir"]

NOT_READABLE = "not a readable file inside the server's data directory"
NOT_WRITABLE = "not a file name inside the server's data directory"
NOT_A_DIR_NAME = "not a directory name inside the server's data directory"
PROGRAM_HIDDEN = ("the program has an error there (a server file's text is not shown to a "
                  "network client; send it as \"source\" to see the reason)")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class DataDir:
    """The paths and modules a network client may name (SPEC E2).

    ``root``: the data directory (must exist). ``functions``: the text the
    operator gave ``--functions`` (None: none), the only module
    ``reinstall ... functions=`` may name from the network."""

    def __init__(self, root: str, functions: str | None = None):
        self.root = os.path.abspath(root)
        self.real = os.path.realpath(root)
        if not os.path.isdir(self.real):
            raise AccessRefused(f'--data-dir "{root}": not a directory')
        self.functions = functions

    def __repr__(self) -> str:
        return f"<DataDir {self.real!r}>"

    # ------------------------------------------------------------ paths

    def _inside(self, path: str) -> str | None:
        """The real path of ``path`` when it stays strictly inside, else None."""
        if not isinstance(path, str) or not path or "\0" in path or ".." in path.split(os.sep):
            return None
        joined = os.path.join(self.root, path)  # an absolute path stays itself
        lexical = os.path.normpath(joined)
        if not (_within(lexical, self.root) or _within(lexical, self.real)):
            return None  # an absolute path elsewhere
        try:
            real = os.path.realpath(joined)
        except (OSError, ValueError):
            return None
        if real == self.real or not _within(real, self.real):
            return None
        return real

    def read(self, path: str, head: str) -> str:
        """The resolved path of a regular file to read; ``head`` starts the
        message (``load "x.csv"``)."""
        real = self._inside(path)
        if real is None or not os.path.isfile(real):
            raise AccessRefused(f"{head}: {NOT_READABLE}")
        return real

    def write(self, path: str, head: str) -> str:
        """The resolved path of a file to create or replace (``save``)."""
        real = self._inside(path)
        if real is None or not os.path.isdir(os.path.dirname(real)) or os.path.isdir(real):
            raise AccessRefused(f"{head}: {NOT_WRITABLE}")
        return real

    def directory(self, path: str, head: str) -> str:
        """The resolved path of a directory to create or replace (``checkpoint``;
        whether an existing one may be replaced is the checkpoint's rule)."""
        real = self._inside(path.rstrip("/") or path)
        if real is None or not os.path.isdir(os.path.dirname(real)) or (
                os.path.exists(real) and not os.path.isdir(real)):
            raise AccessRefused(f"{head}: {NOT_A_DIR_NAME}")
        return real

    # ------------------------------------------------------------ code

    def functions_module(self, module: str | None) -> str | None:
        """``reinstall ... functions=<module>`` from the network: only the
        operator's ``--functions`` text, exactly."""
        if module is None or (self.functions is not None and module == self.functions):
            return module
        raise AccessRefused(f"functions={module}: a network client cannot make the server import "
                            "Python code (only the server's own --functions module may be named)")

    # ------------------------------------------------------------ messages

    @staticmethod
    def hide_program_error(message: str, file: str) -> str:
        """A located error about a server-side program file, without its
        text: ``file:line:col: <PROGRAM_HIDDEN>``; any other message as is."""
        at = re.match(re.escape(file) + r":(\d+):(\d+): ", message)
        if at is None:
            return message
        return f"{file}:{at.group(1)}:{at.group(2)}: {PROGRAM_HIDDEN}"


# ================================================================ writing files


def process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it
    for every thread: a race for programs that run ddir in a thread). From
    ``/proc/self/status`` (Linux >= 4.7); elsewhere 0o077, which makes new
    files 0600: never wider than the user asked."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    return 0o077


def file_mode(replacing: str | None) -> int:
    """The permission bits for a file about to be written in place of
    ``replacing``: the mode that file has (a save never widens it), or, for a
    new file, ``0o666 & ~umask``."""
    if replacing is not None:
        try:
            return os.stat(replacing).st_mode & 0o777
        except OSError:
            pass
    return 0o666 & ~process_umask()


def adopt_owner(path: str, replacing: str | None, mode: int) -> int:
    """Give ``path`` the owner and group of the file it will replace where
    the process may (root, or a group it is in); where the group cannot be
    kept its bits are dropped, so a file that is replaced is never readable
    by more people than before. The mode to set."""
    if replacing is None:
        return mode
    try:
        old, new = os.stat(replacing), os.stat(path)
    except OSError:
        return mode
    if (old.st_uid, old.st_gid) == (new.st_uid, new.st_gid):
        return mode
    try:
        os.chown(path, old.st_uid if os.geteuid() == 0 else -1, old.st_gid)
        return mode
    except OSError:
        return mode & ~0o070 if os.stat(path).st_gid != old.st_gid else mode


def fsync_file(path: str) -> None:
    """Flush a written file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (after a rename in it); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
