"""``dragoon drones`` and ``dragoon enroll``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from dragoon.cockpit.cli._common import (
    Connection,
    DroneName,
    Duration,
    Labels,
    PilotCommand,
    naming,
    open_client,
    pilot_options,
    run_async,
)
from dragoon.cockpit.safe_text import clean

# The --json fields docs/cli.md promises to keep (tests/cli hold the output to them).
DRONE_JSON_FIELDS = ("name", "state", "labels")


def _load(metrics: object) -> str:
    """The 1-minute load a drone reported, or ``-``: metrics are the drone's JSON, any shape."""
    load = metrics.get("load") if isinstance(metrics, dict) else None
    first = load[0] if isinstance(load, list) and load else None
    if isinstance(first, bool) or not isinstance(first, int | float) or first != first:
        return "-"
    return f"{first:.2f}"


def _drone_row(drone: dict[str, Any], relative_time: Callable[[Any], str]) -> list[str]:
    """A row of ``dragoon drones``; the table makes every cell safe text."""
    state = str(drone.get("state", "?")) + (" (draining)" if drone.get("draining") else "")
    labels = drone.get("labels")
    return [str(drone.get("name", "?")), state,
            ",".join(map(str, labels)) if isinstance(labels, list) and labels else "-",
            _load(drone.get("metrics")), f"{drone.get('running', 0)}/{drone.get('slots', '?')}",
            relative_time(drone.get("last_seen"))]


@click.command(cls=PilotCommand)
@pilot_options
@click.option("--json", "as_json", is_flag=True, help="One JSON list of drone objects.")
def drones(relay: str | None, key: str | None, ca_cert: str | None, as_json: bool) -> None:
    """List drones: state, labels, load, running tasks."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found = await client.drones()
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        rows = [_drone_row(dict(drone), render.relative_time) for drone in found]
        render.print_table(["NAME", "STATE", "LABELS", "LOAD", "TASKS", "SEEN"], rows,
                           state_column=1)

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("name", type=DroneName())
@click.option("--labels", type=Labels(), default=None, help="Labels for the drone: a,b.")
@click.option("--ttl", type=Duration("ttl"), default=None,
              help="How long the token is valid, at most 30d [1h].")
@click.option("--replace", is_flag=True,
              help="NAME may be taken: the new drone replaces it, its running tasks end lost.")
def enroll(relay: str | None, key: str | None, ca_cert: str | None, name: str,
           labels: list[str] | None, ttl: int | None, replace: bool) -> None:
    """Mint a one-time join token for a new drone NAME; prints the token alone on stdout.

    On the drone's box: dragoon drone join TOKEN --data DIR

    A NAME that a drone holds is refused unless --replace; the old drone is then
    stopped when the new one joins (docs/security.md, "Re-enrollment").
    """

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            answer = await client.enroll(name=name, labels=labels, ttl=ttl, replace=replace)
        click.echo(clean(answer["token"]))  # the relay's answer: a token is plain text

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("name")
@click.option("--undo", is_flag=True, help="Take the drone out of drain: it takes work again.")
@click.option("--json", "as_json", is_flag=True, help="The drone object as JSON.")
def drain(relay: str | None, key: str | None, ca_cert: str | None, name: str, undo: bool,
          as_json: bool) -> None:
    """Drain drone NAME: it finishes what it runs and takes nothing new (--undo reverses it).

    The way to empty a box before maintenance without cancelling anything.
    """

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client, naming(name):
            found = await client.drain(drone=name, drain=not undo)
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        state = "draining" if found.get("draining") else "taking work"
        click.echo(clean(f"{found['name']}: {state} ({found.get('running', 0)} running)"))

    run_async(go)
