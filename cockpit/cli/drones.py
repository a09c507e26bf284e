"""``dragoon drones [trust]``, ``dragoon enroll`` and ``dragoon drain``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Connection,
    DroneName,
    Duration,
    Fail,
    Labels,
    OneLineUsageError,
    PilotCommand,
    naming,
    one_line_usage,
    open_client,
    open_session,
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


class PilotGroup(click.Group):
    """``dragoon drones [trust …]``: a verb with subcommands, its usage errors one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with one_line_usage(ctx):
            return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, Any]:
        with one_line_usage(ctx):
            return super().resolve_command(ctx, args)


def _say_confirmations(relay: str, found: list[Any]) -> None:
    """Confirm the pending enrollments this listing answers (cockpit/client/enrollments.py):
    each confirmed drone is one line on stderr; a refused one ends the verb, exit 1.
    With no pending file (the usual case) nothing more is imported or read."""
    from dragoon.cockpit.client.config import state_dir

    if not (state_dir() / "pending-enrollments.json").exists():
        return
    from dragoon.cockpit.client.enrollments import confirm

    confirmed, refused = confirm(relay, found)
    for drone in confirmed:
        click.echo(clean(f"dragoon: drone {drone.name} confirmed by its enrollment binding: "
                         f"{drone.fingerprint}, added to known_drones"), err=True)
    if refused:
        for problem in refused[1:]:
            click.echo(f"dragoon: {clean(str(problem))}", err=True)
        raise Fail(str(refused[0]), X.FAILURE)


@click.group(cls=PilotGroup, invoke_without_command=True)
@pilot_options
@click.option("--json", "as_json", is_flag=True, help="One JSON list of drone objects.")
@click.pass_context
def drones(ctx: click.Context, relay: str | None, key: str | None, ca_cert: str | None,
           as_json: bool) -> None:
    """List drones: state, labels, load, running tasks.

    Enrollments this pilot made (`dragoon enroll`) are confirmed on the way: a drone
    whose keys match its binding is added to known_drones; one whose keys do not is
    refused (exit 1). `dragoon drones trust NAME FINGERPRINT` adds a drone by hand.
    """
    if ctx.invoked_subcommand is not None:
        return

    async def go() -> None:
        client, session = open_session(Connection(relay, key, ca_cert))
        async with client:
            found = await client.drones()
        _say_confirmations(session.relay, list(found))
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        rows = [_drone_row(dict(drone), render.relative_time) for drone in found]
        render.print_table(["NAME", "STATE", "LABELS", "LOAD", "TASKS", "SEEN"], rows,
                           state_column=1)

    run_async(go)


@drones.command(cls=PilotCommand)
@pilot_options
@click.argument("name", type=DroneName())
@click.argument("fingerprint")
def trust(relay: str | None, key: str | None, ca_cert: str | None, name: str,
          fingerprint: str) -> None:
    """Believe drone NAME: its key must have FINGERPRINT (SHA256:…, read on the drone's box).

    For a drone this pilot did not enroll itself, or one an admin-minted token joined.
    The drone's X25519 key must be certified by that key; then both go to known_drones.
    """
    if not (fingerprint.startswith("SHA256:") and len(fingerprint) == 50):
        raise OneLineUsageError(f"{fingerprint!r} is not a key fingerprint (SHA256: and 43 "
                                "characters, as `ssh-keygen -lf` prints)")

    async def go() -> None:
        from dragoon.cockpit.client.enrollments import (
            PendingStore,
            TrustMismatch,
            check_fingerprint,
            remember,
        )
        from dragoon.shared.trust import x25519_fingerprint

        client, session = open_session(Connection(relay, key, ca_cert))
        async with client:
            found = {str(d.get("name")): d for d in await client.drones()}
        if name not in found:
            raise Fail(f"no such drone: {name}", X.NOT_FOUND)
        try:
            drone = check_fingerprint(name, fingerprint, found[name])
        except TrustMismatch as exc:
            raise Fail(str(exc), X.FAILURE) from None
        remember(drone)
        PendingStore().drop(session.relay, name)
        click.echo(clean(f"trusted: {name} {drone.fingerprint} (x25519 "
                         f"{x25519_fingerprint(drone.x25519)}), added to known_drones"))

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("name", type=DroneName())
@click.option("--labels", type=Labels(), default=None, help="Labels for the drone: a,b.")
@click.option("--ttl", type=Duration("ttl"), default=None,
              help="How long the token is valid, at most 30d [1h].")
