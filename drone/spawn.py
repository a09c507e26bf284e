"""Starting a task detached from the drone, and finding it again after a drone restart.

A task is started through ``drone/wrapper.py`` in a new session, so neither a
drone crash nor ``systemctl restart`` (with ``KillMode=process``) touches it.
The drone identifies processes by pid *and* start time (psutil's
``create_time``), so a recycled pid is never mistaken for the task, and
records the boot time, so that after a reboot it knows the task is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil
from dragoon.drone import stdin as drone_stdin
from dragoon.drone.launcher import Launcher, LauncherGone
from dragoon.drone.state import read_json, write_json

WRAPPER: Final = str(Path(__file__).with_name("wrapper.py"))
BOOT_TIME_TOLERANCE: Final = 5.0  # seconds; psutil's boot time can wobble by a second
CREATE_TIME_TOLERANCE: Final = 0.05


@dataclass(frozen=True)
class ProcRecord:
    """Who the task is, recorded in ``proc.json`` so that a new drone can re-adopt it."""

    pid: int  # the task's bash; also its process group id and session id
    create_time: float | None
    wrapper_pid: int
    wrapper_create_time: float | None
    boot_time: float
    started_at: float

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "pid": self.pid, "create_time": self.create_time, "wrapper_pid": self.wrapper_pid,
            "wrapper_create_time": self.wrapper_create_time, "boot_time": self.boot_time,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, data: object) -> ProcRecord | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["pid"]), data.get("create_time"), int(data["wrapper_pid"]),
                       data.get("wrapper_create_time"), float(data["boot_time"]),
                       float(data["started_at"]))
        except (KeyError, TypeError, ValueError):
            return None


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid`` if it is the one that started at ``create_time``, else None."""
    if create_time is None:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def rebooted_since(record: ProcRecord) -> bool:
    return abs(psutil.boot_time() - record.boot_time) > BOOT_TIME_TOLERANCE


def cwd_problem(cwd: Path) -> str | None:
    """Why the task cannot start in ``cwd`` (checked before anything is spawned), or None.

    A missing working directory is the drone's refusal, not the command's failure:
    the task ends failed with this reason and no exit code, so ``dragoon run``
    exits 255 rather than bash's 127 (docs/cli.md, "Exit codes").
    """
    try:
        if not cwd.exists():
            return "no such directory"
        if not cwd.is_dir():
            return "not a directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(cwd, os.X_OK):
        return "permission denied"
    return None


class WrapperUnstartable(OSError):
    """No wrapper could be started at all: the drone's Python is gone (a rebuilt venv)."""


async def launch(
    task_dir: Path, *, command: str, cwd: Path, env: dict[str, str], start_timeout: float = 15.0,
    stdin: bool = False,
    wrapper: str = WRAPPER,
    launcher: Launcher | None = None,
) -> tuple[subprocess.Popen[bytes] | None, ProcRecord | None]:
    """Start the wrapper for one task and wait until it reports the task's pid.

    Returns the wrapper's Popen (the drone reaps it while it lives; None for a
    wrapper forked by ``launcher``, which the kernel reaps) and the record, or
    None when the wrapper never reported (its exit.json says why, or the
    caller reports the failure). The start is learnt from the one line the
    wrapper writes on a pipe the moment bash runs (drone/wrapper.py), read when
    readable: no looking for pid.json. ``wrapper`` is the file to run: the
    daemon passes the copy it made at its start (drone/install.py). A wrapper
    that cannot even be started (the Python is gone) raises WrapperUnstartable,
    with the reason in ``wrapper.log``.
    """
    launch_record: dict[str, object] = {"command": command, "cwd": str(cwd)}
    if stdin:  # the task reads its pilot's stdin: the wrapper feeds it from the spool
        drone_stdin.prepare(task_dir)
        launch_record["stdin"] = True
    # Not fsynced: it matters only until the task's processes run, and a power cut (what an
    # fsync guards against) ends those anyway; task.json and state.json are the durable
    # record of the accept. A drone crash loses nothing the kernel holds.
    write_json(task_dir / "launch.json", launch_record, durable=False)
    if launcher is not None:
        try:
            report = await launcher.start_task(task_dir, env, start_timeout)
        except LauncherGone:
            pass  # the line never reached a wrapper: a cold start cannot run it twice
        else:
            return None, _record(task_dir, report, None, None)
    # 0600 like every file of the data dir, whatever the umask the task inherits.
    log = os.open(task_dir / "wrapper.log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    report_read, report_write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", wrapper, str(task_dir), str(report_write)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(task_dir),
            start_new_session=True, close_fds=True, pass_fds=(report_write,),
        )
    except OSError as exc:
        os.write(log, f"dragoon: cannot start {sys.executable} {wrapper}: {exc}\n".encode())
        os.close(report_read)
        raise WrapperUnstartable(str(exc)) from exc
    finally:
        os.close(log)
        os.close(report_write)
    wrapper_create = _create_time(process.pid)
    try:
        report = await asyncio.wait_for(_one_line(report_read), start_timeout)
    except TimeoutError:
        report = None
    finally:
        os.close(report_read)
    return process, _record(task_dir, report, process.pid, wrapper_create)


