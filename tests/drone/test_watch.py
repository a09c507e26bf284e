"""drone/watch.py and drone/dirwatch.py on real processes and real files: exits and writes
are events, a stranger's pid is never watched, and nothing is left open afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from dragoon.drone import dirwatch, watch
from dragoon.drone.dirwatch import DirWatch

pytestmark = pytest.mark.skipif(not watch.pidfd_supported(), reason="needs pidfd (Linux ≥ 5.3)")

DEADLINE = 20.0


def fd_kinds(kind: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += kind in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return count


async def exit_seen(pid: int, alive, kill) -> tuple[str, bool]:
    fired = asyncio.Event()
    watcher = watch.ExitWatch(pid, alive, fired.set)
    assert not fired.is_set()
    kill()
    await asyncio.wait_for(fired.wait(), DEADLINE)
    return watcher.how, watcher.closed


def test_the_exit_of_a_child_is_an_event_through_its_pidfd():
    child = subprocess.Popen(["sleep", "60"])
    try:
        how, closed = asyncio.run(exit_seen(child.pid, lambda: child.poll() is None,
                                            child.terminate))
    finally:
        child.kill()
        child.wait()
    assert how == "pidfd" and closed


def test_the_exit_of_a_process_that_is_not_the_drones_child_is_seen_too():
    """A re-adopted wrapper's parent is init (or a subreaper), not the drone."""
    out = subprocess.run(["bash", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    orphan = int(out.stdout)
    proc = psutil.Process(orphan)
    assert proc.ppid() != os.getpid()
    created = proc.create_time()

    def alive() -> bool:
        try:
            same = psutil.Process(orphan)
            return same.create_time() == created and same.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    try:
        how, _ = asyncio.run(exit_seen(orphan, alive, lambda: os.kill(orphan, signal.SIGTERM)))
    finally:
        with_gone = not psutil.pid_exists(orphan) or not alive()
        if not with_gone:
            os.kill(orphan, signal.SIGKILL)
    assert how == "pidfd"


def test_a_pid_that_is_no_longer_the_one_meant_is_reported_gone_at_once():
    """The identity check (pid and start time) runs after the pidfd is open: a recycled pid
    is never watched as if it were the wrapper."""
    async def main() -> bool:
        fired = asyncio.Event()
        watch.ExitWatch(os.getpid(), lambda: False, fired.set)  # alive, but not "ours"
        await asyncio.wait_for(fired.wait(), DEADLINE)
        return fired.is_set()

    assert asyncio.run(main())


def test_a_closed_watch_calls_nothing_and_keeps_no_fd():
    child = subprocess.Popen(["sleep", "60"])

    async def main() -> bool:
        fired = asyncio.Event()
        before = fd_kinds("pidfd")
        watcher = watch.ExitWatch(child.pid, lambda: True, fired.set)
        assert fd_kinds("pidfd") == before + 1
        watcher.close()
        watcher.close()
        assert fd_kinds("pidfd") == before
        child.kill()
        child.wait()
        await asyncio.sleep(0)  # nothing is scheduled for a closed watch: one turn of the loop
        return fired.is_set()

    try:
        assert asyncio.run(main()) is False
    finally:
        child.kill()
        child.wait()


def test_without_pidfd_the_exit_is_still_found_by_looking(monkeypatch: pytest.MonkeyPatch):
    def refused(_pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)
    child = subprocess.Popen(["sleep", "60"])
    try:
        how, _ = asyncio.run(exit_seen(child.pid, lambda: child.poll() is None, child.kill))
    finally:
        child.kill()
        child.wait()
    assert how == "poll"


# ----- dirwatch -----


async def poked(watcher: DirWatch, name: str) -> bool:
    """Whether ``name``'s poke is set, without waiting for it."""
    await asyncio.sleep(0)
    return watcher.poke(name).is_set()


def test_a_write_to_a_watched_file_pokes_its_waiter_and_no_other(tmp_path: Path):
    async def main() -> tuple[bool, bool]:
        watcher = DirWatch(tmp_path, ("stdout", "inbox"))
        assert watcher.active, watcher.why_not
        try:
            (tmp_path / "stdout").write_bytes(b"hi\n")
            await asyncio.wait_for(watcher.poke("stdout").wait(DEADLINE * 10), DEADLINE)
            (tmp_path / "unrelated").write_bytes(b"x")
            # A mark written after the unrelated file: once it is seen, so was that one.
            (tmp_path / "stdout").write_bytes(b"again\n")
            await asyncio.wait_for(watcher.poke("stdout").wait(DEADLINE * 10), DEADLINE)
            return await poked(watcher, "inbox"), True
        finally:
            watcher.close()

    inbox_poked, stdout_poked = asyncio.run(main())
    assert stdout_poked and not inbox_poked


def test_a_file_replaced_by_a_fifo_or_a_symlink_only_wakes_the_waiter(tmp_path: Path):
    """The watch reads events, never the files: what the task puts there cannot block it."""
    async def main() -> None:
        watcher = DirWatch(tmp_path, ("inbox",))
        try:
            os.mkfifo(tmp_path / "inbox")
            await asyncio.wait_for(watcher.poke("inbox").wait(DEADLINE * 10), DEADLINE)
            os.unlink(tmp_path / "inbox")
            os.symlink("/dev/zero", tmp_path / "inbox")
            await asyncio.wait_for(watcher.poke("inbox").wait(DEADLINE * 10), DEADLINE)
        finally:
            watcher.close()

    asyncio.run(main())


def test_a_directory_that_cannot_be_watched_falls_back_to_looking(tmp_path: Path):
    async def main() -> tuple[bool, str | None, bool]:
        watcher = DirWatch(tmp_path / "missing", ("stdout",))
        watcher.poke_all()  # the exit still wakes every waiter
        woken = await poked(watcher, "stdout")
        watcher.close()
        return watcher.active, watcher.why_not, woken

    active, why, woken = asyncio.run(main())
    assert not active and why and "inotify_add_watch" in why and woken


def test_closed_watches_leave_no_watch_and_share_one_inotify_fd(tmp_path: Path):
    """One inotify instance for the drone (closing one that had a watch costs an RCU grace
    period, ~16 ms, on the loop); each DirWatch adds a watch and its close removes it."""
    async def main() -> tuple[int, int]:
        for _ in range(300):
            DirWatch(tmp_path, ("stdout",)).close()
        first, second = DirWatch(tmp_path, ("stdout",)), DirWatch(tmp_path / "..", ("inbox",))
        during = dirwatch.watches_held()
        first.close()
        second.close()
        return during, fd_kinds("inotify")

    during, fds = asyncio.run(main())
    assert during == 2 and dirwatch.watches_held() == 0 and fds == 1


def test_two_watches_on_one_directory_each_keep_working_until_their_own_close(tmp_path: Path):
    """inotify gives one descriptor per directory: closing one watcher must not blind the other."""
    async def main() -> bool:
        first, second = DirWatch(tmp_path, ("stdout",)), DirWatch(tmp_path, ("stdout",))
        try:
            first.close()
            (tmp_path / "stdout").write_bytes(b"hi\n")
            await asyncio.wait_for(second.poke("stdout").wait(DEADLINE * 10), DEADLINE)
            return True
        finally:
            second.close()

    assert asyncio.run(main())


def test_a_burst_of_events_on_other_files_does_not_hide_the_watched_one(tmp_path: Path):
    """Thousands of events (a task hammering its dir) are drained in bites of READ_MAX,
    and the watched name is still poked."""
    async def main() -> bool:
        watcher = DirWatch(tmp_path, ("stdout",))
        try:
            for i in range(1000):
                (tmp_path / f"f{i % 10}").write_bytes(b"x")
            (tmp_path / "stdout").write_bytes(b"last\n")
            await asyncio.wait_for(watcher.poke("stdout").wait(DEADLINE * 10), DEADLINE)
            return True
        finally:
            watcher.close()

    assert asyncio.run(main())
    assert dirwatch.READ_MAX >= 4096


def test_a_quiet_directory_still_pokes_every_waiter_at_the_safety_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A spool the task unlinked and writes on reports no event: the safety look covers it,
    one timer for all waiters; and a closed watch keeps no timer."""
    monkeypatch.setattr(dirwatch, "SAFETY_LOOK", 0.05)

    async def main() -> tuple[bool, bool]:
        watcher = DirWatch(tmp_path, ("stdout", "inbox"))
        try:
            await asyncio.wait_for(watcher.poke("stdout").wait(DEADLINE * 10), DEADLINE)
            both = watcher.poke("inbox").is_set()
        finally:
            watcher.close()
        await asyncio.sleep(0)
        return both, watcher._safety is None

    both, no_timer = asyncio.run(main())
    assert both and no_timer
