"""Turn Lark's parse failures into messages in words.

Lark reports the terminals it expected by internal names (``SEMICOLON``,
``__ANON_3``); users should read "expected `;` after the let binding `x`,
found `)`". We name each terminal by its literal text where it has one, and
use the parser's value stack to say which statement was being read.
"""

from __future__ import annotations

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

_NAMED = {
    "NAME": "a name",
    "INT": "an integer",
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

_STATEMENT_KEYWORDS = {"let": "let binding", "var": "var binding", "export": "export", "con": "con declaration"}


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


def _statement_context(e: UnexpectedToken) -> str | None:
    """'the let binding `x`' for the statement being parsed, if any."""
    try:
        stack = e.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None
    for i in range(len(stack) - 1, -1, -1):
        item = stack[i]
        if isinstance(item, Token) and str(item) in _STATEMENT_KEYWORDS and item.type != "NAME":
            what = _STATEMENT_KEYWORDS[str(item)]
            if i + 1 < len(stack) and isinstance(stack[i + 1], Token):
                return f"the {what} `{str(stack[i + 1]).strip(chr(34))}`"
            return f"the {what}"
    return None


def describe_unexpected(e, parser: Lark, source: str):
    """``(message, line, col)`` for a Lark ``UnexpectedInput``."""
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else "?"
        hint = ""
        if ch == "#":
            hint = " (`#` is not a comment in programs: use `--`)"
        return f"unexpected character `{ch}`{hint}", e.line, e.column
    if isinstance(e, UnexpectedEOF):
        expected = sorted({_terminal_text(t, parser) for t in e.expected})
        lines = source.splitlines() or [""]
        return (f"unexpected end of file, expected {_join(expected)}",
                len(lines), len(lines[-1]) + 1)
    if isinstance(e, UnexpectedToken):
        token = e.token
        expected_names = _acceptable(e)
        line, col = _position(token, source)
        if token.type == "CMP_OP" and "CMP_OP" not in expected_names and "ADD_OP" in expected_names:
            return ("comparisons do not chain: write `a < b && b < c` or add parentheses",
                    line, col)
        expected = sorted({_terminal_text(t, parser) for t in expected_names})
        context = _statement_context(e)
        if "SEMICOLON" in expected_names and context:
            others = [x for x in expected if x != "`;`"]
            more = f" (or {_join(others)} to continue it)" if others and len(others) <= 4 else ""
            return f"expected `;` after {context}{more}, found {_found(token)}", line, col
        where = f" in {context}" if context else ""
        if len(expected) > 8:
            return f"unexpected {_found(token)}{where}", line, col
        return f"expected {_join(expected)}{where}, found {_found(token)}", line, col
    return str(e).splitlines()[0], getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1


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
