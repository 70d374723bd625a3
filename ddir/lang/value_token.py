"""Values written on a command line (SPEC Part B, D1): one word of the line.

A command line is split into words at blanks outside brackets and string
literals (:func:`split_words`), so a value may hold spaces inside ``(...)``,
``[...]`` and ``"..."``: everything ``peek`` prints feeds back as printed
(``(1, "New York")``).

Tried in order: ``_`` (unit); a comma-separated row of Ints, Floats and
Strings (``1,2`` is the tuple ``(1, 2)``, ``7`` is ``(7)``, ``2.5`` is
``(2.5)``, ``1,"a b",2.5`` is ``(1, "a b", 2.5)``); the printed form
(``(1, 2)``, ``[1,2]``, ``#2(1,2)``, ``#1:5``); a closed scalar term
(``tuple(1,2)``, ``3*4``).
"""

from __future__ import annotations

import re

from .errors import ProgramError
from .parser import parse_term
from ..terms.interp import evaluate
from ..terms.runtime import TermError, TooDeep
from ..values import (INSIDE, INT_MAX, INT_MIN, OUTSIDE, Float, ValueSyntaxError,
                      ValueTooDeepError, parse_printed, string_mask, value_depth)

_INT_ROW = re.compile(r"-?[0-9]+(,-?[0-9]+)*")
_INT = re.compile(r"-?[0-9]+")

# How deeply a command-line value may nest (each Tuple, List and Variant is a
# level, and so is each bracket of a term). Deeper values are of no use, and
# refusing them keeps everything that handles a value later (printing,
# ordering, msgpack to the workers, which refuses 511 levels) far from any
# recursion limit. The term parser and interpreter recurse about five Python
# frames per level, so the limit also bounds them.
MAX_VALUE_DEPTH = 100


class ValueTokenError(ValueError):
    """A malformed value token; the message says what is wrong."""


def _as_value_message(message: str) -> str:
    """A term parser's message, said of a value (no program around it)."""
    message = message.replace("end of file", "end of value")
    message = message.replace(" (`#` is not a comment in programs: use `--`)", "")
    found = re.fullmatch(r"unknown name `([^`]*)` \(not a case binder in scope\)", message)
    if found:
        return f"`{found.group(1)}` is not a value (a name means something only in a program)"
    return message


def split_words(line: str) -> list:
    """The words of a command line: split at blanks, except inside
    brackets (``()``, ``[]``, ``{}``) and string literals (``"..."`` with
    backslash escapes). An unbalanced closer is kept in its word; an
    unterminated string runs to the end of the line (the value parser then
    says what is wrong)."""
    if '"' not in line and "(" not in line and "[" not in line and "{" not in line:
        return line.split()
    words: list = []
    word: list = []
    depth = 0
    for ch, where in zip(line, string_mask(line)):
        if where != OUTSIDE:
            word.append(ch)
            continue
        if ch.isspace() and depth == 0:
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(ch)
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
    if word:
        words.append("".join(word))
    return words


def _outside_strings(text: str) -> str:
    """``text`` with the insides of its string literals left out (``"a(b"``
    becomes ``""``), for the checks that look at a term's characters."""
    if '"' not in text:
        return text
    return "".join(ch for ch, where in zip(text, string_mask(text)) if where != INSIDE)


def _scalar_row(text: str):
    """``1,"a b",2.5`` as ``(1, "a b", 2.5)``: a row of Ints, Floats and
    Strings; None when ``text`` is not one (its ValueSyntaxError too, for
    the caller to use if nothing else reads it)."""
    try:
        row = parse_printed("(" + text + ")")
    except ValueTooDeepError:
        return None, None
    except ValueSyntaxError as e:
        return None, e
    if type(row) is tuple and all(type(x) in _SCALARS for x in row):
        return row, None
    return None, None


_SCALARS = {int, Float, str}


