"""The task spec and the parsers of what pilots type: one definition that every door calls.

The spec used to be defined three times (the relay's model, the drone's
parser, the cockpit's type) and durations, labels and env entries were parsed
in five places under different rules, so the dialog, the CLI, the relay and the
drone disagreed on what is valid. Here each concept has one rule, one error
type and one wording: the CLI turns a ``SpecError`` into a usage error, the
dialog shows it under the field, the relay answers it as a 422 and the drone
reports it as ``bad_spec: <reason>``, all with the same text.

Two kinds of function: ``check_*`` take values as JSON carries them (the relay
and the drone), ``parse_*`` take text a person typed (the CLI and the cockpit)
and are a little more forgiving about spaces. Pure: stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Required, TypedDict

from dragoon.shared.canonical import canonical_json, spec_sha256
from dragoon.shared.errors import DragoonError

if TYPE_CHECKING:
    from fractions import Fraction

# -- limits ----------------------------------------------------------------------------------

YEAR: Final = 366 * 86400
# Linux's MAX_ARG_STRLEN (32 pages) counts the terminating NUL: this is the longest single
# argument `bash -c COMMAND` can be handed, and the longest NAME=VALUE string of an env.
MAX_ARG_BYTES: Final = 128 * 1024 - 1
MAX_COMMAND_BYTES: Final = MAX_ARG_BYTES
MAX_ENV_ENTRIES: Final = 1024
MAX_ENV_NAME: Final = 256
MAX_CWD_CHARS: Final = 4096
MAX_TIMEOUT: Final = 100 * YEAR
MAX_GRACE: Final = 3600
DEFAULT_GRACE: Final = 10
MAX_TTL: Final = 30 * 86400
MAX_START_WITHIN: Final = YEAR  # a start deadline (``--start-within``); the queue expires sooner
MAX_ARTIFACT_GLOBS: Final = 256
MAX_GLOB_CHARS: Final = 4096
MAX_TASK_NAME: Final = 200
MAX_LABELS: Final = 64
MAX_SIZE: Final = 1 << 62

NAME_RULE: Final = "1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
LABEL_RULE: Final = "1-63 of A-Z a-z 0-9 . _ : = -, starting with a letter or digit"
ENV_NAME_RULE: Final = f"1-{MAX_ENV_NAME} of A-Z a-z 0-9 _, not starting with a digit"
DURATION_HINT: Final = "like 90, 90s, 5m, 1h30m or 2d"

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=-]{0,62}")
_ENV_NAME: Final = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_ENV_NAME - 1}}}")
_NOT_TEXT: Final = re.compile(r"[\x00\ud800-\udfff]")
# A line of text to show: no C0, DEL or C1 control, no line or paragraph separator; and no
# bidi override or isolate, which makes a table cell read otherwise than it is.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BIDI: Final = re.compile("[\u202a-\u202e\u2066-\u2069]")


class SpecError(DragoonError, ValueError):
    """One value broke one rule: ``str()`` is the one-line reason, starting with the field.

    ``field`` is what the value is called on the wire and on the command line
    (``timeout``, ``env``, ``labels``, ``drone`` …), ``problem`` the rest, so a
    door that names the field itself (click's ``Invalid value for '--timeout'``)
    can show the problem alone.
    """

    code = "invalid"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _show(value: object) -> str:
    """A value quoted for a one-line reason, cut short: never a 128 KiB echo."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "…" + text[-1]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(field: str, value: str, what: str = "") -> str:
    """No NUL (it cannot reach bash, an env or a path) and no lone surrogates (not Unicode)."""
    if _NOT_TEXT.search(value):
        raise SpecError(field, f"{what}must not contain NUL or a lone surrogate")
    return value


def _span(seconds: int) -> str:
    """A limit in words: ``100 years``, ``30d``, ``1h``."""
    if seconds % YEAR == 0:
        return f"{seconds // YEAR} years"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def duration_text(seconds: int) -> str:
    """A duration as a pilot writes it (``30s``, ``1h30m``): the messages that quote one."""
    return _span(seconds)


# -- durations --------------------------------------------------------------------------------

DurationField = Literal["timeout", "grace", "ttl", "start_within"]
# field -> (zero allowed, maximum): a timeout or a token's ttl of 0 means nothing sane,
# a grace of 0 means "SIGKILL at once".
DURATIONS: Final[dict[str, tuple[bool, int]]] = {
    "timeout": (False, MAX_TIMEOUT),
    "grace": (True, MAX_GRACE),
    "ttl": (False, MAX_TTL),
    "start_within": (False, MAX_START_WITHIN),
}

_NUM = r"([0-9]+(?:\.[0-9]+)?)"
# ASCII only, any case: a Unicode look-alike (the Kelvin sign folds to k) is not a unit.
_DURATION: Final = re.compile(rf"(?:{_NUM}\s*d)?\s*(?:{_NUM}\s*h)?\s*(?:{_NUM}\s*m)?\s*"
                              rf"(?:{_NUM}\s*s)?", re.ASCII | re.IGNORECASE)
_BARE_SECONDS: Final = re.compile(_NUM)


def check_seconds(field: str, value: object, *, nullable: bool = False) -> int | None:
    """A duration as JSON carries it: whole seconds (an integer), in the field's range."""
    if value is None and nullable:
        return None
    allow_zero, maximum = DURATIONS[field]
    if not _is_int(value):
        raise SpecError(field, "must be whole seconds (an integer)" + (" or null" if nullable
                                                                        else ""))
    assert isinstance(value, int)
    if value < 0 and allow_zero:
        raise SpecError(field, "must not be negative")
    if value <= 0 and not allow_zero:
        raise SpecError(field, "must be more than zero")
    if value > maximum:
        raise SpecError(field, f"must be at most {_span(maximum)}")
    return value


def parse_duration(text: str, *, field: DurationField = "timeout") -> int:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2d``, ``1.5h`` → whole seconds, in the field's range.

    Units d, h, m, s (any case), each at most once and in that order, spaces
    allowed between them; a number without a unit is seconds, but only alone
    (``1h30`` is refused rather than guessed). Fractions are fine when the total
    is whole seconds.
    """
    from fractions import Fraction  # here: it pulls in decimal, which few callers need

    cleaned = text.strip()
    if not cleaned:
        raise SpecError(field, f"is empty; give a duration {DURATION_HINT}")
    total: Fraction | None = None
    if len(cleaned) <= 64:
        bare = _BARE_SECONDS.fullmatch(cleaned)
        match = bare or _DURATION.fullmatch(cleaned)
        if match is not None and any(match.groups()):
            factors = (1,) if bare else (86400, 3600, 60, 1)
            total = sum((Fraction(part) * factor for part, factor in
                         zip(match.groups(), factors, strict=True) if part), Fraction(0))
    if total is None:
        raise SpecError(field, f"{_show(text)} is not a duration {DURATION_HINT}")
    if total.denominator != 1:
        raise SpecError(field, f"{_show(text)} is not a whole number of seconds")
    seconds = check_seconds(field, int(total))
    assert seconds is not None
    return seconds


# -- byte sizes -------------------------------------------------------------------------------

_SIZE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgtp])(i?)(b?)|(b))?",
                          re.ASCII | re.IGNORECASE)
_POWER: Final = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str, *, field: str = "size", maximum: int = MAX_SIZE) -> int:
    """``512``, ``512B``, ``10K``, ``10M``, ``4GiB``, ``1.5G`` → bytes; ``10MB`` is 10⁷.

    A bare letter and ``…iB`` are binary (1024), as `ls -h` and `df -h` print
    them; ``kB``/``MB``/``GB`` with the ``B`` and no ``i`` are decimal (SI).
    """
    from fractions import Fraction

    cleaned = text.strip()
    match = _SIZE.fullmatch(cleaned) if len(cleaned) <= 64 else None
    if match is None:
        raise SpecError(field, f"{_show(text)} is not a size like 512, 10M, 4GiB or 1.5G")
    number, prefix, binary, with_b, _bytes = match.groups()
    factor = 1
    if prefix:
        base = 1024 if binary or not with_b else 1000
        factor = base ** _POWER[prefix.lower()]
    total = Fraction(number) * factor
    if total.denominator != 1:
        raise SpecError(field, f"{_show(text)} is not a whole number of bytes")
    if total > maximum:
        raise SpecError(field, f"must be at most {maximum} bytes")
    return int(total)


# -- names and labels -------------------------------------------------------------------------


def check_drone_name(value: object, *, field: str = "drone") -> str:
    """A drone's (or pilot's) name: a plain token, safe in a path, a URL and a table."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SpecError(field, f"{_show(value)} is not a name ({NAME_RULE})")
    return value


