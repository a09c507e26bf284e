"""``dragoon notify [--metric NAME=NUMBER]… [TEXT]``: inside a task, one message to the pilot's
inbox, with no login.

It appends one line to ``$DRAGOON_INBOX``, which the drone seals and ships;
newlines in TEXT become spaces so that one call is always one message. TEXT is
held to shared/spec.py's message rule, as the drone holds it (the relay only
ever sees it sealed): blank text, or more than MESSAGE_CAP bytes, is refused
with one line and exit 2. The inbox must be a regular file: anything else (a
FIFO, a device, a symbolic link) is refused with one line and exit 1, never
waited on.

``--metric loss=0.31`` puts ``loss=0.31`` at the head of the message: the documented
``NAME=NUMBER`` form (shared/metrics_text.py) that ``dragoon job`` and the cockpit's job
view read back as the trial's metrics. A value that is not a number is refused at
this door (exit 2), rather than sent and silently not read as a metric.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import NoReturn

import click


@click.command(name="notify")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=NUMBER",
              help="A value to report, like loss=0.31 (repeatable); sent as NAME=NUMBER "
                   "tokens before TEXT.")
@click.argument("text", nargs=-1, required=False)
def notify(metrics: tuple[str, ...], text: tuple[str, ...]) -> None:
    """Inside a task: send TEXT (and --metric values) to the pilot's inbox."""
    from dragoon.shared.metrics_text import MetricError, metrics_message, parse_metric_flag

    try:
        pairs = [parse_metric_flag(metric) for metric in metrics]
    except MetricError as exc:
        click.echo(f"dragoon notify: --metric: {exc} (nothing sent)", err=True)
        sys.exit(2)
    inbox = os.environ.get("DRAGOON_INBOX")
    if not inbox:
        click.echo("dragoon notify: DRAGOON_INBOX is not set (run it inside a dragoon task)",
                   err=True)
        sys.exit(2)
    from dragoon.shared.spec import SpecError, check_message

    message = metrics_message(pairs, " ".join(text)) if pairs else " ".join(text)
    message = message.replace("\r", " ").replace("\n", " ")
    try:
        check_message(message)
    except SpecError as exc:
        click.echo(f"dragoon notify: {exc} (nothing sent)", err=True)
        sys.exit(2)
    line = message + "\n"
    fd = _open_inbox(inbox)
    try:
        os.write(fd, line.encode("utf-8"))  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def _open_inbox(inbox: str) -> int:
    """The inbox, opened for appending only if it is a regular file; else one line and exit 1.

    Never blocks and never follows a link: a FIFO put in its place would hang the
    task (an open for writing waits for a reader), a device or a link would send
    the line somewhere the drone does not ship from.
    """
    try:
        fd = os.open(inbox, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        reason = ("it is a symbolic link" if exc.errno == errno.ELOOP
                  else "it is a FIFO without a reader" if exc.errno == errno.ENXIO
                  else exc.strerror or str(exc))
        _refuse(f"cannot open {inbox}: {reason}")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _refuse(f"{inbox} is not a regular file")
    os.set_blocking(fd, True)  # a regular file: the one write below is whole
    return fd


def _refuse(message: str) -> NoReturn:
    click.echo(f"dragoon notify: {message}", err=True)
    sys.exit(1)
