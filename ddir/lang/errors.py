"""Located errors for programs: ``file:line:col: message``, optionally with
the offending source line and a caret under the column."""

from __future__ import annotations


class DdirError(Exception):
    """Base of every user-facing error ddir reports (never a traceback)."""


class ProgramError(DdirError):
    """An error in a program file at ``line``/``col`` (1-based)."""

    def __init__(self, message: str, file: str, line: int, col: int, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.source = source

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def render(self) -> str:
        """The one-line form plus the source line and a caret, for ``ddir check``."""
        head = str(self)
        if self.source is None:
            return head
        lines = self.source.splitlines()
        if not 1 <= self.line <= len(lines):
            return head
        text = lines[self.line - 1].replace("\t", " ")
        gutter = f"{self.line:>4} | "
        caret = " " * (len(gutter) - 2) + "| " + " " * max(self.col - 1, 0) + "^"
        return f"{head}\n{gutter}{text}\n{caret}"
