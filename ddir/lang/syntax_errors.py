"""Turn Lark's parse failures into messages in words.

Lark reports the terminals it expected by internal names (``SEMICOLON``,
``__ANON_3``); users should read "expected `;` after the let binding `x`,
found `)`". We name each terminal by its literal text where it has one, and
use the parser's value stack to say which statement was being read.
"""

from __future__ import annotations

import difflib
import re

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

_NAMED = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a float",
    "TEXT": "a string",
    "STRING": 'a string like "name"',
    "ROW": "`$n`",
    "BOUND": "`^k`",
    "CMP_OP": "a comparison",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`",
    "MAP_KW": "`key`",
    "REDUCER": "an operator",
    "REDUCER_KW": "MIN, DISTINCT, COUNT or COLLECT",
    "$END": "end of file",
}

_STATEMENT_KEYWORDS = {"let": "let binding", "var": "var binding", "export": "export",
                       "con": "con declaration", "type": "type declaration"}

# What may follow `|` in a .ddp program (SPEC A5).
_DDP_OPERATORS = ("key", "map", "join", "min", "distinct", "count", "collect", "filter",
                  "flatmap", "enter_at", "negate", "arrange", "lift_iter", "inspect", "value")

_WORD = re.compile(r"[A-Za-z0-9_]")
_STRING_HINT = ('a string literal is a trace name, as in `import "edges"` or '
                '`export "name" = ...`, or a String in a term')


def _terminal_text(name: str, parser: Lark) -> str:
    if name in _NAMED:
        return _NAMED[name]
    try:
        pattern = parser.get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return name.lower()


def _found(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    return f"`{token}`"


def _statement_context(e: UnexpectedToken) -> tuple:
    """``("the let binding `x`", in_brackets)`` for the statement being
    parsed (``None`` if none); ``in_brackets`` when an unclosed bracket of
    that statement is open, so a `;` there would not end the statement."""
    try:
        stack = e.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None, False
    for i in range(len(stack) - 1, -1, -1):
        item = stack[i]
        if isinstance(item, Token) and str(item) in _STATEMENT_KEYWORDS and item.type != "NAME":
            what = _STATEMENT_KEYWORDS[str(item)]
            # brackets of rules not yet reduced are still on the value stack
            tokens = [str(x) for x in stack[i + 1:] if isinstance(x, Token)]
            in_brackets = sum(tokens.count(b) for b in "([{") > sum(tokens.count(b) for b in ")]}")
            if i + 1 < len(stack) and isinstance(stack[i + 1], Token):
                return f"the {what} `{str(stack[i + 1]).strip(chr(34))}`", in_brackets
            return f"the {what}", in_brackets
    return None, False


def describe_unexpected(e, parser: Lark, source: str, hide=()):
    """``(message, line, col)`` for a Lark ``UnexpectedInput``; the terminals
    named in ``hide`` are left out of the expected ones listed."""
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else "?"
        hint = ""
        if ch == "#":
            hint = " (`#` is not a comment in programs: use `--`)"
        return f"unexpected character `{ch}`{hint}", e.line, e.column
    if isinstance(e, UnexpectedEOF):
        expected = sorted({_terminal_text(t, parser) for t in _quiet(set(e.expected)) if t not in hide})
        lines = source.splitlines() or [""]
        return (f"unexpected end of file, expected {_join(expected)}",
                len(lines), len(lines[-1]) + 1)
    if isinstance(e, UnexpectedToken):
        token = e.token
        expected_names = _quiet(_acceptable(e) - set(hide))
        line, col = _position(token, source)
        if token.type == "CMP_OP" and "CMP_OP" not in expected_names and "ADD_OP" in expected_names:
            return ("comparisons do not chain: write `a < b && b < c` or add parentheses",
                    line, col)
        if token.type == "EQUAL" and "CMP_OP" in expected_names:
            return "`=` is not a comparison: write `==`", line, col
        unknown_op = _unknown_operator(token, source, expected_names)
        if unknown_op:
            return unknown_op
        expected = sorted({_terminal_text(t, parser) for t in expected_names})
        if {"INT", "FLOAT"} <= expected_names:  # where a term may start: one word for both
            expected = sorted({*expected, "a number"} - {"an integer", "a float"})
        context, in_brackets = _statement_context(e)
        hint = (_keyword_hint(token, source, parser)
                or (_STRING_HINT if token.type in ("STRING", "TEXT") else None))
        hint = f" ({hint})" if hint else ""
        # "expected `;` after the let binding": only where a `;` would end the
        # statement, not at the `;` of a projection `key(a ; b)`.
        if "SEMICOLON" in expected_names and context and not in_brackets and not hint:
            others = [x for x in expected if x != "`;`"]
            more = f" (or {_join(others)} to continue it)" if others and len(others) <= 4 else ""
            return f"expected `;` after {context}{more}, found {_found(token)}", line, col
        where = f" in {context}" if context else ""
        if not expected or len(expected) > 9:  # nothing, or too much, to list usefully
            return f"unexpected {_found(token)}{where}{hint}", line, col
        return f"expected {_join(expected)}{where}, found {_found(token)}{hint}", line, col
    return str(e).splitlines()[0], getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1