def parse_drone_name(text: str, *, field: str = "drone") -> str:
    """A typed drone name; spaces around it are dropped."""
    return check_drone_name(text.strip(), field=field)


def check_label(value: object, *, field: str = "labels") -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise SpecError(field, f"{_show(value)} is not a label ({LABEL_RULE})")
    return value


def check_labels(values: object, *, field: str = "labels") -> list[str]:
    """A JSON list of labels, each checked; duplicates dropped, first one kept in place."""
    if not isinstance(values, list | tuple):
        raise SpecError(field, "must be a list of labels")
    labels = list(dict.fromkeys(check_label(value, field=field) for value in values))
    if len(labels) > MAX_LABELS:
        raise SpecError(field, f"at most {MAX_LABELS} labels, not {len(labels)}")
    return labels


def parse_labels(text: str, *, field: str = "labels", at_least_one: bool = False) -> list[str]:
    """``gpu,a100`` or ``gpu, a100`` → ``["gpu", "a100"]``; blank text is no labels.

    Spaces around each label are dropped; an empty label between commas
    (``a,,b``, ``a,``) is refused as a typo. ``at_least_one`` is for a task's
    target, where no labels at all would mean any drone.
    """
    if not text.strip():
        if at_least_one:
            raise SpecError(field, "give at least one label, like gpu,a100")
        return []
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise SpecError(field, f"{_show(text)} has an empty label between commas")
    return check_labels(parts, field=field)


