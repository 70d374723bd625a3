"""The words of a command line (SPEC Part B), as far as programs care.

A command line is split at blanks; a word whose part before its first `=`
is an identifier is an option (`limit=5`), any other word is positional.
An export's name is what `peek`, `save` and `subscribe` are given, so it
must be one positional word: the program parser checks that with
:func:`name_word_problem`, and the command parser reads options with
:func:`is_option`, so the two cannot disagree.
"""

from __future__ import annotations


def is_option(word: str) -> bool:
    key, eq, _ = word.partition("=")
    return bool(eq) and key.isidentifier()


def name_word_problem(name: str) -> str | None:
    """Why ``name`` cannot be given as one word of a command line, or None."""
    if not name:
        return "it is empty"
    if any(c.isspace() for c in name):
        return "it holds a blank"
    if not name.isprintable():
        return "it holds a control character"
    if is_option(name):
        return f"a command would read it as the option `{name.partition('=')[0]}=`"
    return None
