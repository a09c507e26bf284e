"""While a task is queued: say why it waits, once per reason, and what a signal does to it.

The relay computes why a queued task has not started (its ``waiting`` object,
docs/api.md); the CLI learns of changes by asking for the task every second
while it is queued (slowing to every five seconds when it waits long), and only
then. The relay's event stream does carry a queued task's new reason when its
drone comes, goes or drains, but not every change (a busy count, past the first
hundred tasks), and it would be a second connection held for one task; one
small read a second is simpler and enough. A line
is printed when the reason (or the drone it names) changes, never once per
poll. The start itself is seen sooner: the log followers' long-polls wake on it.

"Started" means a drone took the task (it left the queue): until then the task
is the waiting verb's to cancel, so that nothing runs later with nobody watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Final

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.client import RelayClient, RelayError, Task
from dragoon.cockpit.safe_text import clean
from dragoon.cockpit.waiting import describe, key

QUEUE_POLL: Final = 1.0  # seconds between the first looks at a queued task
QUEUE_POLL_MAX: Final = 5.0  # a task queued for long is looked at this often
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def notice(message: str) -> None:
    """One ``dragoon:`` line on stderr, as safe text (it quotes drone names and labels)."""
    click.echo(f"dragoon: {clean(message)}", err=True)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class QueueWatch:
    """One task seen while it is queued: its last known view, and what was said about it."""

    def __init__(self, client: RelayClient, task: Task, *, poll: float = QUEUE_POLL) -> None:
        self.client = client
        self.task = task
        self.poll = poll
        self._said: tuple[object, ...] | None = None

    @property
    def queued(self) -> bool:
        return self.task.get("state") == "queued"

    def say(self) -> None:
        """The waiting line, if the reason is new since the last one said."""
        if not self.queued:
            return
        waiting = self.task.get("waiting")
        now = key(waiting)
        if waiting and now is not None and now != self._said:
            notice(f"{self.task['id']} waiting: {describe(waiting)}")
        self._said = now

    async def run(self) -> Task:
        """Say why it waits until it leaves the queue; the view it left with."""
        self.say()
        pause = self.poll
        while self.queued:
            await asyncio.sleep(pause)
            pause = min(pause * 1.2, max(self.poll, QUEUE_POLL_MAX))
            try:
                self.task = await self.client.task(task_id=self.task["id"])
            except RelayError:
                continue  # the relay is away: the log followers say so, and retry
            self.say()
        return self.task

    async def still_queued(self) -> bool:
        """Asked afresh, not from the last poll: the output may already be flowing."""
        with contextlib.suppress(RelayError):
            self.task = await self.client.task(task_id=self.task["id"])
        return self.queued

    async def cancel_unstarted(self, signum: int) -> bool:
        """A signal before the start: cancel; True when the relay cancelled it still queued.

        False when the task left the queue in the meantime: the cancel then reached
        a started task (the relay asks its drone to stop it), and the caller says so.
        """
        task_id = self.task["id"]
        self.task = await self.client.cancel(task_id=task_id)
        if self.task.get("state") == "cancelled" and self.task.get("started_at") is None:
            notice(f"{signal_name(signum)}: cancelled {task_id} before it started")
            return True
        notice(f"{signal_name(signum)}: {task_id} had just started; cancel requested")
        return False


async def wait_for_start(client: RelayClient, task: Task) -> int:
    """``submit --start-within``: wait until a drone takes the task or the relay cancels it.

    The deadline is the relay's (``start_by``): this only watches. 0 once it started,
    1 when it ended without starting (the relay's error says why), 128 + N when a
    signal cancelled it first.
    """
    watch = QueueWatch(client, task)
    loop = asyncio.get_running_loop()
    caught: asyncio.Queue[int] = asyncio.Queue()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, caught.put_nowait, signum)
    watching = asyncio.ensure_future(watch.run())
    waiter = asyncio.ensure_future(caught.get())
    try:
        done, _ = await asyncio.wait({watching, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            watching.cancel()
            signum = waiter.result()
            if await watch.still_queued():
                await watch.cancel_unstarted(signum)
            else:
                notice(f"{signal_name(signum)}: {task['id']} has started; it goes on")
            return 128 + signum
        final = watching.result()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        for pending in (watching, waiter):
            pending.cancel()
    if final.get("started_at") is None and final.get("state") in ("cancelled", "failed", "lost"):
        notice(f"{final['id']} {final.get('state')}: {final.get('error') or 'never started'}")
        return X.FAILURE
    return X.OK


class DroneWatch:
    """``fetch``: while the drone has not sent the file, say once why (it is offline).

    The drone's state is the relay's (its ``/v1/workers`` view); asked once per
    wait of the fetch's own long-poll, so no more often than the fetch polls.
    """

    def __init__(self, client: RelayClient, drone: str, what: str) -> None:
        self.client = client
        self.drone = drone
        self.what = what
        self._said: tuple[object, ...] | None = None

    async def check(self, _fetch: object = None) -> None:
        try:
            found = next((d for d in await self.client.drones() if d.get("name") == self.drone),
                         None)
        except RelayError:
            return
        if found is None or found.get("state") == "online":
            self._said = None
            return
        waiting = {"reason": "offline", "drone": self.drone, "since": found.get("last_seen")}
        if key(waiting) != self._said:
            notice(f"{self.what} waiting: {describe(waiting)}; it comes when the drone is "
                   "back (Ctrl-C to give up)")
        self._said = key(waiting)
