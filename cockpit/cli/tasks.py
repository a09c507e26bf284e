"""``dragoon submit``, ``run``, ``tasks``, ``task``, ``logs`` and ``cancel``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Connection,
    DroneName,
    Duration,
    EnvPair,
    Fail,
    Labels,
    OneLineUsageError,
    PilotCommand,
    TargetAndCommand,
    TaskArg,
    naming,
    open_client,
    pilot_options,
    run_async,
    split_target,
)
from dragoon.cockpit.cli.fanout import fanout_options
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient, Task

# The --json fields docs/cli.md promises to keep (tests/cli hold the output to them).
TASK_JSON_FIELDS = ("id", "state", "drone", "name", "exit_code")


def _submit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        pilot_options,
        click.argument("words", nargs=-1, required=False, metavar="(DRONE | --labels a,b) -- "
                                                                  "COMMAND..."),
        click.option("--labels", type=Labels(at_least_one=True), default=None,
                     help="Run on any drone that has all these labels (instead of DRONE)."),
        click.option("--timeout", type=Duration("timeout"), default=None,
                     help="Kill the task after this long (e.g. 3h)."),
        click.option("--grace", type=Duration("grace"), default=None,
                     help="SIGTERM-to-SIGKILL grace on cancel or time-out [10s]."),
        click.option("--cwd", metavar="DIR", default=None,
                     help="Working directory on the drone."),
        click.option("--env", "env", type=EnvPair(), multiple=True,
                     help="Environment variable K=V (repeatable)."),
        click.option("--artifact", "artifacts", metavar="GLOB", multiple=True,
                     help="Upload files matching GLOB (relative to the working directory) "
                          "after exit (repeatable)."),
        click.option("--name", metavar="TEXT", default=None, help="A name for the task."),
        click.option("--start-within", "start_within", type=Duration("start_within"),
                     default=None,
                     help="Cancel the task if no drone has taken it this soon (e.g. 30s); "
                          "the relay enforces it."),
    ]):
        command = decorator(command)
    return command


def _command_words() -> list[str] | None:
    """The words the pilot gave after `--`, as TargetAndCommand parsed them."""
    words: list[str] | None = click.get_current_context().meta["command_words"]
    return words


def _target_and_spec(words: tuple[str, ...], labels: list[str] | None, timeout: int | None,
                     grace: int | None, cwd: str | None, env: tuple[tuple[str, str], ...],
                     artifacts: tuple[str, ...], name: str | None, *, stdin: bool = False,
                     command_words: list[str] | None = None
                     ) -> tuple[str | None, dict[str, Any]]:
    """The drone (None with --labels) and the spec; COMMAND is joined with spaces, as ssh does.

    The drone name and the whole spec are checked by shared/spec.py, the rule
    the relay applies, so a spec it would refuse is a usage error here (exit 2)
    with the relay's own reason, and nothing is sent. ``command_words`` are the
    words after `--` (TargetAndCommand keeps them); None when there was no `--`.
    """
    from dragoon.shared.spec import SpecError, parse_drone_name

    drone, command = split_target(words, command_words, labels is not None)
    spec = _spec(command, timeout, grace, cwd, env, artifacts, name, stdin=stdin)
    try:
        if drone is not None:
            drone = parse_drone_name(drone)
    except SpecError as exc:
        raise OneLineUsageError(str(exc)) from None
    return drone, spec


def _spec(command: list[str], timeout: int | None, grace: int | None, cwd: str | None,
          env: tuple[tuple[str, str], ...], artifacts: tuple[str, ...], name: str | None, *,
          stdin: bool = False) -> dict[str, Any]:
    """The spec of COMMAND and the flags, checked by shared/spec.py (a usage error if bad)."""
    from dragoon.shared.spec import SpecError, parse_spec

    spec: dict[str, Any] = {"command": " ".join(command), "env": dict(env),
                            "artifacts": list(artifacts)}
    for field, value in (("cwd", cwd), ("timeout", timeout), ("grace", grace), ("name", name)):
        if value is not None:
            spec[field] = value
    if stdin:
        spec["stdin"] = True
    try:
        parse_spec(spec)
    except SpecError as exc:
        raise OneLineUsageError(str(exc)) from None
    return spec


def _fanout(words: tuple[str, ...], labels: list[str] | None, each: list[str] | None,
            every: bool, start_within: int | None) -> tuple[Any, list[str]] | None:
    """The fan-out this line asks for (cli/fanout.py) and its COMMAND, or None."""
    from dragoon.cockpit.cli.fanout import selection

    found = selection(words, _command_words(), labels=labels, each=each, every=every)
    if found is not None and start_within is not None:
        raise OneLineUsageError("--start-within is for one task, not a fan-out")
    return found


@click.command(cls=TargetAndCommand)
@_submit_options
@fanout_options(run=False)
def submit(relay: str | None, key: str | None, ca_cert: str | None, words: tuple[str, ...],
           labels: list[str] | None, timeout: int | None, grace: int | None, cwd: str | None,
           env: tuple[tuple[str, str], ...], artifacts: tuple[str, ...],
           name: str | None, start_within: int | None, each: list[str] | None, every: bool,
           include_offline: bool, as_json: bool) -> None:
    """Queue a command on a drone; prints the task id alone on stdout.

    If it cannot start now, one line on stderr says why. With --start-within,
    waits until a drone takes it: exit 1 if none did in time (the relay cancels it).

    A fan-out (--each LABELS, --all, or DRONE as a,b,c) queues one task per online
    drone as one job: prints the job id, then the task ids, one a line.
    """
    fanout = _fanout(words, labels, each, every, start_within)
    if fanout is not None:
        wanted, command = fanout
        spec = _spec(command, timeout, grace, cwd, env, artifacts, name)

        async def go_fanout() -> None:
            from dragoon.cockpit.cli.fanout import launch, print_submitted

            async with open_client(Connection(relay, key, ca_cert)) as client:
                launched = await launch(client, spec, wanted, include_offline=include_offline)
            print_submitted(launched, as_json=as_json)

        run_async(go_fanout)
        return
    from dragoon.cockpit.cli.fanout import refuse_plain_only

    refuse_plain_only(as_json=as_json, include_offline=include_offline)
    drone, spec = _target_and_spec(words, labels, timeout, grace, cwd, env, artifacts, name,
                                   command_words=_command_words())

    async def go() -> int:
        from dragoon.cockpit.cli._queue import QueueWatch, wait_for_start

        async with open_client(Connection(relay, key, ca_cert)) as client:
            task = await _submit(client, spec, drone, labels, start_within)
            click.echo(clean(task["id"]))
            sys.stdout.flush()
            if start_within is None:
                QueueWatch(client, task).say()
                return X.OK
            return await wait_for_start(client, task)

    sys.exit(run_async(go))


@click.command(cls=TargetAndCommand)
@_submit_options
@fanout_options(run=True)
@click.option("--cancel-on-interrupt", is_flag=True,
              help="Ctrl-C cancels the task instead of detaching from it.")
@click.option("-i", "--stdin", "interactive", is_flag=True,
              help="Forward stdin even when it is a terminal (Ctrl-D ends it).")
@click.option("-n", "--no-stdin", "no_stdin", is_flag=True,
              help="Forward no stdin, even from a pipe or file: the task reads EOF (ssh -n).")
def run(relay: str | None, key: str | None, ca_cert: str | None, words: tuple[str, ...],
        labels: list[str] | None, timeout: int | None, grace: int | None, cwd: str | None,
        env: tuple[tuple[str, str], ...], artifacts: tuple[str, ...], name: str | None,
        start_within: int | None, each: list[str] | None, every: bool, include_offline: bool,
        as_json: bool, group: bool, cancel_on_interrupt: bool, interactive: bool,
        no_stdin: bool) -> None:
    """Submit, stream the output, exit with the task's code.

    Like `ssh host cmd`: stdout to stdout, stderr to stderr, as produced; the
    exit code is the task's (128 + N for signal N) and 255 when dragoon itself
    failed. While the task waits, stderr says why; Ctrl-C then cancels it. Once
    it started, Ctrl-C detaches (exit 130) and the task goes on. A piped or
    redirected stdin is the task's stdin; a terminal is not, unless -i.

    A fan-out (--each LABELS, --all, or DRONE as a,b,c) runs it once on every online
    drone: each line prefixed `drone: ` (or --group, or --json); exit 0 only if every
    task exited 0, else 1 and a table on stderr of which drone failed how.
    """
    from dragoon.cockpit.cli._stdin import wants_stdin

    fanout = _fanout(words, labels, each, every, start_within)
    if fanout is not None:
        if interactive or cancel_on_interrupt:
            raise OneLineUsageError("-i and --cancel-on-interrupt are for one task, not a "
                                    "fan-out (`dragoon job cancel JOB` cancels its tasks)")
        if group and as_json:
            raise OneLineUsageError("--group and --json: give one of them")
        wanted, command = fanout
        spec = _spec(command, timeout, grace, cwd, env, artifacts, name)

        async def go_fanout() -> int:
            from dragoon.cockpit.cli._fanout_run import follow_fanout
            from dragoon.cockpit.cli.fanout import launch

            async with open_client(Connection(relay, key, ca_cert)) as client:
                launched = await launch(client, spec, wanted, include_offline=include_offline)
                return await follow_fanout(client, launched, group=group, as_json=as_json)

        sys.exit(run_async(go_fanout))  # exit 0/1 are the tasks', the rest dragoon's
    from dragoon.cockpit.cli.fanout import refuse_plain_only

    refuse_plain_only(as_json=as_json, include_offline=include_offline, group=group)

    feed = wants_stdin(interactive=interactive, no_stdin=no_stdin)
    drone, spec = _target_and_spec(words, labels, timeout, grace, cwd, env, artifacts, name,
                                   stdin=feed, command_words=_command_words())

    async def go() -> int:
        from dragoon.cockpit.cli._follow import attach, default_streams, task_exit_code
        from dragoon.cockpit.cli._stdin import StdinFeed

        async with open_client(Connection(relay, key, ca_cert)) as client:
            task = await _submit(client, spec, drone, labels, start_within)
            stdin = StdinFeed(client, task["id"]) if feed else None
            feeding = asyncio.ensure_future(stdin.run()) if stdin is not None else None
            try:
                detached = await attach(client, task["id"], streams=default_streams(),
                                        cancel_on_interrupt=cancel_on_interrupt, queued=task,
                                        owned=True)
            finally:
                if feeding is not None:
                    feeding.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeding
            if detached is not None and stdin is not None:
                await stdin.close()
            if detached is not None:
                return detached
            ended = await client.task(task_id=task["id"])
            for note in task_notes(dict(ended)):
                click.echo(f"dragoon: {clean(note)}", err=True)
            return task_exit_code(ended)

    sys.exit(run_async(go, own_failure=X.RUN_OWN_FAILURE))


def task_notes(task: dict[str, Any]) -> list[str]:
    """What the drone said about the task without failing it (e.g. an artifact pattern that
    matched nothing): the relay's ``notes``, a list of lines; anything else is none."""
    notes = task.get("notes")
    return [str(note) for note in notes] if isinstance(notes, list) else []


