"""``dragoon jobs``, ``dragoon job JOB``, ``dragoon job cancel JOB``, ``dragoon job retry JOB``.

``dragoon job JOB`` is ``dragoon job show JOB``: a first word that is no
subcommand is the job (``job show cancel`` for a job whose id starts with
``cancel``). The trials table is cockpit/trials.py's.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Connection,
    Duration,
    Fail,
    PilotCommand,
    _SharedRule,
    naming,
    open_client,
    pilot_options,
    run_async,
)
from dragoon.cockpit.cli.drones import PilotGroup
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient

# The --json fields of `dragoon jobs` docs/cli.md promises to keep.
JOB_JSON_FIELDS = ("id", "name", "kind", "state", "trials", "counts")


class JobArg(_SharedRule):
    """A job id or a prefix of one (``j-4jg``, ``4jg``), resolved by ``resolve_job``."""

    name = "JOB"

    def parse(self, text: str) -> str:
        from dragoon.shared.jobs import parse_job_ref

        return parse_job_ref(text)[0]


def progress(job: dict[str, Any]) -> str:
    """``12✓ 3▶ 85… 1✗``: succeeded, running, queued, failed (and cancelled ⊘)."""
    counts = job.get("counts") or {}
    parts = [(counts.get("succeeded", 0), "✓"), (counts.get("running", 0), "▶"),
             (counts.get("queued", 0), "…"), (counts.get("failed", 0), "✗"),
             (counts.get("cancelled", 0), "⊘")]
    return " ".join(f"{n}{mark}" for n, mark in parts if n) or "-"


def _job_row(job: dict[str, Any]) -> list[str]:
    from dragoon.cockpit.cli.render import relative_time
    from dragoon.cockpit.formatting import format_duration

    created, finished = job.get("created_at"), job.get("finished_at")
    took = (finished - created if isinstance(finished, int | float)
            and isinstance(created, int | float) else None)
    return [str(job.get("id")), str(job.get("state", "?")), str(job.get("kind", "?")),
            str(job.get("trials", "?")), progress(job), relative_time(created),
            format_duration(took), str(job.get("name") or "-")]


def _listed(answer: Any) -> list[dict[str, Any]]:
    """``RelayClient.jobs`` as a list of job views, whatever page shape it hands back."""
    found = answer.get("jobs") if isinstance(answer, dict) else getattr(answer, "jobs", answer)
    return [dict(job) for job in found]


@click.command(cls=PilotCommand)
@pilot_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of job objects.")
def jobs(relay: str | None, key: str | None, ca_cert: str | None, limit: int,
         as_json: bool) -> None:
    """List jobs (fan-outs and sweeps), newest first."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found = _listed(await client.jobs(limit=limit))  # type: ignore[attr-defined]
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        render.print_table(["ID", "STATE", "KIND", "TRIALS", "PROGRESS", "CREATED", "TOOK",
                            "NAME"], [_job_row(job) for job in found], state_column=1)

    run_async(go)


class JobGroup(PilotGroup):
    """``job JOB …`` is ``job show JOB …``: the subcommands are found first, else show."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=JobGroup)
def job() -> None:
    """A job's trials (`dragoon job JOB`); `job cancel JOB`, `job retry JOB --failed`."""


async def _resolve(client: RelayClient, ref: str) -> str:
    return str(await client.resolve_job(ref))  # type: ignore[attr-defined]


@job.command(cls=PilotCommand)
@pilot_options
@click.argument("job_ref", metavar="JOB", type=JobArg())
@click.option("--sort", "sort", metavar="FIELD", default=None,
              help="Sort by a column: trial, drone, state, exit, duration, attempt, message, "
                   "a parameter or a metric; -FIELD descending.")
