"""``dragoon sweep``: one task per point of a parameter grid, submitted as one job.

The flags and ``--file sweep.toml`` make one mapping of fields, read by
shared/sweep.py's ``parse_sweep`` (the one parser, the one wording of every
refusal): the file's fields first, each flag given on the line over it
(``--grid`` flags replace the file's whole grid; ``--env`` entries are added to
its env). Each trial's spec is made and checked before anything is sent; the
job id is chosen here (shared/jobs.py), since every trial's sealed env holds it.
``--dry-run`` prints the points and their commands and needs no relay at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from dragoon.cockpit.cli._common import (
    Connection,
    EnvPair,
    OneLineUsageError,
    TargetAndCommand,
    open_client,
    pilot_options,
    run_async,
)
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.shared.sweep import Sweep


def sweep_fields(words: tuple[str, ...], command_words: list[str] | None, *,
                 file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The mapping ``parse_sweep`` reads: the file's fields, then the flags given."""
    from dragoon.shared.sweep import SweepError, sweep_fields_from_toml

    fields: dict[str, Any] = {}
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OneLineUsageError(f"--file {file}: {reason}") from None
        try:
            fields = sweep_fields_from_toml(text, source=file)
        except SweepError as exc:
            raise OneLineUsageError(str(exc)) from None
    if command_words is None:  # no `--`: DRONE, then COMMAND, as for run
        if any(word.startswith("-") for word in words[1:]):
            raise OneLineUsageError("put COMMAND after `--`, e.g. dragoon sweep --grid "
                                    "lr=1,2 --labels gpu -- python train.py --lr {lr}")
        before, command_words = list(words[:1]), list(words[1:])
        if flags.get("labels") is not None and before:  # --labels X COMMAND…
            command_words, before = [*before, *command_words], []
    else:
        before = list(words)
    if len(before) > 1:
        raise OneLineUsageError(f"one DRONE before `--`, not {len(before)} words "
                                f"({' '.join(before)})")
    if before:
        fields["drone"] = before[0]
        fields.pop("labels", None)
    if command_words:
        fields["command"] = " ".join(command_words)
    env = dict(fields.get("env") or {}) if isinstance(fields.get("env"), dict) else fields.get(
        "env")
    for key, value in flags.items():
        if key == "env":
            if value:
                if not isinstance(env, dict):
                    env = {}
                env.update(dict(value))
                fields["env"] = env
        elif key == "grid":
            if value:
                fields["grid"] = list(value)
        elif key == "labels":
            if value is not None:
                fields["labels"] = value
                fields.pop("drone", None)
        elif key in ("stop_on_failure",):
            if value:
                fields[key] = True
        elif key == "artifacts":
            if value:
                fields[key] = list(value)
        elif value is not None:
            fields[key] = value
    return fields


def parse(fields: dict[str, Any]) -> Sweep:
    from dragoon.shared.sweep import SweepError, parse_sweep

    try:
        return parse_sweep(fields)
    except SweepError as exc:
        raise OneLineUsageError(str(exc)) from None


def dry_run(sweep: Sweep, *, as_json: bool) -> None:
    """The points and their commands, in trial order; nothing is sent."""
    points = sweep.points()
    if as_json:
        sys.stdout.write(json.dumps([{"trial": n, "params": point,
                                      "command": sweep.command_for(point)}
                                     for n, point in enumerate(points)], indent=2) + "\n")
        return
    from dragoon.cockpit.cli import render

    where = f"drone {sweep.drone}" if sweep.drone else f"labels {','.join(sweep.labels)}"
    sample = (f", {sweep.random} sampled of {sweep.grid_size} with seed {sweep.seed}"
              if sweep.random is not None else "")
    click.echo(clean(f"dragoon: dry run: {len(points)} trials on {where}{sample}; "
                     "nothing submitted"), err=True)
    render.print_table(["TRIAL", *sweep.grid, "COMMAND"],
                       [[str(n), *point.values(), sweep.command_for(point)]
                        for n, point in enumerate(points)])


async def submit_sweep(client: Any, sweep: Sweep) -> tuple[str, int]:
    """Submit every trial as one job (``RelayClient.submit_job`` sends them in chunks)."""

    from dragoon.cockpit.client import TrialSubmit
    from dragoon.shared.jobs import new_job_id

    job_id = new_job_id()
    trials = [TrialSubmit(trial=n, spec=sweep.spec_for(point, job_id, n), drone=sweep.drone,
                          labels=list(sweep.labels) if sweep.labels else None)
              for n, point in enumerate(sweep.points())]
    made = await client.submit_job(job_id, name=sweep.name, kind="sweep", trials=trials,
                                   max_parallel=sweep.max_parallel, retries=sweep.retries,
                                   retry_on=list(sweep.retry_on),
                                   stop_on_failure=sweep.stop_on_failure)
    return str(made.job.get("id", job_id)), len(trials)