async def _submit(client: RelayClient, spec: dict[str, Any], drone: str | None,
                  labels: list[str] | None, start_within: int | None) -> Task:
    """Submit; a relay that ignored ``start_within`` (one older than the flag) would keep the
    task queued past the deadline with nobody to cancel it: it is cancelled and refused."""
    async with naming(drone):
        task = await client.submit(spec=spec, drone=drone,  # type: ignore[arg-type]
                                   labels=labels, start_within=start_within)
    if start_within is not None and task.get("start_by") is None:
        await client.cancel(task_id=task["id"])
        raise Fail(f"this relay does not keep --start-within deadlines (too old); "
                   f"{task['id']} was cancelled", X.FAILURE)
    return task


def _task_row(task: dict[str, Any]) -> list[str]:
    from dragoon.cockpit.cli.render import relative_time

    code = task.get("exit_code")
    sig = task.get("signal")
    exit_text = f"sig {sig}" if sig else ("-" if code is None else str(code))
    return [task["id"], task.get("state", "?"), task.get("drone") or "-",
            exit_text, relative_time(task.get("created_at")),
            task.get("name") or task.get("spec", {}).get("command", "")]


@click.command(cls=PilotCommand)
@pilot_options
@click.option("--drone", metavar="D", type=DroneName(), default=None,
              help="Only this drone's tasks (a name no drone has is exit 4).")