@click.option("--json", "as_json", is_flag=True, help="The job and its trials as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="The trials as CSV.")
def show(relay: str | None, key: str | None, ca_cert: str | None, job_ref: str,
         sort: str | None, as_json: bool, as_csv: bool) -> None:
    """Show a job's trials: parameters, drone, state, exit, time, attempt, last message and
    its metrics (NAME=NUMBER tokens) as columns."""
    if as_json and as_csv:
        from dragoon.cockpit.cli._common import OneLineUsageError

        raise OneLineUsageError("--json and --csv: give one of them")

    async def go() -> None:
        from dragoon.cockpit import trials as T

        async with open_client(Connection(relay, key, ca_cert)) as client:
            job_id = await _resolve(client, job_ref)
            async with naming(job_id):
                view = dict(await client.job(job_id))  # type: ignore[attr-defined]
                tasks = list(await client.job_tasks(job_id))  # type: ignore[attr-defined]
                found = await client.last_job_messages(job_id)  # type: ignore[attr-defined]
            latest = T.latest_in_order(tasks)
            messages = {task_id: str(m["text"]) for task_id, m in found.items() if "text" in m}
        rows = T.trial_rows(latest, messages)
        params, metrics = T.row_columns(rows)
        if sort is not None:
            try:
                rows = T.sort_table(rows, sort, params, metrics)
            except KeyError:
                raise Fail(f"--sort: no column {sort.lstrip('-')!r}; one of "
                           f"{', '.join(T.sort_fields(params, metrics))}", X.USAGE) from None
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json({"job": view, "trials": T.json_safe(rows)})
            return
        if as_csv:
            sys.stdout.write(T.as_csv(rows))
            return
        click.echo(clean(f"job {view.get('id')} ({view.get('kind')}"
                         + (f", {view['name']}" if view.get("name") else "")
                         + f"): {view.get('state')}, {progress(view)}"
                         + (f"; stopped: {view['stopped']}" if view.get("stopped") else "")),
                   err=True)
        headers, cells = T.table(rows)
        render.print_table(headers, cells, state_column=headers.index("STATE"))

    run_async(go)


@job.command(cls=PilotCommand)
@pilot_options
@click.argument("job_ref", metavar="JOB", type=JobArg())
@click.option("--grace", type=Duration("grace"), default=None,
              help="SIGTERM-to-SIGKILL grace of its running tasks [10s].")
def cancel(relay: str | None, key: str | None, ca_cert: str | None, job_ref: str,
           grace: int | None) -> None:
    """Cancel a job: its queued trials at once, its running ones by SIGTERM, grace, SIGKILL."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            job_id = await _resolve(client, job_ref)
            async with naming(job_id):
                view = dict(await client.cancel_job(job_id, grace=grace))  # type: ignore
        click.echo(clean(f"{job_id} cancel requested: {view.get('state')}, {progress(view)}"))

    run_async(go)


def retry_trials(tasks: list[dict[str, Any]]) -> list[Any]:
    """A new attempt of every trial whose latest attempt failed, timed out or was lost:
    the same spec (env and all) on the same target, as ``add_job_tasks`` takes them."""
    from dragoon.cockpit.client import TrialSubmit
    from dragoon.cockpit.trials import FAILED, latest_in_order
    from dragoon.shared.spec import SPEC_FIELDS

    trials = []
    for task in latest_in_order(tasks):
        if task.get("state") not in FAILED:
            continue
        if task.get("sealed"):
            raise Fail(f"trial {task['trial']} ({task.get('id')}) cannot be opened to be "
                       f"sent again: {task['sealed']}", X.FAILURE)
        spec = {k: v for k, v in (task.get("spec") or {}).items() if k in SPEC_FIELDS}
        target = task.get("target") or {}
        trials.append(TrialSubmit(trial=task["trial"], spec=spec, drone=target.get("drone"),
                                  labels=target.get("labels")))
    return trials


@job.command(cls=PilotCommand)
@pilot_options
@click.argument("job_ref", metavar="JOB", type=JobArg())
@click.option("--failed", is_flag=True, required=True,
              help="Retry every trial whose latest attempt failed, timed out or was lost.")
def retry(relay: str | None, key: str | None, ca_cert: str | None, job_ref: str,
          failed: bool) -> None:
    """Run the failed trials of a job again, each as its next attempt."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            job_id = await _resolve(client, job_ref)
            async with naming(job_id):
                tasks = [dict(t) for t in await client.job_tasks(job_id)]  # type: ignore
                trials = retry_trials(tasks)
                if not trials:
                    click.echo(clean(f"{job_id}: no failed trial to retry"), err=True)
                    return
                await client.add_job_tasks(job_id, trials)  # type: ignore[attr-defined]
        numbers = ", ".join(str(t.trial) for t in trials)
        click.echo(clean(f"{job_id}: retrying {len(trials)} trials ({numbers})"))

    run_async(go)
