"""``run`` over a fan-out: every task followed at once, its lines prefixed, grouped or JSON.

Each task's streams are followed by ``_follow.copy_streams``, the follow of a
single ``run``, into writers of this module instead of the terminal:

- prefixed (the default, like pdsh): each line as ``drone: line``, stdout to
  stdout and stderr to stderr, written when whole (a drone's half line never
  mixes with another's); a last line without a newline is ended at the task's end;
- ``--group`` (like ``dshbak -c``): each drone's output (both streams, as a
  terminal shows them) is kept, and at the end drones with the same output are
  shown once under a header naming them all;
- ``--json``: one JSON object per task, on its own line, as each ends.

Many drones' words share one terminal here, so unlike a single ``run`` each line
goes through the escaping of cockpit/safe_text.py (no escape sequence of one drone
can rewrite another's lines); ``--json`` carries the exact text, JSON-escaped.
The exit code is 0 when every task exited 0, else 1 with a table on stderr of
which drone failed how.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.cli.fanout import Launched
    from dragoon.cockpit.client import RelayClient


class LineWriter(io.RawIOBase):
    """A stream that writes whole lines to ``out``, each as ``prefix`` + the cleaned line."""

    def __init__(self, out: BinaryIO, prefix: str) -> None:
        super().__init__()
        self.out = out
        self.prefix = prefix
        self.partial = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        if lines:
            self.out.write(b"".join(self._line(line) for line in lines))
            self.out.flush()
        return len(chunk)

    def _line(self, line: bytes) -> bytes:
        text = clean(line.decode("utf-8", errors="replace"))
        return f"{self.prefix}{text}\n".encode()

    def end(self) -> None:
        """The task ended: a last line without its newline is written all the same."""
        if self.partial:
            self.out.write(self._line(self.partial))
            self.out.flush()
            self.partial = b""


class Capture(io.RawIOBase):
    """A stream kept in memory (``--group`` and ``--json`` show it at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.data += chunk
        return len(chunk)


def groups(outputs: Sequence[tuple[str, bytes]]) -> list[tuple[list[str], bytes]]:
    """Drones with the same output together, in the order of each group's first drone."""
    found: dict[bytes, list[str]] = {}
    for drone, output in outputs:
        found.setdefault(output, []).append(drone)
    return [(drones, output) for output, drones in found.items()]


def group_text(outputs: Sequence[tuple[str, bytes]]) -> str:
    """dshbak -c's layout: a header naming the drones between rules, then their lines."""
    parts: list[str] = []
    for drones, output in groups(outputs):
        names = ",".join(drones)
        rule = "-" * max(16, len(names))
        parts.append(f"{rule}\n{clean(names)}\n{rule}\n")
        text = output.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        parts.extend(clean(line) + "\n" for line in lines)
        if not lines:
            parts.append("(no output)\n")
    return "".join(parts)


def exit_text(task: dict[str, Any]) -> str:
    code, sig = task.get("exit_code"), task.get("signal")
    return f"sig {sig}" if sig else ("-" if code is None else str(code))


def failed(task: dict[str, Any]) -> bool:
    return not (task.get("state") == "succeeded" and task.get("exit_code") == 0)


def summary_rows(ended: Sequence[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One row per task that did not exit 0: drone, state, exit code or signal, error."""
    return [[drone, str(task.get("state", "?")), exit_text(task),
             str(task.get("error") or "-")] for drone, task in ended if failed(task)]


def task_json(drone: str, trial: int, task: dict[str, Any], stdout: bytes,
              stderr: bytes, note: str | None) -> str:
    return json.dumps({
        "id": task.get("id"), "job": task.get("job"), "trial": trial, "drone": drone,
        "state": task.get("state"), "exit_code": task.get("exit_code"),
        "signal": task.get("signal"), "error": task.get("error") or note,
        "stdout": stdout.decode("utf-8", errors="replace"),
        "stderr": stderr.decode("utf-8", errors="replace"),
    }, sort_keys=True)


async def follow_fanout(client: RelayClient, launched: Launched, *, group: bool,
                        as_json: bool) -> int:
    """Follow every task of the fan-out to its end; the exit code of ``run``."""
    from dragoon.cockpit.cli._follow import OutputClosed, _silence, copy_streams
    from dragoon.cockpit.cli._queue import STOP_SIGNALS, signal_name
    from dragoon.cockpit.client import RelayError
    from dragoon.shared.e2e import E2EError

    job_id = str(launched.job.get("id"))
    width = max(len(name) for name in launched.drones)
    notes: dict[str, str] = {}
    kept: dict[str, dict[str, Capture]] = {}
    ended: dict[str, dict[str, Any]] = {}

    async def one(n: int, drone: str, task_id: str) -> None:
        writers: dict[str, Any]
        if as_json:
            writers = {"stdout": Capture(), "stderr": Capture()}
        elif group:
            both = Capture()
            writers = {"stdout": both, "stderr": both}
        else:
            prefix = f"{drone}: ".ljust(width + 2)
            writers = {"stdout": LineWriter(sys.stdout.buffer, prefix),
                       "stderr": LineWriter(sys.stderr.buffer, prefix)}
        kept[task_id] = writers
        try:
            await copy_streams(client, task_id, cast(dict[str, BinaryIO], writers))
        except (RelayError, E2EError) as exc:  # this task's output only: the others go on
            notes[task_id] = f"output: {exc}"
        finally:
            for writer in writers.values():
                if isinstance(writer, LineWriter):
                    writer.end()
        task = dict(await client.task(task_id=task_id))
        ended[task_id] = task
        if as_json:
            sys.stdout.write(task_json(drone, n, task, bytes(writers["stdout"].data),
                                       bytes(writers["stderr"].data), notes.get(task_id))
                             + "\n")
            sys.stdout.flush()

    loop = asyncio.get_running_loop()
    caught: asyncio.Queue[int] = asyncio.Queue()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, caught.put_nowait, signum)
    follows = [asyncio.ensure_future(one(n, drone, str(task.get("id"))))
               for n, (drone, task) in enumerate(zip(launched.drones, launched.tasks,
                                                     strict=True))]
    everything = asyncio.ensure_future(asyncio.gather(*follows))
    waiter = asyncio.ensure_future(caught.get())
    try:
        done, _ = await asyncio.wait({everything, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if everything not in done:
            signum = waiter.result()
            click.echo(clean(f"dragoon: {signal_name(signum)}: detached; job {job_id} goes "
                             f"on: dragoon job {job_id} (or dragoon job cancel {job_id})"),
                       err=True)
            return 128 + signum
        try:
            everything.result()
        except OutputClosed as closed:  # `| head`: like a single run, the job is cancelled
            _silence(closed.out)
            with contextlib.suppress(RelayError):
                await client.cancel_job(job_id)  # type: ignore[attr-defined]
            return X.PIPE_CLOSED
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        for pending in (*follows, everything, waiter):
            if not pending.done():
                pending.cancel()
    in_order = [(drone, ended[str(task.get("id"))])
                for drone, task in zip(launched.drones, launched.tasks, strict=True)]
    if group:
        sys.stdout.write(group_text([(drone, bytes(kept[str(t.get("id"))]["stdout"].data))
                                     for drone, t in zip(launched.drones, launched.tasks,
                                                         strict=True)]))
        sys.stdout.flush()
    for task_id, note in notes.items():
        click.echo(clean(f"dragoon: {task_id}: {note}"), err=True)
    from dragoon.cockpit.cli.fanout import say_skipped

    say_skipped(launched.skipped, queued=False)
    rows = summary_rows(in_order)
    if not rows:
        return X.OK
    from dragoon.cockpit.cli import render

    sys.stdout.flush()
    click.echo(f"dragoon: {len(rows)} of {len(in_order)} tasks of job {job_id} did not exit 0:",
               err=True)
    render.print_table(["DRONE", "STATE", "EXIT", "ERROR"], rows, state_column=1, err=True)
    return X.FAILURE
