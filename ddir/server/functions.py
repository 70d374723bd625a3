"""Python functions in terms (SPEC C5): ``--functions MODULE`` and
``ddir.Server(functions=...)``.

A module (an imported module object, a dotted module name, or the path of a
``.py`` file) is imported once, in the intake, before any worker process is
forked, so every worker inherits the same callables. Its public callables
(``__all__`` if it defines one, else every name not starting with ``_``)
are callable in terms as ``@name(...)``; classes are not (``from ddir import
List`` would otherwise offer ``@List``). The intake checks at install (and
``ddir check --functions``) that every ``@name`` a program calls exists: an
unknown one is a located error.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types

from ..errors import CommandError
from ..lang.errors import ProgramError
from ..terms import ast as T

__all__ = ["Functions", "load_functions", "calls_of", "check_calls"]


class Functions:
    """The functions a server was given: ``names`` -> callable, and a label
    (the module's name) for messages."""

    def __init__(self, table: dict, label: str = ""):
        self.table = dict(sorted(table.items()))
        self.label = label

    def merged(self, other: "Functions | None") -> "Functions":
        """These and ``other``'s (which win a name clash)."""
        if other is None:
            return self
        labels = [label for label in (self.label, other.label) if label]
        return Functions({**self.table, **other.table}, " + ".join(dict.fromkeys(labels)))

    def __repr__(self) -> str:
        return f"<Functions {self.label!r}: {', '.join(self.table)}>"


def load_functions(spec, fresh: bool = False) -> Functions:
    """``spec``: a module object, a module name (importable from the current
    directory too) or a path to a ``.py`` file. Import failures are one
    :class:`CommandError` naming the module and the reason. ``fresh``: read
    the module again even if it was imported before (``reinstall
    functions=``: the function may have been added since)."""
    if isinstance(spec, Functions):
        return spec
    if isinstance(spec, types.ModuleType):
        module = spec
    elif isinstance(spec, (str, os.PathLike)):
        module = _import(os.fspath(spec), fresh)
    else:
        raise CommandError(f"functions needs a module, a module name or a .py path, "
                           f"got {type(spec).__name__}")
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    table = {}
    for name in names:
        obj = getattr(module, name, None)
        if callable(obj) and not isinstance(obj, type) and name.isidentifier():
            table[name] = obj
    return Functions(table, module.__name__)


def _import(text: str, fresh: bool = False):
    try:
        if text.endswith(".py") or os.sep in text or os.path.isfile(text):
            path = os.path.abspath(text)
            if not os.path.isfile(path):
                raise CommandError(f'cannot import functions from "{text}": no such file')
            name = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise CommandError(f'cannot import functions from "{text}": not a Python file')
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(name, module)
            spec.loader.exec_module(module)
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # `ddir --functions mymod` run where mymod.py is
        if fresh and text in sys.modules:
            importlib.invalidate_caches()
            return importlib.reload(sys.modules[text])
        return importlib.import_module(text)
    except CommandError:
        raise
    except BaseException as e:  # ImportError, SyntaxError, whatever the module raises, sys.exit()
        if isinstance(e, KeyboardInterrupt):
            raise
        raise CommandError(f'cannot import functions from "{text}": {type(e).__name__}: {e}') \
            from None


def calls_of(program) -> dict:
    """``name -> (line, col)`` of the first ``@name(...)`` call in a lowered
    program (or anything holding terms), in source order. Iterative."""
    found: dict = {}
    stack = [program]
    while stack:
        x = stack.pop()
        if isinstance(x, T.PyCall):
            loc = (x.line, x.col)
            if x.name not in found or loc < found[x.name]:
                found[x.name] = loc
            stack.extend(x.args)
        elif isinstance(x, tuple):
            stack.extend(x)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            stack.extend(getattr(x, f.name) for f in dataclasses.fields(x))
    return dict(sorted(found.items(), key=lambda item: (item[1], item[0])))


def missing_names(names) -> str:
    """``@a``, ``@a and @b``, ``@a, @b and @c``: sorted, for messages."""
    shown = [f"@{n}" for n in sorted(names)]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def check_calls(program, functions: Functions | None, file: str, source: str | None = None) -> tuple:
    """The names of the functions ``program`` calls, sorted; a
    :class:`ProgramError` at the first call of an unknown one."""
    calls = calls_of(program)
    table = functions.table if functions is not None else {}
    for name, (line, col) in calls.items():
        if name not in table:
            if table:
                known = ", ".join(f"@{n}" for n in table)
                hint = f"the functions given ({functions.label}) are {known}"
            elif functions is not None:
                hint = f"the module given ({functions.label}) has no public functions"
            else:
                hint = "no functions were given (start ddir with --functions MODULE)"
            raise ProgramError(f"unknown function `@{name}`: {hint}", file, line, col, source)
    return tuple(sorted(calls))