def _quiet(names: set) -> set:
    """Where a name may come, so may `@name(...)` (a Python function, SPEC
    C5): listing `@` too would only make the list longer."""
    if "AT" in names and "NAME" in names:
        names = names - {"AT"}
    return names


def _word_at(source: str, pos: int) -> tuple:
    """``(start, word)``: the identifier-like word around offset ``pos``.
    The contextual lexer splits `joinn` into the keyword `join` and `n`, so
    the word is rebuilt from the source, not taken from the token."""
    start = end = pos
    while start > 0 and _WORD.match(source[start - 1]):
        start -= 1
    while end < len(source) and _WORD.match(source[end]):
        end += 1
    return start, source[start:end]


def _offset(token: Token, source: str) -> int | None:
    pos = getattr(token, "start_pos", None)
    return pos if token.type != "$END" and pos is not None and pos < len(source) else None


def _unknown_operator(token: Token, source: str, expected_names: set):
    """`input 0 | joinn(...)`: name the unknown operator after `|` (and the
    one it most likely means) rather than the letter the parser stopped at."""
    pos = _offset(token, source)
    if pos is None or not _WORD.match(source[pos]):
        return None
    start, word = _word_at(source, pos)
    if word in _DDP_OPERATORS or not source[:start].rstrip().endswith("|"):
        return None
    if not expected_names & {"VBAR", "SEMICOLON", "RPAR", "LPAR", "MAP_KW", "REDUCER"}:
        return None
    close = difflib.get_close_matches(word, _DDP_OPERATORS, n=1)
    hint = f"did you mean `{close[0]}`?" if close else "the operators are " + _join(
        [f"`{op}`" for op in _DDP_OPERATORS])
    line = source.count("\n", 0, start) + 1
    col = start - (source.rfind("\n", 0, start) + 1) + 1
    return f"unknown operator `{word}` after `|` ({hint})", line, col


def _keywords(parser: Lark) -> list:
    """The grammar's keywords: literal words, and the words of alternations
    such as `"key" | "map"`."""
    words = set()
    for t in parser.terminals:
        value = t.pattern.value
        if t.pattern.type == "str":
            if re.fullmatch(r"[A-Za-z_]\w+", value):
                words.add(value)
        elif re.fullmatch(r"\(\?:\w+(\|\w+)*\)", value):
            words.update(re.findall(r"\w+", value))
    return sorted(words)


def _keyword_hint(token: Token, source: str, parser: Lark) -> str | None:
    """`inputt 0`, `exprot "x"`: the word at or just before the error is no
    keyword but nearly one; say which."""
    pos = _offset(token, source)
    if pos is None:
        pos = len(source)
    word = ""
    if pos < len(source) and _WORD.match(source[pos]):
        start, word = _word_at(source, pos)
        pos = start
    if not word or word[0].isdigit():  # no word at the error: the one before it
        before = source[:pos].rstrip()
        if not before or not _WORD.match(before[-1]):
            return None
        _, word = _word_at(source, len(before) - 1)
    keywords = _keywords(parser)
    if len(word) < 3 or word in keywords or word[0].isdigit():
        return None
    close = difflib.get_close_matches(word, keywords, n=1, cutoff=0.8)
    return f"did you mean `{close[0]}`?" if close else None


def _acceptable(e: UnexpectedToken) -> set:
    """The terminals that really could come next.

    LALR states merge lookaheads, so ``e.expected`` can list tokens (a `)`
    outside any parenthesis) that would fail one reduction later; asking the
    interactive parser to try each one is exact, and costs nothing on the
    happy path.
    """
    try:
        return set(e.interactive_parser.accepts())
    except Exception:  # older Lark or a parser without the interactive API
        return set(e.expected)


def _position(token: Token, source: str):
    if token.type == "$END" or token.line is None:
        lines = source.splitlines() or [""]
        return len(lines), len(lines[-1]) + 1
    return token.line, token.column


def _join(items: list) -> str:
    if not items:
        return "something else"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]
