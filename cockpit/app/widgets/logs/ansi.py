"""A strict reader of a task's escape sequences: colours are kept, everything else goes.

A task's output is the task's to colour, not to steer the pilot's terminal
with. So a line is read the way a terminal's parser would cut it up (ECMA-48:
ESC, then a CSI, a control string or a short escape), and of what it finds
only Select Graphic Rendition (``ESC [ params m``) is kept, as an `SgrState`
the view turns into a style. Every other sequence (cursor movement, erase,
OSC titles and hyperlinks, DCS, private modes, a lone ESC) is dropped whole;
the text between sequences still goes through `safe_text.clean`, so a BEL, an
8-bit C1 control (U+009B is an 8-bit CSI: never read as one) or a bidi
override stays inert as before. No escape byte ever reaches the terminal:
the view draws styles, not sequences.

Why not ``rich.text.Text.from_ansi``: it passes what it does not understand
through as text, and it reads the whole text at once; here each line is read
alone (a sequence never spans a newline, so one bad line cannot swallow the
next), the state a line starts in is given, and a line's end state can be
folded from its bytes without building any text (`advance`), which is what
lets the view know the colour a millionth line starts in.

Bounded on purpose: an SGR with more than `MAX_SGR_PARAMS` characters of
parameters is not an SGR (terminals cap theirs too), so a hostile line of a
million parameters costs one regex pass, not a million steps.

Pure: the standard library and `safe_text` only.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from dragoon.cockpit.safe_text import clean

MAX_SGR_PARAMS: Final = 128

BOLD: Final = 1
DIM: Final = 2
ITALIC: Final = 4
UNDERLINE: Final = 8
REVERSE: Final = 16
STRIKE: Final = 32

DEFAULT_COLOUR: Final = -1
TRUECOLOUR: Final = 256  # colours at or above this are 256 + 0xRRGGBB

# The ECMA-48 shapes, as a terminal's parser cuts them. Nothing here matches a
# newline, and every token starts at an ESC that no earlier token swallowed, so
# the SGR tokens of a line are exactly `_SGR_BYTES`'s matches on its bytes.
_ESCAPE_PATTERN: Final = (
    "\x1b(?:"
    r"\[([0-?]*)([ -/]*)([@-~]?)"  # CSI: parameters, intermediates, final (maybe cut off)
    "|[\\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\\\)?"  # OSC, DCS, SOS, PM, APC: to BEL or ST
    "|[ -/]*[0-~]?"  # any other escape (charset, keypad, RIS...), or a lone ESC
    ")"
)
_ESCAPE: Final = re.compile(_ESCAPE_PATTERN)
_ESCAPE_BYTES: Final = re.compile(_ESCAPE_PATTERN.encode())
_SGR_PARAMS: Final = re.compile(f"[0-9;:]{{0,{MAX_SGR_PARAMS}}}")
_SGR_BYTES: Final = re.compile(f"\x1b\\[([0-9;:]{{0,{MAX_SGR_PARAMS}}})m".encode())
_RESETS: Final = (b"\x1b[0m", b"\x1b[m")


class SgrState(NamedTuple):
    """What the last SGRs left set: colours (-1 default, 0-255 palette, 256 + 0xRRGGBB)
    and attribute bits. Small and hashable, so equal states are shared and memoised."""

    fg: int = DEFAULT_COLOUR
    bg: int = DEFAULT_COLOUR
    flags: int = 0


DEFAULT: Final = SgrState()

_SET: Final = {1: BOLD, 2: DIM, 3: ITALIC, 4: UNDERLINE, 7: REVERSE, 9: STRIKE, 21: UNDERLINE}
_CLEAR: Final = {22: BOLD | DIM, 23: ITALIC, 24: UNDERLINE, 27: REVERSE, 29: STRIKE}


def _number(text: str) -> int:
    return int(text) if text else 0


def _extended(values: list[str]) -> int | None:
    """The colour of a 38/48 (or 58) argument list: ``5;n`` or ``2;r;g;b``; None if malformed."""
    if not values:
        return None
    kind = _number(values[0])
    if kind == 5 and len(values) >= 2:
        index = _number(values[1])
        return index if index <= 255 else None
    if kind == 2 and len(values) >= 4:
        r, g, b = (_number(v) for v in values[1:4])
        if max(r, g, b) <= 255:
            return TRUECOLOUR + (r << 16 | g << 8 | b)
    return None


def apply_sgr(state: SgrState, params: str) -> SgrState:
    """``state`` after ``ESC [ params m``; unknown codes are ignored, as terminals do.

    Blink and conceal are ignored on purpose: blinking is noise, and concealed
    text would hide from the pilot what the task printed.
    """
    fg, bg, flags = state
    if not params:
        return DEFAULT
    parts = params.split(";")
    count = len(parts)
    i = 0
    while i < count:
        part = parts[i]
        i += 1
        if ":" in part:  # ITU T.416 sub-parameters: 38:2::r:g:b, 38:5:n, 4:3
            sub = part.split(":")
            code = _number(sub[0])
            if code in (38, 48):
                rest = sub[1:]
                if len(rest) >= 5 and _number(rest[0]) == 2:
                    rest = [rest[0], *rest[2:5]]  # drop the colour space id
                colour = _extended(rest)
                if colour is not None:
                    fg, bg = (colour, bg) if code == 38 else (fg, colour)
            elif code == 4:
                flags = flags & ~UNDERLINE if sub[1:2] == ["0"] else flags | UNDERLINE
            continue
        code = _number(part)
        if code == 0:
            fg, bg, flags = DEFAULT_COLOUR, DEFAULT_COLOUR, 0
        elif code in _SET:
            flags |= _SET[code]
        elif code in _CLEAR:
            flags &= ~_CLEAR[code]
        elif 30 <= code <= 37:
            fg = code - 30
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif 40 <= code <= 47:
            bg = code - 40
        elif 100 <= code <= 107:
            bg = code - 100 + 8
        elif code == 39:
            fg = DEFAULT_COLOUR
        elif code == 49:
            bg = DEFAULT_COLOUR
        elif code in (38, 48, 58):
            kind = _number(parts[i]) if i < count else -1
            width = 2 if kind == 5 else 4 if kind == 2 else 0
            if not width:
                break  # a malformed extended colour: xterm stops reading the rest
            colour = _extended(parts[i:i + width])
            i += width
            if colour is not None and code != 58:  # 58: underline colour, not drawn
                fg, bg = (colour, bg) if code == 38 else (fg, colour)
    return SgrState(fg, bg, flags)


_steps: dict[tuple[SgrState, bytes], SgrState] = {}
_MAX_STEPS: Final = 1 << 16


def _step(state: SgrState, params: bytes) -> SgrState:
    """`apply_sgr`, memoised: a coloured log repeats the same few sequences."""
    key = (state, params)
    found = _steps.get(key)
    if found is None:
        if len(_steps) >= _MAX_STEPS:
            _steps.clear()
        found = _steps[key] = apply_sgr(state, params.decode("ascii"))
    return found


def advance(state: SgrState, data: bytes) -> SgrState:
    """The state after ``data`` (one or more lines of one stream, as bytes), text unread.

    Starts from the last plain reset when there is one: everything before it is
    forgotten by it.
    """
    if b"\x1b" not in data:
        return state
    start = max(data.rfind(_RESETS[0]), data.rfind(_RESETS[1]))
    if start >= 0:
        state = DEFAULT
    for match in _SGR_BYTES.finditer(data, max(start, 0)):
        state = _step(state, match.group(1))
    return state


def strip_escapes(data: bytes) -> bytes:
    """``data`` without any escape sequence: what search looks through (the visible text)."""
    return _ESCAPE_BYTES.sub(b"", data) if b"\x1b" in data else data


class StyledLine(NamedTuple):
    """A line as shown: runs of visible text, each with the state it is drawn in."""

    runs: list[tuple[str, SgrState]]
    end: SgrState

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.runs)


def _expand(text: str, column: int) -> str:
    """Tabs to spaces (8 columns), from ``column``: runs are expanded as one line."""
    out: list[str] = []
    for index, piece in enumerate(text.split("\t")):
        if index:
            pad = 8 - column % 8
            out.append(" " * pad)
            column += pad
        out.append(piece)
        column += len(piece)
    return "".join(out)


def parse_line(text: str, state: SgrState = DEFAULT) -> StyledLine:
    """One line (no newline) as runs of safe, visible text and the state it ends in.

    A carriage return starts the line over, as on a terminal (a progress bar
    shows its last state), but the colours set before it still hold. Tabs are
    expanded; the text then goes through ``clean`` (controls → pictures).
    """
    if "\x1b" not in text and "\r" not in text:
        runs = [(clean(_expand(text, 0)), state)] if text else []
        return StyledLine(runs, state)
    pieces: list[tuple[str, SgrState]] = []
    position = 0

    def add(chunk: str) -> None:
        nonlocal pieces
        segments = chunk.split("\r")
        if len(segments) > 1:
            pieces = []
            chunk = segments[-1]
        if chunk:
            pieces.append((chunk, state))

    for match in _ESCAPE.finditer(text):
        add(text[position:match.start()])
        position = match.end()
        params, intermediates, final = match.groups()
        if final == "m" and not intermediates and _SGR_PARAMS.fullmatch(params):
            state = apply_sgr(state, params)
    add(text[position:])
    runs: list[tuple[str, SgrState]] = []
    column = 0
    for chunk, chunk_state in pieces:
        if "\t" in chunk:
            chunk = _expand(chunk, column)
        column += len(chunk)
        chunk = clean(chunk)
        if runs and runs[-1][1] == chunk_state:
            runs[-1] = (runs[-1][0] + chunk, chunk_state)
        else:
            runs.append((chunk, chunk_state))
    return StyledLine(runs, state)
