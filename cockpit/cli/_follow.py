"""Following a task's output in the terminal, as ``dragoon run`` and ``dragoon logs -f`` do.

Each stream is followed by its own long-poll loop and written to its own
file descriptor; with both stdout and stderr, in the order the task wrote
them (the ``order`` stream, cockpit/ordered.py), so a terminal showing both
sees them interleaved as the task did. The task's bytes exactly as it wrote
them, escape sequences included, as ``ssh host cmd`` would (it is the pilot's own program
talking); what dragoon itself says goes to stderr as safe text. Ctrl-C is the
pilot's: it detaches (the task goes on), or with ``cancel_on_interrupt`` it asks
the relay to cancel and keeps following so that the task's last words and exit
code still arrive; a second Ctrl-C detaches at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.client import LogChunk, RelayClient, RelayError, Task
from dragoon.cockpit.client._logs import cut_notice
from dragoon.cockpit.ordered import follow_in_order
from dragoon.cockpit.safe_text import clean
from dragoon.shared.e2e import E2EError
from dragoon.shared.models import TaskState, exit_status_code


def _notice(message: str) -> None:
    """One line on stderr, as safe text: it quotes the relay and the task's drone."""
    click.echo(f"dragoon: {clean(message)}", err=True)


def on_retry(error: RelayError, delay: float) -> None:
    if delay <= 0.1:  # the first retry of a streak: say it once, not every back-off
        _notice(f"{error.detail}; retrying")


class OutputClosed(Exception):
    """The reader of one of our streams went away (``dragoon run box -- seq 1e9 | head``)."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__("output closed")
        self.out = out


class Cuts:
    """Whether the relay's output cap cut a stream: said once, after the output, on stderr
    (the relay cannot write into the sealed stream; cockpit/client/_logs.py)."""

    def __init__(self) -> None:
        self.cap: int | None = None

    def saw(self, chunk: LogChunk) -> None:
        if chunk.cut_at is not None and chunk.stream != "order":
            self.cap = chunk.cut_at

    def say(self) -> None:
        if self.cap is not None:
            click.echo(cut_notice(self.cap), err=True)


async def copy_stream(client: RelayClient, task_id: str, stream: str, out: BinaryIO,
                      cuts: Cuts | None = None) -> None:
    """Write ``stream``'s bytes to ``out`` as they are produced, until the task is over."""
    async for chunk in client.follow_log(task_id=task_id, stream=stream, on_retry=on_retry):
        if cuts is not None:
            cuts.saw(chunk)
        if chunk.data:
            try:
                out.write(chunk.data)
                out.flush()
            except BrokenPipeError:
                raise OutputClosed(out) from None


def _writer(streams: dict[str, BinaryIO]) -> Callable[[str, bytes], None]:
    def write(stream: str, data: bytes) -> None:
        out = streams[stream]
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError:  # `| head`: the same end as copy_stream's, whatever the path
            raise OutputClosed(out) from None
    return write


async def copy_streams(client: RelayClient, task_id: str, streams: dict[str, BinaryIO]) -> None:
    """Follow ``streams`` to their end; a stream that does not open (``E2EError``) ends it
    all, after what opened, with nothing of the bad record shown."""
    cuts = Cuts()
    if set(streams) == {"stdout", "stderr"}:
        def follow(stream: str) -> AsyncIterator[bytes]:
            return _data(client.follow_log(task_id=task_id, stream=stream,
                                           on_retry=on_retry if stream in streams else None),
                         cuts)

        await follow_in_order(follow, _writer(streams))
        cuts.say()
        return
    try:
        async with asyncio.TaskGroup() as group:
            for stream, out in streams.items():
                group.create_task(copy_stream(client, task_id, stream, out, cuts))
    except* (RelayError, E2EError) as errors:  # both streams fail alike: say it once
        raise errors.exceptions[0] from None
    except* OutputClosed as closed:
        raise closed.exceptions[0] from None
    cuts.say()


async def print_streams(client: RelayClient, task_id: str,
                        streams: dict[str, BinaryIO]) -> None:
    """What the relay holds of ``streams`` now, once (``dragoon logs`` without ``-f``)."""
    cuts = Cuts()

    async def read(stream: str) -> AsyncIterator[bytes]:
        offset = 0
        while True:
            chunk = await client.read_log(task_id=task_id, stream=stream, offset=offset)
            cuts.saw(chunk)
            if not chunk.data:
                return
            offset = chunk.next_offset
            yield chunk.data

    if set(streams) == {"stdout", "stderr"}:
        await follow_in_order(read, _writer(streams))
    else:
        write = _writer(streams)
        for name in streams:
            async for data in read(name):
                write(name, data)
    cuts.say()


