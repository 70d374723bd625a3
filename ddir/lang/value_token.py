"""Values written on a command line (SPEC Part B): one whitespace-free token.

Tried in order: ``_`` (unit); a comma-separated integer row (``1,2`` is the
tuple ``(1, 2)``, ``7`` is ``(7)``); the printed form (``(1,2)``, ``[1,2]``,
``#2(1,2)``, ``#1:5``); a closed scalar term (``tuple(1,2)``, ``3*4``).
"""

from __future__ import annotations

import re

from .errors import ProgramError
from .parser import parse_term
from ..terms.ast import Row, walk
from ..terms.interp import evaluate
from ..terms.runtime import TermError
from ..values import INT_MAX, INT_MIN, ValueSyntaxError, parse_printed

_INT_ROW = re.compile(r"-?[0-9]+(,-?[0-9]+)*")


class ValueTokenError(ValueError):
    """A malformed value token; the message says what is wrong."""


def parse_value_token(text: str):
    if text in ("_", ""):
        return ()
    if _INT_ROW.fullmatch(text):
        row = tuple(int(x) for x in text.split(","))
        for n in row:
            if not INT_MIN <= n <= INT_MAX:
                raise ValueTokenError(f"bad value `{text}`: {n} does not fit in 64 bits")
        return row
    if text[0] in "([#":
        try:
            return parse_printed(text)
        except ValueSyntaxError as printed_error:
            if text[0] == "#":
                raise ValueTokenError(f"bad value `{text}`: {printed_error}") from None
    try:
        term = parse_term(text)
    except ProgramError as e:
        raise ValueTokenError(f"bad value `{text}`: {e.message} (at column {e.col})") from None
    if any(isinstance(t, Row) for t in walk(term)):
        raise ValueTokenError(f"bad value `{text}`: a value cannot refer to an input row ($n)")
    try:
        return evaluate(term, ())
    except TermError as e:
        raise ValueTokenError(f"bad value `{text}`: {e}") from None
