"""A sweep's spec: the one parser for ``dragoon sweep``'s flags and its TOML file.

Both doors build the same mapping (the CLI from its flags, ``--file`` from
``tomllib``) and hand it to ``parse_sweep``, so a field means the same and is
refused with the same one line wherever it came from. A ``Sweep`` knows its
points (the grid in the order given, the last parameter varying fastest, like
nested loops; or a deterministic sample of N distinct points), the command of
each (every ``{name}`` replaced by the shell-quoted value, so a value can never
become shell syntax) and the sealed environment of each trial (docs/jobs.md).
Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import random as _random
import re
import secrets
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.shared.canonical import canonical_json
from dragoon.shared.spec import (
    MAX_TASK_NAME,
    SpecError,
    SpecJSON,
    check_env,
    check_globs,
    check_labels,
    check_task_name,
    parse_drone_name,
    parse_duration,
    parse_labels,
    parse_spec,
)

MAX_TRIALS: Final = 10_000  # points of one sweep (the relay's per-pilot queue holds 20,000)
MAX_VALUES: Final = 1_000  # values of one parameter
MAX_RETRIES: Final = 10  # each retry is a pre-signed spare per trial
PARAM_RULE: Final = "A-Z a-z 0-9 _, 1-64 long, not starting with a digit"
_PARAM: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Either a doubled brace (a literal one) or a placeholder, or a lone brace (an error).
_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NOT_TEXT: Final = re.compile(r"[\x00\ud800-\udfff]")
SET_BY_SWEEP: Final = ("DRAGOON_JOB", "DRAGOON_TRIAL", "DRAGOON_PARAMS")
FIELDS: Final = ("command", "grid", "random", "seed", "labels", "drone", "max_parallel",
                 "retries", "retry_on", "stop_on_failure", "name", "timeout", "grace", "env",
                 "cwd", "artifacts")


class SweepError(SpecError):
    """One field of a sweep broke one rule: ``str()`` is ``field: problem``, one line."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "…" + text[-1]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def value_text(value: object, where: str) -> str:
    """A grid value as the pilot wrote it: strings as they are, TOML's numbers and booleans
    in their TOML text (``true``, ``32``, ``0.001``: tomllib keeps no original spelling,
    so write ``"1e-3"`` quoted to keep it)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = "nan" if value != value else repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise SweepError("grid", f"{where}: {_show(value)} is not a string, number or boolean")
    if not text:
        raise SweepError("grid", f"{where}: a value is empty")
    if _NOT_TEXT.search(text):
        raise SweepError("grid", f"{where}: a value holds NUL or a lone surrogate")
    return text


def parse_grid_flag(text: str) -> tuple[str, list[str]]:
    """``lr=1e-3,1e-4`` → (``lr``, [``1e-3``, ``1e-4``]): split at the first ``=``, then
    on ``,``; the values stay text as written."""
    name, sep, values = text.partition("=")
    if not sep:
        raise SweepError("grid", f"{_show(text)} is not NAME=V1,V2,…")
    name = name.strip()
    return name, [part.strip() for part in values.split(",")]


def _param_name(name: object) -> str:
    if not isinstance(name, str) or _PARAM.fullmatch(name) is None:
        raise SweepError("grid", f"{_show(name)} is not a parameter name ({PARAM_RULE})")
    return name


def _grid(raw: object) -> dict[str, tuple[str, ...]]:
    """The grid from a TOML table (name → list) or the CLI's ``NAME=V1,V2`` words, in order."""
    if isinstance(raw, Mapping):
        entries: list[tuple[object, object]] = list(raw.items())
    elif isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        entries = [parse_grid_flag(item) for item in raw]
    else:
        raise SweepError("grid", "must be a table of NAME = [values] (or NAME=V1,V2 flags)")
    if not entries:
        raise SweepError("grid", "give at least one parameter, like lr=1e-3,1e-4")
    grid: dict[str, tuple[str, ...]] = {}
    uppers: dict[str, str] = {}
    for name, values in entries:
        name = _param_name(name)
        if name in grid:
            raise SweepError("grid", f"parameter {name} is given twice")
        if name.upper() in uppers:
            raise SweepError("grid", f"parameters {uppers[name.upper()]} and {name} are both "
                                     f"DRAGOON_PARAM_{name.upper()}")
        if not isinstance(values, list | tuple):
            raise SweepError("grid", f"{name}: must be a list of values")
        if not values:
            raise SweepError("grid", f"{name}: has no values")
        if len(values) > MAX_VALUES:
            raise SweepError("grid", f"{name}: at most {MAX_VALUES} values, not {len(values)}")
        texts = tuple(value_text(value, name) for value in values)
        seen: set[str] = set()
        for text in texts:
            if text in seen:
                raise SweepError("grid", f"{name}: value {_show(text)} is given twice")
            seen.add(text)
        grid[name] = texts
        uppers[name.upper()] = name
    return grid