@click.option("--state", metavar="S", default=None,
              type=click.Choice(["queued", "dispatched", "running", "succeeded", "failed",
                                 "timed_out", "cancelled", "lost"]),
              help="Only tasks in this state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of task objects.")
def tasks(relay: str | None, key: str | None, ca_cert: str | None, drone: str | None,
          state: str | None, limit: int, as_json: bool) -> None:
    """List tasks, newest first."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client, naming(drone):
            page = await client.tasks(drone=drone, state=state, limit=limit)
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(page.tasks)
            return
        render.print_table(["ID", "STATE", "DRONE", "EXIT", "CREATED", "NAME / COMMAND"],
                           [_task_row(dict(t)) for t in page.tasks], state_column=1)

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("task_id", metavar="TASK", type=TaskArg())
@click.option("--json", "as_json", is_flag=True, help="The task object as JSON.")
def task(relay: str | None, key: str | None, ca_cert: str | None, task_id: str,
         as_json: bool) -> None:
    """Show one task."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found_id = await client.resolve_task(task_id)
            async with naming(found_id):
                found = dict(await client.task(task_id=found_id))
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        spec = found.get("spec") or {}
        target = found.get("target") or {}
        fields = [
            ("id", found["id"]),
            ("name", found.get("name") or "-"),
            ("state", found.get("state", "?")
             + (" (cancel requested)" if found.get("cancel_requested") else "")),
            ("drone", found.get("drone") or f"(labels {','.join(target.get('labels', []))})"),
            ("command", spec.get("command", "") if not found.get("sealed")
             else f"(sealed: {found['sealed']})"),
            ("exit code", "-" if found.get("exit_code") is None else str(found["exit_code"])),
            ("signal", str(found["signal"]) if found.get("signal") else "-"),
            ("created", render.relative_time(found.get("created_at"))),
            ("started", render.relative_time(found.get("started_at"))),
            ("finished", render.relative_time(found.get("finished_at"))),
            ("cpu", "-" if found.get("cpu_seconds") is None
             else f"{found['cpu_seconds']:.1f} s"),
            ("peak memory", render.human_size(found.get("peak_rss"))),
            ("output", f"{render.human_size(found.get('stdout_size', 0))} stdout, "
                       f"{render.human_size(found.get('stderr_size', 0))} stderr"),
        ]
        if found.get("waiting") and found.get("state") == "queued":
            from dragoon.cockpit.waiting import describe

            fields.insert(3, ("waiting", describe(found["waiting"])))
        if found.get("start_by") and found.get("state") == "queued":
            fields.insert(4, ("start by", render.relative_time(found["start_by"])
                              + " (else cancelled)"))
        if found.get("error"):
            fields.append(("error", found["error"]))
        if found.get("cancel_refused"):  # the drone refused a cancel's signed order
            fields.append(("cancel", str(found["cancel_refused"])))
        fields += [("note", str(note)) for note in task_notes(found)]
        render.print_fields(fields, state=found.get("state"))

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("task_id", metavar="TASK", type=TaskArg())
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the task ends.")
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), default=None,
              help="Only this stream, printed on stdout.")
