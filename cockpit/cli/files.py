"""``dragoon artifacts``, ``artifact`` and ``fetch``: files from tasks and drones.

Files come sealed end to end (shared/sealed_files.py): downloads are opened
record by record into a hidden part file, checked against the SHA-256 of the
sealed metadata the drone made, and only then take their name; an existing
file is never replaced unless told ``--force``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Connection,
    Fail,
    PilotCommand,
    TaskArg,
    naming,
    open_client,
    pilot_options,
    run_async,
)
from dragoon.cockpit.safe_text import clean

OnProgress = Callable[[int, int | None], None]


@asynccontextmanager
async def progress_bar(label: str) -> AsyncIterator[OnProgress | None]:
    """A rich progress bar on stderr when it is a terminal; nothing when it is not.

    ``label`` is a remote path (a drone named the file): safe text, never markup.
    """
    import sys

    from dragoon.cockpit.cli.render import is_terminal

    if not is_terminal(sys.stderr):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    description = TextColumn("{task.description}", style="progress.description", markup=False)
    with Progress(description, BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(clean(label), total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


STDOUT = "-"  # ``-o -``: the file's bytes to stdout


async def save(output: str | None, remote_path: str, force: bool,
               download: Callable[[Path, bool], Awaitable[Path]], *, note: str = "") -> None:
    """Run ``download(dest, force)`` to ``-o FILE``/``-o DIR``/here, or to stdout for ``-o -``.

    For stdout the file lands in a private temp dir first and is copied out only
    once its SHA-256 checked: a corrupt or cut download never reaches the pipe,
    and stdout carries the file's bytes and nothing else (the one line of a
    failure goes to stderr, as always).
    """
    if output != STDOUT:
        saved = await download(_destination(output, remote_path), force)
        click.echo(clean(f"saved {saved}{note}"), err=True)
        return
    import shutil
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dragoon-") as tmp:
        saved = await download(Path(tmp) / "download", True)
        with open(saved, "rb") as src:
            shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()


def check_output(output: str | None, remote_path: str) -> None:
    """Refuse, before any request, an ``-o`` the download could not go to.

    ``-o -`` on a terminal is refused (exit 2), as curl does: the file is a
    task's bytes, and raw on a terminal its escape sequences would act
    (docs/security.md, "Untrusted text is data"). Pipe or redirect it.
    """
    import sys

    if output != STDOUT:
        _destination(output, remote_path)
    elif sys.stdout.isatty():
        raise Fail("-o - writes the file's raw bytes and stdout is a terminal: pipe or "
                   "redirect it (-o - | xxd, -o - > FILE)", X.USAGE)


def _destination(output: str | None, remote_path: str) -> Path:
    """``-o FILE``, or the remote file's name inside ``-o DIR`` or the current directory."""
    if output is not None and not Path(output).is_dir():
        return Path(output)
    name = PurePosixPath(remote_path).name
    if not name:
        raise Fail(f"cannot name a file after {remote_path!r}: pass -o FILE", X.USAGE)
    return Path(output or ".") / name


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("task_id", metavar="TASK", type=TaskArg())
@click.option("--json", "as_json", is_flag=True, help="One JSON list of artifact objects.")
def artifacts(relay: str | None, key: str | None, ca_cert: str | None, task_id: str,
              as_json: bool) -> None:
    """List a task's artifacts."""

    async def go() -> None:
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found_id = await client.resolve_task(task_id)
            async with naming(found_id):
                found = await client.artifacts(task_id=found_id)
        from dragoon.cockpit.cli import render

        if as_json:
            render.print_json(found)
            return
        render.print_table(
            ["PATH", "SIZE", "SHA256", "UPLOADED"],
            [[a["path"] if not a.get("sealed") else f"{a['path']} (does not open: "
              f"{a['sealed']})", render.human_size(a.get("size")), a.get("sha256", "")[:16],
              render.relative_time(a.get("uploaded_at"))] for a in found])

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("task_id", metavar="TASK", type=TaskArg())
@click.argument("path")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Where to save it [the artifact's file name, here]; - for stdout.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def artifact(relay: str | None, key: str | None, ca_cert: str | None, task_id: str, path: str,
             output: str | None, force: bool) -> None:
    """Download one artifact of TASK, checked against its SHA-256 (-o - writes it to stdout)."""

    async def go() -> None:
        check_output(output, path)  # a name it cannot have is said before any request
        async with open_client(Connection(relay, key, ca_cert)) as client:
            found_id = await client.resolve_task(task_id)
            async with naming(found_id):
                listed = {a["path"]: a for a in await client.artifacts(task_id=found_id)}
            if path not in listed:
                state = (await client.task(task_id=found_id)).get("state")
                if state in ("queued", "dispatched", "running"):  # not a silent "none"
                    raise Fail(f"task {found_id} is {state}: its artifacts are uploaded when it "
                               f"ends (dragoon logs -f {found_id}, then try again)", X.NOT_FOUND)
                raise Fail(f"task {found_id} has no artifact {path!r}", X.NOT_FOUND)

            async def download(dest: Path, replace: bool) -> Path:
                async with progress_bar(path) as on_progress:
                    return await client.download_artifact(
                        task_id=found_id, artifact=listed[path], dest=dest, force=replace,
                        on_progress=on_progress)

            await save(output, path, force, download,
                       note=f" (sha256 {listed[path].get('sha256', '?')})")

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
@click.argument("drone")
@click.argument("path")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Where to save it [the file's name, here]; - for stdout.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def fetch(relay: str | None, key: str | None, ca_cert: str | None, drone: str, path: str,
          output: str | None, force: bool) -> None:
    """Download the file at PATH on DRONE (under the drone's fetch roots); -o - to stdout."""

    async def go() -> None:
        from dragoon.cockpit.cli._queue import DroneWatch

        check_output(output, path)
        async with open_client(Connection(relay, key, ca_cert)) as client, naming(drone):
            watch = DroneWatch(client, drone, f"fetch of {path}")

            async def download(dest: Path, replace: bool) -> Path:
                async with progress_bar(path) as on_progress:
                    return await client.fetch(drone=drone, path=path, dest=dest, force=replace,
                                              on_progress=on_progress, on_pending=watch.check)

            await save(output, path, force, download)

    run_async(go)