@click.command(cls=TargetAndCommand)
@pilot_options
@click.argument("words", nargs=-1, required=False,
                metavar="(DRONE | --labels a,b) -- COMMAND...")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2",
              help="A parameter and its values (repeatable; the last one varies fastest).")
@click.option("--random", "sample", type=int, default=None, metavar="N",
              help="Run N distinct points drawn from the grid instead of all of them.")
@click.option("--seed", type=int, default=None, metavar="S",
              help="The draw's seed (--random): the same seed, the same points.")
@click.option("--file", "file", metavar="FILE", default=None,
              help="Read the sweep from a TOML file (the same fields); flags override it.")
@click.option("--labels", metavar="LABELS", default=None,
              help="Run each trial on any free drone with all these labels (or DRONE).")
@click.option("--max-parallel", "max_parallel", type=int, default=None, metavar="N",
              help="At most N trials of this job running at once.")
@click.option("--retries", type=int, default=None, metavar="N",
              help="Run a trial again, up to N times, when it ends lost (or --retry-on).")
@click.option("--retry-on", "retry_on", metavar="CODES", default=None,
              help="Exit codes that also get a retry, like 1,137.")
@click.option("--stop-on-failure", "stop_on_failure", is_flag=True,
              help="A trial failed with no retry left: start no more trials.")
@click.option("--name", metavar="TEXT", default=None, help="A name for the job.")
@click.option("--timeout", metavar="DURATION", default=None,
              help="Kill each trial after this long (e.g. 3h).")
@click.option("--grace", metavar="DURATION", default=None,
              help="SIGTERM-to-SIGKILL grace on cancel or time-out [10s].")
@click.option("--env", "env", type=EnvPair(), multiple=True,
              help="Environment variable K=V for every trial (repeatable).")
@click.option("--cwd", metavar="DIR", default=None, help="Working directory on the drone.")
@click.option("--artifact", "artifacts", metavar="GLOB", multiple=True,
              help="Upload files matching GLOB after each trial (repeatable).")
@click.option("--dry-run", "dry", is_flag=True,
              help="Print the points and their commands; submit nothing (no relay needed).")
@click.option("--json", "as_json", is_flag=True,
              help="--dry-run: the trials as JSON; else the job id and trial count as JSON.")
def sweep(relay: str | None, key: str | None, ca_cert: str | None, words: tuple[str, ...],
          grid: tuple[str, ...], sample: int | None, seed: int | None, file: str | None,
          labels: str | None, max_parallel: int | None, retries: int | None,
          retry_on: str | None, stop_on_failure: bool, name: str | None, timeout: str | None,
          grace: str | None, env: tuple[tuple[str, str], ...], cwd: str | None,
          artifacts: tuple[str, ...], dry: bool, as_json: bool) -> None:
    """One task per point of a grid: prints the job id alone on stdout.

    Each {name} in COMMAND is replaced by the point's value, shell-quoted; every
    trial also gets DRAGOON_JOB, DRAGOON_TRIAL, DRAGOON_PARAMS (JSON) and
    DRAGOON_PARAM_<NAME>. Write {{ and }} for literal braces.

    e.g. dragoon sweep --grid lr=1e-3,1e-4 --grid bs=32,64 --labels gpu --
    python train.py --lr {lr} --bs {bs}
    """
    flags: dict[str, Any] = {
        "grid": grid, "random": sample, "seed": seed, "labels": labels,
        "max_parallel": max_parallel, "retries": retries, "retry_on": retry_on,
        "stop_on_failure": stop_on_failure, "name": name, "timeout": timeout, "grace": grace,
        "env": env, "cwd": cwd, "artifacts": artifacts,
    }
    command_words: list[str] | None = click.get_current_context().meta["command_words"]
    made = parse(sweep_fields(words, command_words, file=file, flags=flags))
    if dry:
        dry_run(made, as_json=as_json)
        return

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            job_id, count = await submit_sweep(client, made)
        if as_json:
            sys.stdout.write(json.dumps({"job": job_id, "trials": count}) + "\n")
            return
        click.echo(clean(job_id))
        click.echo(clean(f"dragoon: job {job_id}: {count} trials queued; "
                         f"dragoon job {job_id} shows them"), err=True)

    run_async(go)