@click.option("--replace", is_flag=True,
              help="NAME may be taken: the new drone replaces it, its running tasks end lost.")
@click.option("--authorize", "authorize", multiple=True, metavar="FILE",
              help="Another pilot public key the drone is to obey (repeatable); yours is "
                   "always in.")
@click.option("--wait", is_flag=True,
              help="After printing the token, wait for the drone to join and confirm its keys.")
def enroll(relay: str | None, key: str | None, ca_cert: str | None, name: str,
           labels: list[str] | None, ttl: int | None, replace: bool,
           authorize: tuple[str, ...], wait: bool) -> None:
    """Mint a one-time join token for a new drone NAME; prints the token alone on stdout.

    On the drone's box: dragoon drone join TOKEN --data DIR

    The token is made here: it carries your key (and the --authorize keys) for the
    drone to obey, and a binding key the relay never sees, with which the drone
    proves its keys to you. `--wait` (or any later `dragoon drones`) checks them
    and adds the drone to known_drones; a drone whose keys do not match is refused.

    A NAME that a drone holds is refused unless --replace; the old drone is then
    stopped when the new one joins (docs/security.md, "Re-enrollment").
    """
    extra = _authorized(authorize)

    async def go() -> None:
        from dragoon.cockpit.client.enrollments import PendingStore, TrustMismatch, pilot_token

        client, session = open_session(Connection(relay, key, ca_cert))
        async with client:
            answer = await client.enroll(name=name, labels=labels, ttl=ttl, replace=replace)
            try:
                token, pending = pilot_token(answer["token"], session.relay,
                                             [session.public_key, *extra],
                                             expires_at=float(answer["expires_at"]),
                                             labels=labels)
            except TrustMismatch as exc:
                raise Fail(str(exc), X.FAILURE) from None
            PendingStore().add(pending)
            click.echo(token)
            if wait:
                sys.stdout.flush()
                await _wait_for_join(client, session.relay, name, pending.expires_at)

    run_async(go)


def _authorized(given: tuple[str, ...]) -> list[str]:
    """The ``--authorize`` keys as OpenSSH lines; a bad one is a usage error (exit 2)."""
    from dragoon.shared.trust import TrustFileError, pilot_keys_from

    lines: list[str] = []
    for item in given:
        try:
            lines += [k.openssh() for k in pilot_keys_from(item)]
        except TrustFileError as exc:
            raise OneLineUsageError(f"--authorize {exc}") from None
    return lines


async def _wait_for_join(client: Any, relay: str, name: str, expires_at: float) -> None:
    """Look at the relay's drones every second until NAME's enrollment is confirmed (exit 0),
    refused (exit 1), or its token expired (exit 1)."""
    import asyncio
    import time

    from dragoon.cockpit.client.enrollments import PendingStore

    until = time.strftime("%H:%M:%S", time.localtime(expires_at))
    click.echo(f"dragoon: waiting for drone {name} to join (its token expires at {until}; "
               "Ctrl-C stops waiting, `dragoon drones` confirms it later)", err=True)
    while True:
        _say_confirmations(relay, list(await client.drones()))
        if not any(p.relay == relay and p.name == name for p in PendingStore().load()):
            return
        if time.time() > expires_at + 5:
            raise Fail(f"drone {name} did not join before its token expired", X.FAILURE)
        await asyncio.sleep(1.0)


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