@dataclass(frozen=True)
class Template:
    """A command with ``{name}`` placeholders, cut into literal text and parameter names."""

    parts: tuple[tuple[bool, str], ...]  # (is_placeholder, text or name)

    def fill(self, point: Mapping[str, str]) -> str:
        return "".join(shlex.quote(point[text]) if is_name else text
                       for is_name, text in self.parts)


def parse_template(command: object, names: Sequence[str]) -> Template:
    if not isinstance(command, str):
        raise SweepError("command", "must be a string")
    if not command.strip():
        raise SweepError("command", "is empty")
    parts: list[tuple[bool, str]] = []
    at = 0
    for match in _TOKEN.finditer(command):
        if match.start() > at:
            parts.append((False, command[at:match.start()]))
        at = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif match.group(1) is None:
            raise SweepError("command", f"a lone {token!r} at character {match.start() + 1}; "
                                        "write {{ or }} for a literal brace")
        elif match.group(1) not in names:
            raise SweepError("command", f"unknown placeholder {token!r} (parameters: "
                                        f"{', '.join(names)}); write {{{{ and }}}} for "
                                        "literal braces")
        else:
            parts.append((True, match.group(1)))
    if at < len(command):
        parts.append((False, command[at:]))
    return Template(tuple(parts))


def _int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not _is_int(value):
        raise SweepError(name, f"must be a whole number, not {_show(value)}")
    assert isinstance(value, int)
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SweepError(name, f"must be {span}, not {value}")
    return value


def _exit_codes(value: object) -> tuple[int, ...]:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")] if value.strip() else []
        try:
            value = [int(part) for part in parts]
        except ValueError:
            raise SweepError("retry_on", f"{_show(value)} is not exit codes like 1,137") from None
    if not isinstance(value, list | tuple):
        raise SweepError("retry_on", "must be a list of exit codes, like [1, 137]")
    return tuple(dict.fromkeys(_int("retry_on", code, 1, 255) for code in value))