async def _data(chunks: AsyncIterator[LogChunk], cuts: Cuts) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        cuts.saw(chunk)
        if chunk.data:
            yield chunk.data


def task_exit_code(task: Task) -> int:
    """The task's exit status as a shell gives it (128 + N for signal N); 255 when it has none."""
    state = task.get("state")
    code, sig = task.get("exit_code"), task.get("signal")
    if state == TaskState.LOST or (code is None and not sig):
        reason = task.get("error") or "no exit status"
        if reason.startswith("refused by drone "):  # its pilot-signed order (drone/orders.py)
            _notice(f"task {task.get('id')} {reason}")
        else:
            _notice(f"task {task.get('id')} ended {state}: {reason}")
        return X.RUN_OWN_FAILURE
    if state in (TaskState.CANCELLED, TaskState.TIMED_OUT):
        _notice(f"task {task.get('id')} {state}")
    return exit_status_code(code, sig)


def default_streams() -> dict[str, BinaryIO]:
    return {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}


def _silence(out: BinaryIO) -> None:
    """Point a closed stream's fd at /dev/null, so the exit's flush has nowhere to fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())


async def _output_closed(client: RelayClient, task_id: str, closed: OutputClosed,
                         owned: bool) -> int:
    """Like ssh, whose remote command dies of SIGPIPE when the channel closes: ``run``
    cancels its task and exits 141 (128 + SIGPIPE), quietly; ``logs -f`` just stops (0)."""
    _silence(closed.out)
    if not owned:
        return X.OK
    with contextlib.suppress(RelayError):
        await client.cancel(task_id=task_id)
    return X.PIPE_CLOSED


async def attach(client: RelayClient, task_id: str, *, streams: dict[str, BinaryIO],
                 cancel_on_interrupt: bool = False, detach_hint: bool = True,
                 queued: Task | None = None, owned: bool = False) -> int | None:
    """Follow ``streams`` until the task ends (``None``), or until a signal ends the follow.

    ``queued`` is the task as last seen: while it is queued, why it waits is said
    (cli/_queue.py). ``owned`` (``run``: the verb made the task) means a signal
    before the start cancels it, and a closed output cancels it. Ctrl-C after the
    start detaches (130), or cancels first with ``cancel_on_interrupt``; SIGTERM and
    SIGHUP say what happened and exit 128 + N at once.
    """
    from dragoon.cockpit.cli._queue import STOP_SIGNALS, QueueWatch, signal_name

    loop = asyncio.get_running_loop()
    caught: asyncio.Queue[int] = asyncio.Queue()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, caught.put_nowait, signum)
    follow = asyncio.ensure_future(copy_streams(client, task_id, streams))
    watch = QueueWatch(client, queued) if queued is not None else None
    watching = asyncio.ensure_future(watch.run()) if watch is not None else None
    cancelling = False
    hint = f"Re-attach with: dragoon logs -f {task_id}"
    try:
        while True:
            waiter = asyncio.ensure_future(caught.get())
            done, _ = await asyncio.wait({follow, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if follow in done:
                waiter.cancel()
                try:
                    follow.result()
                except OutputClosed as closed:
                    return await _output_closed(client, task_id, closed, owned)
                return None
            signum = waiter.result()
            name = signal_name(signum)
            if (owned and not cancelling and watch is not None and watch.queued
                    and await watch.still_queued()):
                cancelling = True
                if await watch.cancel_unstarted(signum) or signum != signal.SIGINT:
                    return 128 + signum
                continue  # it had just started: follow on to its end, as a cancel does
            if signum != signal.SIGINT:
                if cancel_on_interrupt and owned and not cancelling:
                    await client.cancel(task_id=task_id)
                    _notice(f"{name}: cancel requested for {task_id}; not following it")
                elif detach_hint:
                    _notice(f"{name}: detached; {task_id} goes on. {hint}")
                return 128 + signum
            if cancel_on_interrupt and not cancelling:
                cancelling = True
                await client.cancel(task_id=task_id)
                _notice(f"cancelling {task_id} (Ctrl-C again to detach)")
                continue
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            if detach_hint:
                _notice(f"detached; {task_id} goes on. {hint}")
            return X.INTERRUPTED
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        for pending in (follow, watching):
            if pending is not None and not pending.done():
                pending.cancel()