# -- the spec's fields ------------------------------------------------------------------------


def check_command(value: object) -> str:
    if not isinstance(value, str):
        raise SpecError("command", "must be a string")
    _text("command", value)
    if not value.strip():
        raise SpecError("command", "is empty")
    size = len(value.encode("utf-8"))
    if size > MAX_COMMAND_BYTES:
        raise SpecError("command", f"is {size} bytes of UTF-8; at most {MAX_COMMAND_BYTES}")
    return value


def check_env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise SpecError("env", f"{_show(value)} is not a variable name ({ENV_NAME_RULE})")
    return value


def check_env_entry(name: object, value: object) -> tuple[str, str]:
    """One variable: a shell-valid name, a text value, short enough for exec to pass on."""
    check_env_name(name)
    assert isinstance(name, str)
    if not isinstance(value, str):
        raise SpecError("env", f"the value of {name} must be a string")
    _text("env", value, f"the value of {name} ")
    size = len(name.encode()) + 1 + len(value.encode("utf-8"))
    if size > MAX_ARG_BYTES:
        raise SpecError("env", f"{name}=… is {size} bytes of UTF-8; at most {MAX_ARG_BYTES}")
    return name, value


def check_env(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError("env", "must be an object of NAME: VALUE strings")
    if len(value) > MAX_ENV_ENTRIES:
        raise SpecError("env", f"at most {MAX_ENV_ENTRIES} variables, not {len(value)}")
    return dict(check_env_entry(name, val) for name, val in value.items())


def parse_env_entry(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (split at the first ``=``; the value may be empty or hold more ``=``)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise SpecError("env", f"{_show(text)} is not NAME=VALUE")
    return check_env_entry(name, value)


def check_cwd(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError("cwd", "must be a path or null")
    _text("cwd", value)
    if not value:
        raise SpecError("cwd", "is empty; leave it out for a fresh work folder")
    if len(value) > MAX_CWD_CHARS:
        raise SpecError("cwd", f"is longer than {MAX_CWD_CHARS} characters")
    return value


def check_start_within(value: object) -> int | None:
    """A start deadline as JSON carries it: whole seconds, or null for none."""
    return check_seconds("start_within", value, nullable=True)


def check_timeout(value: object) -> int | None:
    return check_seconds("timeout", value, nullable=True)


def check_grace(value: object) -> int:
    grace = check_seconds("grace", value)
    assert grace is not None
    return grace


def check_glob(value: object) -> str:
    """An artifact pattern: relative to the work dir and never climbing out of it.

    The same refusals as the drone's upload step (drone/artifacts.py), made at
    the door, so a pattern that could never upload anything is refused at once.
    """
    if not isinstance(value, str):
        raise SpecError("artifacts", "must be a list of glob patterns")
    _text("artifacts", value, f"{_show(value)} ")
    pattern = value.strip()
    if not pattern:
        raise SpecError("artifacts", "a pattern is empty")
    if len(value) > MAX_GLOB_CHARS:
        raise SpecError("artifacts", f"a pattern is longer than {MAX_GLOB_CHARS} characters")
    if pattern.startswith(("/", "~")):
        raise SpecError("artifacts", f"{_show(value)} is absolute; patterns are relative to "
                                     "the work dir")
    if ".." in pattern.split("/"):
        raise SpecError("artifacts", f"{_show(value)} holds '..'; patterns stay inside the "
                                     "work dir")
    return value


def check_globs(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        raise SpecError("artifacts", "must be a list of glob patterns")
    if len(value) > MAX_ARTIFACT_GLOBS:
        raise SpecError("artifacts", f"at most {MAX_ARTIFACT_GLOBS} patterns, not {len(value)}")
    return [check_glob(pattern) for pattern in value]


def parse_globs(text: str) -> list[str]:
    """``out/*.pt, logs/**`` → the patterns, spaces around each dropped, empty ones skipped."""
    return check_globs([glob for glob in (part.strip() for part in text.split(",")) if glob])


def check_line(field: str, value: str, *, limit: int) -> str:
    """One line of text shown in tables: no NUL or surrogate, no control character (C0, DEL,
    C1, U+2028/U+2029), no bidi override or isolate (U+202A..U+202E, U+2066..U+2069).

    A task's name, and what a drone says about itself (hostname, version) at the
    relay's door: text that every pilot's terminal shows, so nothing in it may
    steer the terminal or make the line read otherwise than it is.
    """
    _text(field, value)
    if not value:
        raise SpecError(field, "is empty; leave it out or null")
    if _CONTROL.search(value):
        raise SpecError(field, "must be one line without control characters")
    if _BIDI.search(value):
        raise SpecError(field, "must not hold bidi override or isolate characters "
                               "(U+202A..U+202E, U+2066..U+2069)")
    if len(value) > limit:
        raise SpecError(field, f"is longer than {limit} characters")
    return value


def check_task_name(value: object) -> str | None:
    """A task's name: one line of free text for tables (``lr sweep``, ``entraînement 3``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError("name", "must be a string or null")
    return check_line("name", value, limit=MAX_TASK_NAME)


# -- the spec ---------------------------------------------------------------------------------

SPEC_FIELDS: Final = ("command", "env", "cwd", "timeout", "grace", "artifacts", "name", "stdin")


def check_stdin(value: object) -> bool:
    """Whether the task reads the pilot's stdin: a JSON boolean, never a truthy stand-in."""
    if not isinstance(value, bool):
        raise SpecError("stdin", "must be true or false")
    return value


class SpecJSON(TypedDict, total=False):
    """The spec as JSON (docs/api.md): what a pilot sends; the relay fills every key."""

    command: Required[str]
    env: dict[str, str]
    cwd: str | None
    timeout: int | None
    grace: int
    artifacts: list[str]
    name: str | None
    stdin: bool  # present only when true (docs/protocol.md, "Stdin")


@dataclass(frozen=True)
class TaskSpec:
    """A valid spec: constructing one checks every field, so holding one proves it is valid.

    ``env`` is a read-only mapping and ``artifacts`` a tuple; ``to_json()`` is
    the wire form with all seven keys, as the relay stores, signs and hands on,
    plus ``"stdin": true`` for a task that reads its pilot's stdin. The key is
    left out when false, so every spec written before it existed keeps its
    canonical bytes, and its hash, exactly.
    """

    command: str
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    cwd: str | None = None
    timeout: int | None = None
    grace: int = DEFAULT_GRACE
    artifacts: tuple[str, ...] = ()
    name: str | None = None
    stdin: bool = False

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {
            "command": check_command(self.command),
            "env": MappingProxyType(check_env(self.env)),
            "cwd": check_cwd(self.cwd),
            "timeout": check_timeout(self.timeout),
            "grace": check_grace(self.grace),
            "artifacts": tuple(check_globs(self.artifacts)),
            "name": check_task_name(self.name),
            "stdin": check_stdin(self.stdin),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def to_json(self) -> SpecJSON:
        wire: SpecJSON = {"command": self.command, "env": dict(self.env), "cwd": self.cwd,
                          "timeout": self.timeout, "grace": self.grace,
                          "artifacts": list(self.artifacts), "name": self.name}
        if self.stdin:
            wire["stdin"] = True  # only when true: older specs keep their bytes and hash
        return wire

    def clear(self) -> dict[str, Any]:
        """The fields the relay reads to run its queue (``CLEAR_FIELDS``): every other one
        travels sealed to the drone (shared/sealed_task.py), and the relay never sees it."""
        return clear_of(self.to_json())

    def canonical(self) -> bytes:
        """The canonical JSON of ``to_json()``: the bytes RE-TASK-V1 hashes."""
        return canonical_json(self.to_json())

    def sha256(self) -> str:
        return spec_sha256(self.to_json())


# What of a spec stays in clear for the relay (docs/security.md, "What the relay still sees"):
# the name for its tables, the timeout and grace it reports and cancels with, and whether the
# task reads stdin (the relay keeps its window). ``stdin`` only when true, as in to_json().
CLEAR_FIELDS: Final = ("timeout", "grace", "name", "stdin")


def clear_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The clear part of a spec in its wire form (``TaskSpec.to_json()``)."""
    return {key: spec[key] for key in CLEAR_FIELDS if key in spec}


def parse_clear_spec(raw: object) -> dict[str, Any]:
    """The relay's door for a spec's clear part: each field checked by its one rule, every
    key filled as ``clear()`` writes it; SpecError names the first bad field."""
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a JSON object")
    unknown = [key for key in raw if key not in CLEAR_FIELDS]
    if unknown:
        hidden = unknown[0] in SPEC_FIELDS
        raise SpecError("spec", f"{'sealed' if hidden else 'unknown'} field "
                                f"{_show(unknown[0])}" + (
                                    " is not sent in clear (it travels in the sealed "
                                    "payload)" if hidden else ""))
    return TaskSpec(command="-", **raw).clear()


def parse_spec(raw: object) -> TaskSpec:
    """A spec as JSON carries it → ``TaskSpec``, or a ``SpecError`` naming the first bad field.

    Unknown fields are refused (a typo must not silently change meaning, and a
    drone must not run a task partly understood); missing ones take their
    defaults. Fields are checked in the order of ``SPEC_FIELDS``.
    """
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a JSON object")
    unknown = [key for key in raw if key not in SPEC_FIELDS]
    if unknown:
        raise SpecError("spec", f"unknown field {_show(unknown[0])}")
    if "command" not in raw:
        raise SpecError("command", "is required")
    return TaskSpec(**raw)


# -- task ids and prefixes of them ------------------------------------------------------------

# The relay makes ids as ``t-`` and ten of these (base32's letters and digits, lower case).
TASK_ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
TASK_ID_LENGTH: Final = 10
# The shortest prefix a pilot may type: fewer would match a good part of any busy relay, and
# a query for it would be a listing, not a look-up.
MIN_TASK_PREFIX: Final = 3


def ref_rule(mark: str) -> str:
    """How a reference with id mark ``mark`` (``t``, ``j``) is typed, for error messages."""
    return (f"{mark}- and {MIN_TASK_PREFIX}-{TASK_ID_LENGTH} of a-z 2-7; "
            f"the {mark}- may be left out")


TASK_REF_RULE: Final = ref_rule("t")
_REF_BODY: Final = rf"([{TASK_ID_ALPHABET}]{{{MIN_TASK_PREFIX},{TASK_ID_LENGTH}}})"


def parse_id_ref(text: str, *, mark: str, noun: str, field: str) -> tuple[str, bool]:
    """A whole id or a prefix of one, for any kind of id made as ``MARK-`` and ten of
    TASK_ID_ALPHABET (tasks ``t-``, jobs ``j-``) → (the id form, whether it is whole).

    One rule for every kind: the mark is optional because every id has it, and case is
    ignored because ids are lower case, so neither can make a prefix match another id.
    Anything else is a ``SpecError`` naming ``noun`` and the rule.
    """
    raw = text.strip()
    match = re.fullmatch(rf"(?:{re.escape(mark)}-)?{_REF_BODY}", raw.lower())
    if match is None:
        raise SpecError(field, f"{_show(raw)} is not {noun} id or a prefix of one "
                               f"({ref_rule(mark)})")
    body = match.group(1)
    return f"{mark}-{body}", len(body) == TASK_ID_LENGTH


@dataclass(frozen=True)
class TaskRef:
    """What a pilot typed for a task: a whole id, or a prefix of one to look up.

    ``text`` is always in the id's own form (``t-`` and lower case), so a
    prefix is matched, and an id sent, as the relay stores it.
    """

    text: str
    exact: bool


def parse_task_ref(text: str, *, field: str = "task") -> TaskRef:
    """``t-4jgab2kq7z`` (an id), ``t-4jg`` or ``4jg`` (a prefix) → a ``TaskRef``.

    Every door that takes a task id calls this (the CLI's verbs through
    ``RelayClient.resolve_task``, the relay's ``id_prefix`` query). The ``t-``
    is optional because every id has it, and case is ignored because ids are
    lower case: neither can make a prefix match another task.
    """
    ref, exact = parse_id_ref(text, mark="t", noun="a task", field=field)
    return TaskRef(ref, exact=exact)


def check_task_prefix(value: object, *, field: str = "id_prefix") -> str:
    """The relay's ``id_prefix`` query: a prefix by ``parse_task_ref``'s rule, in id form."""
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    return parse_task_ref(value, field=field).text


# -- messages to the pilot's inbox ------------------------------------------------------------

MESSAGE_CAP: Final = 4096  # bytes of UTF-8 per message


def check_message(value: object, *, field: str = "text", cap: int | None = MESSAGE_CAP) -> str:
    """One inbox message: some text that is not only blank, at most ``cap`` bytes of UTF-8.

    ``dragoon notify`` refuses what breaks this (exit 2), and the drone skips a
    blank line of the inbox file and cuts a long one to fit, before it seals the
    message under the task key (shared/sealed_message.py): an empty message in
    every pilot's inbox says nothing. The relay cannot read a message; it holds
    the sealed record to its own size limit, ``message_max`` (default MESSAGE_CAP)
    plus a record's overhead.
    """
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    _text(field, value)
    if not value.strip():
        raise SpecError(field, "is empty or only blanks; say something")
    if cap is not None and (size := len(value.encode("utf-8"))) > cap:
        raise SpecError(field, f"is {size} bytes of UTF-8, over the cap of {cap}")
    return value