async def _one_line(fd: int) -> dict[str, Any] | None:
    """The wrapper's report, read as it arrives; None at EOF without one (it died)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while b"\n" not in data:
        readable = loop.create_future()
        loop.add_reader(fd, readable.set_result, None)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        data += chunk
    try:
        report = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _record(task_dir: Path, report: dict[str, Any] | None, wrapper_pid: int | None,
            wrapper_create: float | None) -> ProcRecord | None:
    """proc.json from the wrapper's report; None when the task did not start."""
    if report is None or not isinstance(report.get("pid"), int):
        return None
    pid = int(report["pid"])
    if wrapper_pid is None:  # forked by the launcher: the report names it
        wrapper_pid = int(report["wrapper_pid"])
        wrapper_create = _create_time(wrapper_pid)
    record = ProcRecord(pid, _create_time(pid), wrapper_pid, wrapper_create,
                        psutil.boot_time(), float(report["started_at"]))
    # Not fsynced, like launch.json and pid.json: it finds the task's live processes again
    # after a drone crash (the kernel keeps the file), and a power cut, all an fsync would
    # guard against, ends those processes; a restart that finds no proc.json rebuilds it
    # from pid.json (recover), and one that finds neither reports the task failed: the
    # accept's durable record (task.json) keeps it from ever running twice.
    write_json(task_dir / "proc.json", record.to_json(), durable=False)
    return record


def recover(task_dir: Path, *, wait: float = 2.0) -> ProcRecord | None:
    """Rebuild ``proc.json`` when the drone died between starting the wrapper and writing it.

    The wrapper may still be a moment from writing ``pid.json``, so it is given
    ``wait`` seconds. A process counts as ours only if it started within two
    seconds of the start the wrapper recorded (a recycled pid did not).
    """
    if not (task_dir / "launch.json").exists():
        return None
    deadline = time.monotonic() + wait
    info = read_json(task_dir / "pid.json")
    while info is None and time.monotonic() < deadline:
        time.sleep(0.02)
        info = read_json(task_dir / "pid.json")
    if not isinstance(info, dict):
        return None
    started_at = float(info["started_at"])

    def ours(pid: int) -> float | None:
        created = _create_time(pid)
        return created if created is not None and abs(created - started_at) < 2.0 else None

    pid, wrapper_pid = int(info["pid"]), int(info["wrapper_pid"])
    boot = psutil.boot_time()
    # A task that started before this boot ran under an earlier one (a power cut lost its
    # proc.json): recorded so, rebooted_since() says the host rebooted under it.
    record = ProcRecord(pid, ours(pid), wrapper_pid, ours(wrapper_pid),
                        boot if started_at >= boot else started_at, started_at)
    write_json(task_dir / "proc.json", record.to_json(), durable=False)
    return record


def signal_group(pgid: int, signum: int) -> bool:
    """Signal the task's whole process group; False when nothing is left of it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_tree(record: ProcRecord, signum: int) -> None:
    """Signal the task's group and any descendant that left it (setsid, own group)."""
    root = same_process(record.pid, record.create_time)
    strays: list[psutil.Process] = []
    if root is not None:
        with contextlib.suppress(psutil.Error):
            strays = [p for p in root.children(recursive=True) if _pgid(p) != record.pid]
    signal_group(record.pid, signum)
    for proc in strays:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signum)


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


@dataclass
class TreeSample:
    cpu_seconds: float
    rss: int


def sample_tree(record: ProcRecord) -> TreeSample | None:
    """CPU seconds and summed RSS of the task's live process tree, for the finish report.

    Each live process counts its own CPU time plus that of the children it
    reaped, so summing over the live tree counts every process once.
    """
    root = same_process(record.pid, record.create_time)
    if root is None:
        return None
    cpu = 0.0
    rss = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return TreeSample(cpu, rss)


def wrapper_alive(record: ProcRecord) -> bool:
    return same_process(record.wrapper_pid, record.wrapper_create_time) is not None
