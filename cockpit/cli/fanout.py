"""Fan-out: ``submit``/``run`` with ``--each LABELS``, ``--all`` or ``a,b,c``: one task per drone.

The drones are chosen here, from the relay's list: every drone named, or every
one with all the labels, sorted by name (a drone's place in that list is its
trial number). Only online drones that are not draining get a task; the others
are named on stderr (``skipped gpu-3 (offline 2h), gpu-4 (draining)``), never
silently left out, and ``--include-offline`` queues for them too. The tasks are
one job (kind ``fanout``, docs/cli.md), each sealed for its own drone only
(``RelayClient.submit_job``); its env holds ``DRAGOON_JOB`` and ``DRAGOON_TRIAL``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import Fail, Labels, OneLineUsageError, split_target
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import Drone, RelayClient, Task


def fanout_options(*, run: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The fan-out flags of ``submit`` (``run=False``) and ``run``."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--each", "each", type=Labels(at_least_one=True), default=None,
                         metavar="LABELS",
                         help="Once on every online drone with all these labels (a job)."),
            click.option("--all", "every", is_flag=True,
                         help="Once on every online drone (a job)."),
            click.option("--include-offline", is_flag=True,
                         help="With a fan-out: queue for offline and draining drones too."),
            click.option("--json", "as_json", is_flag=True,
                         help="With a fan-out: " + ("one JSON object per task, as each ends."
                                                    if run else "the job and its tasks as "
                                                    "one JSON object.")),
        ]
        if run:
            options.append(click.option(
                "--group", is_flag=True,
                help="With a fan-out: collate identical output per set of drones, at the end "
                     "(dshbak -c), instead of prefixing each line."))
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


@dataclass(frozen=True)
class DroneSelection:
    """Which drones a fan-out is for: by name, by labels, or all of them."""

    names: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    every: bool = False

    def describe(self) -> str:
        if self.every:
            return "any drone"
        if self.labels:
            return f"a drone with labels {','.join(self.labels)}"
        return "drones " + ",".join(self.names)


def selection(words: tuple[str, ...], command_words: list[str] | None, *,
              labels: list[str] | None, each: list[str] | None, every: bool
              ) -> tuple[DroneSelection, list[str]] | None:
    """The fan-out the line asks for and its COMMAND words, or None for one plain task."""
    if each is not None and every:
        raise OneLineUsageError("--each and --all: give one of them")
    if (each is not None or every) and labels is not None:
        raise OneLineUsageError("--labels is for one task on any matching drone; "
                                "--each/--all for one on every drone: give one of them")
    if each is not None or every:
        _, command = split_target(words, command_words, True)
        return DroneSelection(labels=tuple(each or ()), every=every), command
    if labels is not None or not words or "," not in words[0]:
        return None
    from dragoon.shared.spec import SpecError, parse_drone_name

    target, command = split_target(words, command_words, False)
    assert target is not None
    try:
        names = [parse_drone_name(part) for part in target.split(",")]
    except SpecError as exc:
        raise OneLineUsageError(f"in the drone list {target!r}: {exc}") from None
    return DroneSelection(names=tuple(sorted(dict.fromkeys(names)))), command


def refuse_plain_only(*, as_json: bool, include_offline: bool, group: bool = False) -> None:
    """The fan-out flags on a line that is not one: a usage error, not silently ignored."""
    for given, flag in ((as_json, "--json"), (include_offline, "--include-offline"),
                        (group, "--group")):
        if given:
            raise OneLineUsageError(f"{flag} is for a fan-out (--each, --all or a,b,c)")


def _offline_for(drone: Drone, now: float) -> str:
    from dragoon.cockpit.formatting import format_ago

    seen = drone.get("last_seen")
    return f"{drone.get('state', 'offline')} {format_ago(seen, now)}" if seen else str(
        drone.get("state", "offline"))


def choose(found: list[Drone], wanted: DroneSelection, *, include_offline: bool,
           now: float | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """(the drones to queue for, sorted; the ones left out with why). Pure, so tested alone.

    A name in the list that no drone has is exit 4, naming it; labels that no drone has
    are exit 4 too: an empty fan-out is a mistake, never a success of zero tasks.
    """
    now = time.time() if now is None else now
    by_name = {str(d.get("name")): d for d in found}
    if wanted.names:
        missing = [name for name in wanted.names if name not in by_name]
        if missing:
            raise Fail(f"no such drone: {', '.join(missing)}", X.NOT_FOUND)
        matched = [by_name[name] for name in wanted.names]
    else:
        need = set(wanted.labels)
        matched = [d for d in found if need <= set(d.get("labels") or [])]
        if not matched:
            raise Fail(f"no drone has the labels {','.join(wanted.labels)}" if need
                       else "the relay has no drones", X.NOT_FOUND)
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    for drone in sorted(matched, key=lambda d: str(d.get("name"))):
        name = str(drone.get("name"))
        why = (_offline_for(drone, now) if drone.get("state") != "online"
               else "draining" if drone.get("draining") else None)
        if why is None or include_offline:
            chosen.append(name)
        if why is not None:
            skipped.append((name, why))
    return chosen, skipped


def say_skipped(skipped: list[tuple[str, str]], *, queued: bool) -> None:
    if not skipped:
        return
    listed = ", ".join(f"{name} ({why})" for name, why in skipped)
    verb = "queued for" if queued else "skipped"
    hint = " (they start when back)" if queued else " (--include-offline queues for them)"
    click.echo(clean(f"dragoon: {verb} {listed}{hint}"), err=True)


def trial_spec(spec: dict[str, Any], job_id: str, trial: int) -> dict[str, Any]:
    """The task's spec with the job's env: DRAGOON_JOB and DRAGOON_TRIAL (sealed with it)."""
    env = {**spec.get("env", {}), "DRAGOON_JOB": job_id, "DRAGOON_TRIAL": str(trial)}
    return {**spec, "env": env}


@dataclass(frozen=True)
class Launched:
    job: dict[str, Any]
    tasks: list[Task]  # in trial order: tasks[n] runs on drones[n]
    drones: list[str]
    skipped: list[tuple[str, str]]  # left out, with why
    waiting: list[tuple[str, str]]  # queued for, though offline or draining (--include-offline)


async def launch(client: RelayClient, spec: dict[str, Any], wanted: DroneSelection, *,
                 include_offline: bool) -> Launched:
    """Choose the drones, say who is left out, submit the job; its tasks in trial order."""
    from dragoon.cockpit.client import TrialSubmit
    from dragoon.shared.jobs import new_job_id

    chosen, skipped = choose(list(await client.drones()), wanted,
                             include_offline=include_offline)
    say_skipped(skipped, queued=include_offline)
    if not chosen:
        raise Fail(f"no online drone to run on ({wanted.describe()}); "
                   "--include-offline queues for the others", X.FAILURE)
    job_id = new_job_id()
    trials = [TrialSubmit(trial=n, spec=trial_spec(spec, job_id, n), drone=name)
              for n, name in enumerate(chosen)]
    made = await client.submit_job(job_id, name=spec.get("name"), kind="fanout",
                                   trials=trials)
    tasks = sorted(made.tasks, key=lambda t: int(t.get("trial") or 0))
    return Launched(job=dict(made.job), tasks=list(tasks), drones=chosen,
                    skipped=[] if include_offline else skipped,
                    waiting=skipped if include_offline else [])


def print_submitted(launched: Launched, *, as_json: bool) -> None:
    """``submit --each``: the job id alone on stdout, then a task id a line (or one JSON)."""
    if as_json:
        sys.stdout.write(json.dumps({
            "job": launched.job.get("id"),
            "tasks": [{"id": t.get("id"), "drone": name, "trial": n}
                      for n, (t, name) in enumerate(zip(launched.tasks, launched.drones,
                                                        strict=True))],
            "skipped": [{"drone": name, "why": why} for name, why in launched.skipped],
            "waiting": [{"drone": name, "why": why} for name, why in launched.waiting],
        }, sort_keys=True) + "\n")
        return
    click.echo(clean(str(launched.job.get("id"))))
    for task in launched.tasks:
        click.echo(clean(str(task.get("id"))))
