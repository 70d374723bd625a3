"""ddir: a live, multi-worker differential-dataflow server for DDIR programs.

``ddir.Server`` is the Python API (SPEC C6); bad input raises a
``ddir.DdirError`` subclass (:mod:`ddir.errors`); values are ``int``,
``ddir.Float`` (a Python ``float`` is accepted as one), ``str``, ``tuple``,
``ddir.List`` and ``ddir.Variant``.
"""

__version__ = "0.1.0"

from .errors import (CheckpointError, CommandError, CursorError, DataFileError,  # noqa: E402
                     DdirError, DropRefused, InstallFailed,
                     InvalidProgram, InvalidSource, NameTaken, ServerError, ServerStopped,
                     UnknownName, UpdateRefused)
from .values import Float, List, Variant  # noqa: E402

__all__ = [
    "Server", "Result", "TickResult", "Event", "Float", "List", "Variant", "DdirError",
    "CommandError", "InvalidProgram", "CheckpointError", "ServerError", "UnknownName", "NameTaken",
    "InvalidSource", "DropRefused", "UpdateRefused", "InstallFailed", "CursorError",
    "DataFileError", "ServerStopped", "Subscription", "Change", "Page", "__version__",
]

_API = ("Server", "Result", "TickResult", "Event", "Subscription", "Change", "Page")


def __getattr__(name):  # the server loads on first use, so `ddir check` starts fast
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'ddir' has no attribute {name!r}")
