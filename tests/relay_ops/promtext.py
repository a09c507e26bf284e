"""A strict reader of the Prometheus text exposition format (0.0.4), for tests.

Written independently of the renderer (prometheus-client, under relay/metrics/)
so that the tests check the format, not the renderer agreeing with itself: it
refuses samples outside a declared family, malformed label sets and histograms
whose buckets are not cumulative or whose ``+Inf`` bucket differs from
``_count``. prometheus-client's ``_created`` series arrive as gauge families of
their own in this format, and parse as such.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total", ""),
             "gauge": ("",)}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, tuple(sorted(labels.items())))]

    def series(self, suffix: str = "") -> dict[Labels, float]:
        return {labels: v for (name, labels), v in self.samples.items()
                if name == self.name + suffix}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _parse_labels(text: str) -> Labels:
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            raise ValueError(f"malformed labels at {text[pos:]!r}")
        labels.append((match.group(1), _unescape(match.group(2))))
        pos = match.end()
    names = [name for name, _ in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label in {text!r}")
    return tuple(sorted(labels))


def _parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("+", ""))
    return float(text)


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises ValueError on anything a Prometheus server would refuse."""
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            if kind not in _SUFFIXES or name in families:
                raise ValueError(f"bad or repeated TYPE line {line!r}")
            families[name] = Family(name, kind, helps.get(name, ""))
            continue
        if line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"malformed sample line {line!r}")
        sample_name, _, label_text, value_text = match.groups()
        family = next((f for f in families.values()
                       if any(sample_name == f.name + s for s in _SUFFIXES[f.kind])), None)
        if family is None:
            raise ValueError(f"sample {sample_name} outside any declared family")
        key = (sample_name, _parse_labels(label_text or ""))
        if key in family.samples:
            raise ValueError(f"duplicate sample {line!r}")
        family.samples[key] = _parse_value(value_text)
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in family.samples.items():
        if name == family.name + "_bucket":
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels)["le"]
            groups.setdefault(rest, []).append((_parse_value(le), value))
    for rest, buckets in groups.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            raise ValueError(f"{family.name}{rest}: buckets are not cumulative")
        if not math.isinf(buckets[-1][0]):
            raise ValueError(f"{family.name}{rest}: no +Inf bucket")
        if family.samples.get((family.name + "_count", rest)) != counts[-1]:
            raise ValueError(f"{family.name}{rest}: +Inf bucket differs from _count")
        if (family.name + "_sum", rest) not in family.samples:
            raise ValueError(f"{family.name}{rest}: no _sum")
