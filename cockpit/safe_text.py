"""Untrusted text as the pilot sees it: the one rule for every string a relay, drone or task wrote.

A drone's labels, a task's name, a message, an artifact's path, an error from
the relay: each is data, and data must never steer the pilot's terminal. Two
things can: rich/Textual markup (``x[/]`` raises, ``[link=…]`` disguises) and
control characters (``\\x1b]0;pwned\\x07`` retitles the window, ``\\x1b[2J``
clears the screen, U+202E reverses what follows it). Every human view of the
pilot side (CLI tables, field lists, error lines, progress bars; the cockpit's
grid, tree, log pane, detail, inbox, toasts and dialogs) shows such text
through ``clean`` — as ``rich.text.Text`` (``plain``), never as markup.

The rule, one character at a time (docs/security.md, "Untrusted text is data"):

- a C0 control or DEL becomes its Unicode control picture, one column wide like
  the character it stands for: ESC → ␛, BEL → ␇, LF → ␊, CR → ␍, DEL → ␡;
  a tab becomes one space;
- a C1 control (U+0080..U+009F, where U+009B is an 8-bit CSI), a bidi override or
  isolate (U+202A..U+202E, U+2066..U+2069), a line or paragraph separator
  (U+2028, U+2029) and a lone surrogate (not Unicode; a terminal write would
  fail on it) become U+FFFD ``�``.

Everything else, every script and emoji included, is shown as it is. ``--json``
output never passes through here: it is the exact text, JSON-escaped.

Pure: the standard library only; ``plain`` imports rich when first called, so
the CLI verbs that print no table (``dragoon run``) never load it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from rich.text import Text

REPLACEMENT: Final = "\ufffd"

# What the rule replaces: C0, DEL, C1, line/paragraph separators, bidi controls, surrogates.
UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                           "\ud800-\udfff]")
_PICTURES: Final = {**{chr(code): chr(0x2400 + code) for code in range(0x20)},
                    "\x7f": "\u2421", "\t": " "}


def _swap(match: re.Match[str]) -> str:
    return _PICTURES.get(match.group(), REPLACEMENT)


def clean(value: object) -> str:
    """``value`` as text that is safe to show: what the rule above replaces is replaced.

    Anything that is not a string is shown as ``str(value)`` (a relay may send a
    number where a name was expected); the length is kept, one character for one.
    """
    text = value if isinstance(value, str) else str(value)
    return UNSAFE.sub(_swap, text)


def plain(value: object, style: str = "") -> Text:
    """``clean(value)`` as rich ``Text``: shown as it reads, never parsed as markup."""
    from rich.text import Text

    return Text(clean(value), style=style)
