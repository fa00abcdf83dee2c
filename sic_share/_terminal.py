"""Text from a hub or a file, made safe to print: no Rich markup, no control characters.

A hub is untrusted storage (docs/trust.md): anyone who can write it chooses the
model ids, slide ids and file names that ``ls``, ``info`` and ``query`` show. Printed
as they are, ``[/]`` is Rich markup (a MarkupError for every reader of the hub) and
``\\x1b[2J``, ``\\r`` or a bidi override rewrite what the terminal shows, piped or not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from rich.markup import escape
from rich.table import Table

__all__ = ["escape_text", "escaped_table", "visible_controls"]

# Unicode categories that change how a terminal shows text instead of showing a glyph:
# Cc (C0 and C1 controls, DEL: ESC, CR, BEL, CSI ...), Cf (format: bidi overrides and
# isolates, zero-width characters), Zl/Zp (line and paragraph separators), Cs (lone
# surrogates, which cannot even be encoded).
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_CANDIDATE = re.compile(r"[^\x20-\x7e]")  # printable ASCII is never hidden: skip the lookup
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in _HIDDEN:
        return char
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible_controls(text: object, *, multiline: bool = False) -> str:
    """``str(text)`` with every control or format character written as a visible escape.

    ESC becomes the four characters ``\\x1b``, a bidi override ``\\u202e``, a newline
    ``\\n`` (kept as a line break when ``multiline``); every other character (accents,
    CJK, emoji) stays. For output that is not Rich markup (plain ``sys.stdout.write``
    of a text table).
    """
    text = str(text)
    if multiline:
        return "\n".join(_CANDIDATE.sub(_visible, line) for line in text.split("\n"))
    return _CANDIDATE.sub(_visible, text)


def escape_text(text: object) -> str:
    """``text`` for a Rich console or table: controls made visible, markup escaped.

    Examples
    --------
    >>> escape_text("evil[/]\\x1b[31m")
    'evil\\\\[/]\\\\x1b[31m'

    Notes
    -----
    Every string a hub, a dataset folder or a local state file supplies goes through
    this before ``Console.print`` or ``Table.add_row``; sic-share's own markup
    (``[red]no[/red]``) is added around it, never inside.
    """
    return escape(visible_controls(text))


def escaped_table(columns: Sequence[object], rows: Iterable[Sequence[object]]) -> Table:
    """A Rich table of untrusted values (query results): every header and cell through :func:`escape_text`.

    Each value shows as ``str(value)`` (``None`` as ``None``).
    """
    table = Table(*(escape_text(c) for c in columns))
    for row in rows:
        table.add_row(*(escape_text(value) for value in row))
    return table
