"""Metrics in a message's text: the documented ``NAME=NUMBER`` form (docs/cli.md, "notify").

A task reports values with ``dragoon notify --metric loss=0.31`` (which writes the
message ``loss=0.31``) or any message of its own holding such tokens: every
whitespace-separated token ``NAME=NUMBER`` is a metric, the rest is text. The
relay never reads a message (it is sealed), so the pilot's tools (``dragoon job``,
the cockpit's job view) read the metrics out of the opened text, by this one rule.
Pure: stdlib only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final

METRIC_NAME_RULE: Final = "A-Z a-z 0-9 _ . : / -, 1-64 long, starting with a letter or _"
_NAME: Final = r"[A-Za-z_][A-Za-z0-9_.:/-]{0,63}"
# A float literal as a person writes one: 3, -0.5, .5, 1e-3, 2.5E+4, nan, inf, -infinity.
_NUMBER: Final = (r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                  r"|(?i:nan|inf|infinity))")
_TOKEN: Final = re.compile(rf"({_NAME})=({_NUMBER})")


class MetricError(ValueError):
    """A ``--metric`` that is not ``NAME=NUMBER``: ``str()`` is one line saying why."""


def parse_metrics(text: str) -> dict[str, float]:
    """The metrics of a message, in order of first appearance; a later token wins."""
    found: dict[str, float] = {}
    for token in text.split():
        match = _TOKEN.fullmatch(token)
        if match is not None:
            found[match.group(1)] = float(match.group(2))
    return found


def parse_metric_flag(text: str) -> tuple[str, str]:
    """``loss=0.31`` → (``loss``, ``0.31``): the number kept as written, checked."""
    name, sep, value = text.strip().partition("=")
    if not sep:
        raise MetricError(f"{text[:60]!r} is not NAME=NUMBER, like loss=0.31")
    if re.fullmatch(_NAME, name) is None:
        raise MetricError(f"{name[:60]!r} is not a metric name ({METRIC_NAME_RULE})")
    if re.fullmatch(_NUMBER, value) is None:
        raise MetricError(f"{name}: {value[:60]!r} is not a number (like 0.31, 1e-3, nan)")
    return name, value


def metrics_message(metrics: Iterable[tuple[str, str]], text: str = "") -> str:
    """The message ``notify --metric`` sends: ``loss=0.31 acc=0.9`` and then TEXT."""
    words = [f"{name}={value}" for name, value in metrics]
    if text.strip():
        words.append(text)
    return " ".join(words)


def metric_text(value: float) -> str:
    """A metric for a table cell: short, and ``nan``/``inf`` spelled as they were."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"