def parse_value_token(text: str):
    if text in ("_", ""):
        return ()
    if _INT_ROW.fullmatch(text):
        row = tuple(int(x) for x in text.split(","))
        for n in row:
            if not INT_MIN <= n <= INT_MAX:
                raise _bad(text, f"{n} does not fit in 64 bits")
        return row
    code = _outside_strings(text)
    if _bracket_depth(code) > MAX_VALUE_DEPTH:
        raise _too_deep(text)
    row_error = None
    if text[0] in _ROW_START:
        row, row_error = _scalar_row(text)
        if row is not None:
            return row
        if row_error is not None:
            row_error.pos -= 1  # the `(` that _scalar_row put in front
    printed_error = None
    if text[0] in "([#":
        try:
            return parse_printed(text, MAX_VALUE_DEPTH)
        except ValueTooDeepError:
            raise _too_deep(text) from None
        except ValueSyntaxError as e:
            printed_error = e
        if text[0] != "(":  # no term starts with `[` or `#`: only the printed form can be meant
            raise _bad(text, str(printed_error), printed_error.pos + 1)
    if "," in text and re.fullmatch(r"[-0-9,]+", text):
        raise _bad(text, *_row_problem(text))
    if "--" in code:  # in a term the rest would be a comment: `(1,2)--x` read as (1,2)
        raise _bad(text, "`--` starts a comment in a term, so what follows would be lost "
                         "(minus a negative number is `-(-1)`)", _position(text, "--") + 1)
    try:
        term = parse_term(text, value=True)
    except ProgramError as e:
        if printed_error is not None and printed_error.pos + 1 > e.col:
            # `(1,2]`: the printed form got further, so its error is the one that helps
            raise _bad(text, str(printed_error), printed_error.pos + 1) from None
        if row_error is not None and row_error.in_string and row_error.pos + 1 >= e.col:
            # `1,"abc`: a String of a bare row is what is wrong
            raise _bad(text, str(row_error), row_error.pos + 1) from None
        if text[e.col - 1:e.col] == "," and _bracket_depth(_outside_strings(text[:e.col])) == 0:
            raise _bad(text, "only Ints, Floats and Strings can be written as a bare row "
                             "`1,2.5,\"x\"`; write other rows as `tuple(1,x)` or `(1,(2))`",
                       e.col) from None
        raise _bad(text, _as_value_message(e.message), e.col) from None
    except RecursionError:  # a long operator chain; the term parser recurses on it
        raise _bad(text, "too long or too deeply nested to read") from None
    if "$" in code:  # only a `$n` can hold a `$` in a term that parsed (and no walk: no recursion)
        raise _bad(text, "a value cannot refer to an input row ($n)")
    try:
        value = evaluate(term, ())
    except TooDeep:  # a fold wrapping its accumulator: the command line's own limit
        raise _too_deep(text) from None
    except TermError as e:
        raise _bad(text, str(e)) from None
    except RecursionError:
        raise _bad(text, "too long or too deeply nested to evaluate") from None
    if value_depth(value) > MAX_VALUE_DEPTH:  # e.g. a fold that wraps its accumulator
        raise _too_deep(text)
    return value


def _position(text: str, needle: str) -> int:
    """Where ``needle`` first occurs in ``text`` outside string literals."""
    for i, where in enumerate(string_mask(text)):
        if where == OUTSIDE and text.startswith(needle, i):
            return i
    return -1


# The first characters of a bare row of scalars: a number, a named Float
# (`inf`, `nan`), a String.
_ROW_START = frozenset('-0123456789"in')


def _bad(text: str, problem: str, col: int | None = None) -> ValueTokenError:
    at = f" (at column {col})" if col is not None else ""
    return ValueTokenError(f"bad value `{_clip(text)}`: {problem}{at}")


def _too_deep(text: str) -> ValueTokenError:
    return _bad(text, f"nested more than {MAX_VALUE_DEPTH} levels deep (the limit for a value "
                      f"on the command line)")


def _clip(text: str, width: int = 40) -> str:
    """``text`` for a message, shortened in the middle if it is long (a
    1,000-level value should not fill the screen)."""
    return text if len(text) <= width else f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


def _bracket_depth(text: str) -> int:
    """The deepest bracket nesting in ``text`` (unbalanced closers ignored)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}" and depth:
            depth -= 1
    return deepest


def _row_problem(text: str) -> tuple:
    """What is wrong with `1,,2`-like text: (problem, column)."""
    col = 1
    fields = text.split(",")
    for i, field in enumerate(fields):
        if not field:
            last = i == len(fields) - 1
            where = "ends with `,`" if last else "has an empty field"
            return (f"the row {where}; write integers separated by single commas, like `1,2`",
                    col - 1 if last else col)
        if not _INT.fullmatch(field):
            return f"`{field}` is not an integer; a bare row is integers separated by commas", col
        col += len(field) + 1
    raise AssertionError(text)  # the caller only asks about text that is not a valid row
