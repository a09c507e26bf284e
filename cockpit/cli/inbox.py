"""``dragoon inbox``: messages that tasks sent to the pilot."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Connection,
    PilotCommand,
    open_client,
    pilot_options,
    run_async,
)
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient
    from dragoon.cockpit.client._retry import RetryHook


async def _ack(client: RelayClient, ids: list[int], on_retry: RetryHook) -> None:
    """Acknowledge, retrying through a relay restart: acking twice is harmless, and a
    follower that died on a refused ack would end ``inbox -f`` for a passing outage."""
    from dragoon.cockpit.client import Backoff, RelayError

    backoff = Backoff(on_retry=on_retry)
    while True:
        try:
            await client.ack(ids=ids)
            return
        except RelayError as exc:
            await backoff.wait(exc)


def _line(message: dict[str, Any]) -> str:
    """One message on one line, as safe text: a task wrote it (cockpit/safe_text.py)."""
    from dragoon.cockpit.cli.render import message_text, relative_time

    fields = (message.get("drone", "-"), message.get("task", "-"), message_text(message))
    return "  ".join([relative_time(message.get("created_at")), *map(clean, fields)])


@click.command(cls=PilotCommand)
@pilot_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new messages as they come.")
@click.option("--no-ack", is_flag=True, help="Leave the messages unread.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON list of messages (with -f: one JSON object per line).")
def inbox(relay: str | None, key: str | None, ca_cert: str | None, follow: bool, no_ack: bool,
          as_json: bool) -> None:
    """Read (or follow) unread messages from tasks; they are marked read unless --no-ack."""

    async def go() -> int:
        from dragoon.cockpit.cli._follow import on_retry

        async with open_client(Connection(relay, key, ca_cert)) as client:
            unread = [dict(m) for m in await client.messages(unread=True, limit=1000)]
            if as_json and not follow:
                from dragoon.cockpit.cli.render import print_json

                print_json(unread)
            for message in unread:
                if follow and as_json:
                    print(json.dumps(message, sort_keys=True), flush=True)
                elif not as_json:
                    print(_line(message), flush=True)
            if unread and not no_ack:
                ids = [m["id"] for m in unread]
                await (_ack(client, ids, on_retry) if follow else client.ack(ids=ids))
            if not follow:
                return X.OK
            after = max((m["id"] for m in unread), default=None)
            async for message in client.follow_messages(after=after, on_retry=on_retry):
                text = json.dumps(dict(message), sort_keys=True) if as_json else _line(
                    dict(message))
                print(text, flush=True)
                if not no_ack:
                    await _ack(client, [message["id"]], on_retry)
        return X.OK

    sys.exit(run_async(go))
