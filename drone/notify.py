"""``dragoon notify TEXT``: inside a task, one message to the pilot's inbox, with no login.

It appends one line to ``$DRAGOON_INBOX``, which the drone ships; newlines in
TEXT become spaces so that one call is always one message.
"""

from __future__ import annotations

import os
import sys

import click


@click.command(name="notify")
@click.argument("text", nargs=-1, required=True)
def notify(text: tuple[str, ...]) -> None:
    """Inside a task: send TEXT to the pilot's inbox."""
    inbox = os.environ.get("DRAGOON_INBOX")
    if not inbox:
        click.echo("dragoon notify: DRAGOON_INBOX is not set (run it inside a dragoon task)",
                   err=True)
        sys.exit(2)
    line = " ".join(text).replace("\r", " ").replace("\n", " ") + "\n"
    try:
        fd = os.open(inbox, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        click.echo(f"dragoon notify: cannot open {inbox}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    try:
        os.write(fd, line.encode("utf-8"))  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)