def _seconds(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return parse_duration(value, field=name)  # type: ignore[arg-type]
        if not _is_int(value):
            raise SweepError(name, f"must be a duration like 90s or 3h, not {_show(value)}")
        return parse_duration(str(value), field=name)  # type: ignore[arg-type]
    except SweepError:
        raise
    except SpecError as exc:
        raise SweepError(name, exc.problem) from None


@dataclass(frozen=True)
class Sweep:
    """A checked sweep. ``points()`` are the trials' parameters, in trial order."""

    grid: Mapping[str, tuple[str, ...]]
    template: Template
    command: str
    labels: tuple[str, ...] = ()
    drone: str | None = None
    random: int | None = None
    seed: int | None = None
    max_parallel: int | None = None
    retries: int = 0
    retry_on: tuple[int, ...] = ()
    stop_on_failure: bool = False
    name: str | None = None
    timeout: int | None = None
    grace: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    artifacts: tuple[str, ...] = ()

    @property
    def grid_size(self) -> int:
        size = 1
        for values in self.grid.values():
            size *= len(values)
        return size

    def point_at(self, index: int) -> dict[str, str]:
        """The grid's ``index``-th point: a mixed-radix number, the last parameter fastest."""
        point: dict[str, str] = {}
        for name in reversed(list(self.grid)):
            values = self.grid[name]
            index, at = divmod(index, len(values))
            point[name] = values[at]
        return {name: point[name] for name in self.grid}

    def points(self) -> list[dict[str, str]]:
        """Every point in grid order; with ``random``, N distinct ones drawn with ``seed``
        (the same seed, the same points), still in grid order."""
        if self.random is None:
            indices: Sequence[int] = range(self.grid_size)
        else:
            # Reproducible on purpose (the seed is the point), not a secret.
            draw = _random.Random(self.seed)  # noqa: S311
            indices = sorted(draw.sample(range(self.grid_size), self.random))
        return [self.point_at(index) for index in indices]

    def command_for(self, point: Mapping[str, str]) -> str:
        return self.template.fill(point)

    def env_for(self, point: Mapping[str, str], job_id: str, trial: int) -> dict[str, str]:
        """The trial's environment: the sweep's ``env``, then what the sweep sets itself."""
        env = dict(self.env)
        env["DRAGOON_JOB"] = job_id
        env["DRAGOON_TRIAL"] = str(trial)
        env["DRAGOON_PARAMS"] = canonical_json(dict(point)).decode("utf-8")
        for name, value in point.items():
            env["DRAGOON_PARAM_" + name.upper()] = value
        return env

    def spec_for(self, point: Mapping[str, str], job_id: str, trial: int) -> SpecJSON:
        """The trial's whole spec, checked by shared/spec.py's rule (a command made too long
        by its values is refused here, naming the trial)."""
        spec: dict[str, Any] = {"command": self.command_for(point),
                                "env": self.env_for(point, job_id, trial),
                                "artifacts": list(self.artifacts)}
        if self.name is not None:
            spec["name"] = f"{self.name} #{trial}"
        for key in ("cwd", "timeout", "grace"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        try:
            return parse_spec(spec).to_json()
        except SpecError as exc:
            raise SweepError(exc.field, f"trial {trial}: {exc.problem}") from None


def parse_sweep(fields: Mapping[str, Any], *, fresh_seed: int | None = None) -> Sweep:
    """The one parser: a mapping of the fields above → a ``Sweep``, or one ``SweepError``.

    ``random`` without ``seed`` draws a seed (``fresh_seed``, for tests, else a random
    one) and keeps it in ``Sweep.seed``, so a dry run's sample can be made again.
    """
    unknown = [key for key in fields if key not in FIELDS]
    if unknown:
        raise SweepError("sweep", f"unknown field {_show(unknown[0])} (fields: "
                                  f"{', '.join(FIELDS)})")
    if "grid" not in fields:
        raise SweepError("grid", "give at least one parameter, like lr=1e-3,1e-4")
    grid = _grid(fields["grid"])
    if "command" not in fields:
        raise SweepError("command", "is required")
    template = parse_template(fields["command"], list(grid))
    size = 1
    for values in grid.values():
        size *= len(values)

    sample = fields.get("random")
    if sample is not None:
        sample = _int("random", sample, 1, MAX_TRIALS)
        if sample > size:
            raise SweepError("random", f"{sample} is more than the grid's {size} points; "
                                       "leave random out to run every point")
    elif size > MAX_TRIALS:
        raise SweepError("grid", f"has {size} points, at most {MAX_TRIALS}; sample some "
                                 "with random")
    seed = fields.get("seed")
    if seed is not None:
        seed = _int("seed", seed, 0)
        if sample is None:
            raise SweepError("seed", "is only for random sampling (give random too)")
    elif sample is not None:
        seed = fresh_seed if fresh_seed is not None else secrets.randbelow(2 ** 32)

    labels_raw = fields.get("labels")
    try:
        labels = (parse_labels(labels_raw) if isinstance(labels_raw, str)
                  else check_labels(labels_raw) if labels_raw is not None else [])
    except SpecError as exc:
        raise SweepError("labels", exc.problem) from None
    drone = fields.get("drone")
    if drone is not None:
        if not isinstance(drone, str):
            raise SweepError("drone", "must be a drone's name")
        try:
            drone = parse_drone_name(drone)
        except SpecError as exc:
            raise SweepError("drone", exc.problem) from None
    if drone is not None and labels:
        raise SweepError("drone", f"give a drone ({drone}) or labels, not both")
    if drone is None and not labels:
        raise SweepError("labels", "give labels (like gpu) or a drone to run the trials on")

    max_parallel = fields.get("max_parallel")
    if max_parallel is not None:
        max_parallel = _int("max_parallel", max_parallel, 1)
    retries = _int("retries", fields.get("retries", 0), 0, MAX_RETRIES)
    retry_on = _exit_codes(fields.get("retry_on", ()))
    stop = fields.get("stop_on_failure", False)
    if not isinstance(stop, bool):
        raise SweepError("stop_on_failure", f"must be true or false, not {_show(stop)}")

    name = fields.get("name")
    try:
        name = check_task_name(name)
    except SpecError as exc:
        raise SweepError("name", exc.problem) from None
    if name is not None and len(name) > MAX_TASK_NAME - 7:
        raise SweepError("name", f"is longer than {MAX_TASK_NAME - 7} characters")
    env_raw = fields.get("env", {})
    try:
        env = check_env(env_raw)
        artifacts = tuple(check_globs(fields.get("artifacts", [])))
    except SpecError as exc:
        raise SweepError(exc.field, exc.problem) from None
    for key in env:
        if key in SET_BY_SWEEP or key.startswith("DRAGOON_PARAM_"):
            raise SweepError("env", f"{key} is set by the sweep for each trial")
    cwd = fields.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise SweepError("cwd", "must be a path")

    sweep = Sweep(grid=grid, template=template, command=fields["command"],
                  labels=tuple(labels), drone=drone, random=sample, seed=seed,
                  max_parallel=max_parallel, retries=retries, retry_on=retry_on,
                  stop_on_failure=stop, name=name,
                  timeout=_seconds("timeout", fields.get("timeout")),
                  grace=_seconds("grace", fields.get("grace")), env=env, cwd=cwd,
                  artifacts=artifacts)
    sweep.spec_for(sweep.point_at(0), "j-" + "a" * 10, 0)  # every other field, by spec's rule
    return sweep


def sweep_fields_from_toml(text: str, *, source: str = "sweep file") -> dict[str, Any]:
    """A sweep file's text → the mapping ``parse_sweep`` takes; bad TOML is one line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError("file", f"{source} is not TOML: {exc}") from None