def logs(relay: str | None, key: str | None, ca_cert: str | None, task_id: str,
         follow: bool, stream: str | None) -> None:
    """Print (or follow) a task's output: stdout to stdout, stderr to stderr."""

    async def go() -> int:
        from dragoon.cockpit.cli._follow import attach, default_streams, print_streams

        streams = default_streams()
        if stream is not None:
            streams = {stream: sys.stdout.buffer}
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found_id = await client.resolve_task(task_id)
            async with naming(found_id):
                seen = await client.task(task_id=found_id)  # unknown: an error, not silence
                if follow:  # a queued task: say why it waits
                    detached = await attach(client, found_id, streams=streams,
                                            detach_hint=False, queued=seen)
                    return detached or X.OK
                await print_streams(client, found_id, streams)  # both: in the order written
        return X.OK

    sys.exit(run_async(go))


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("task_id", metavar="TASK", type=TaskArg())
@click.option("--grace", type=Duration("grace"), default=None,
              help="Seconds between SIGTERM and SIGKILL [the task's own, 10s].")
def cancel(relay: str | None, key: str | None, ca_cert: str | None, task_id: str,
           grace: int | None) -> None:
    """Cancel a task: SIGTERM to its process group, the grace period, then SIGKILL."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found_id = await client.resolve_task(task_id)
            async with naming(found_id):
                found = await client.cancel(task_id=found_id, grace=grace)
        state = found.get("state")
        if state == "cancelled":
            line = f"{found_id} cancelled"
        elif found.get("cancel_requested"):
            line = f"{found_id} cancel requested ({state})"
        else:
            line = f"{found_id} is already {state}"
        click.echo(clean(line))

    run_async(go)
