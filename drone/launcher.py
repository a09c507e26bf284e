"""The drone's launcher: one pre-started wrapper process that forks a wrapper per task.

A cold start (``python -I -S wrapper.py TASK_DIR``) costs a Python interpreter's
start and the wrapper's imports, ~20 ms of CPU and of every task's latency. The
launcher pays that once, at the drone's start: ``wrapper.py --launcher`` runs
in its own session and, for each line ``{"task_dir", "env"}`` the drone writes
on its stdin, forks a child that becomes that task's wrapper (drone/wrapper.py,
``serve``). Each child reports one line on the launcher's stdout when its task
started; the drone reads it when the pipe is readable (``add_reader``), never by
looking for a file.

What keeps the wrapper's promises:

- the forked wrapper is exactly a cold one (own session, the task's env and
  cwd, stdlib only, the drone's captured copy of wrapper.py): a drone restart or
  upgrade never touches it, and the new drone re-adopts it from the task dir;
- the launcher has no task dir and runs no task itself, so re-adoption never
  sees it; it exits at EOF on its stdin, which only this drone holds open, so a
  drone killed with SIGKILL leaves no launcher behind;
- a line that could not be written whole (the launcher died) is a task that
  never reached any wrapper, so the drone may start it another way: a task
  runs at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("dragoon.drone")

PIPE_SIZE: Final = 1 << 20  # a task's env rides on one line: room for a large one


class LauncherGone(Exception):
    """The line never reached a launcher: nothing was started, the task may start otherwise."""


class _Instance:
    """One launcher process: its command pipe, and its report pipe until every writer is gone.

    The report side outlives the command side: wrappers forked before the launcher died
    still report on it, and are waited for until EOF.
    """

    def __init__(self, process: subprocess.Popen[bytes], commands: int, reports: int) -> None:
        self.process = process
        self.commands: int | None = commands
        self.reports: int | None = reports
        self.buffer = b""
        self.pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        asyncio.get_running_loop().add_reader(reports, self.readable)

    def readable(self) -> None:
        assert self.reports is not None
        try:
            chunk = os.read(self.reports, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the launcher and every wrapper it forked closed their ends
            self.close_reports()
            return
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                report = json.loads(line)
                future = self.pending.get(str(report["task_dir"]))
            except (ValueError, TypeError, KeyError):
                log.warning("the task launcher said something unreadable: %r", line[:200])
                continue
            if future is not None and not future.done():
                future.set_result(report)

    def close_commands(self) -> None:
        """No more tasks for it: at EOF on its stdin the launcher exits."""
        if self.commands is not None:
            os.close(self.commands)
            self.commands = None
        self.process.poll()

    def close_reports(self) -> None:
        if self.reports is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.reports)
            os.close(self.reports)
            self.reports = None
        self.close_commands()
        for future in self.pending.values():
            if not future.done():
                future.set_result(None)


class Launcher:
    def __init__(self, wrapper: str, env: dict[str, str]) -> None:
        self.wrapper = wrapper
        self.env = env  # the launcher's own; each task's env rides on its line
        self.current: _Instance | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.current is not None and self.current.commands is not None

    @property
    def pid(self) -> int | None:
        return self.current.process.pid if self.alive and self.current else None

    def start(self) -> bool:
        """Start the launcher process (its interpreter starts while the drone goes on)."""
        command_read, command_write = os.pipe()
        report_read, report_write = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", self.wrapper, "--launcher"],
                stdin=command_read, stdout=report_write, stderr=subprocess.DEVNULL,
                env=self.env, cwd="/", start_new_session=True, close_fds=True)
        except OSError as exc:
            log.warning("cannot start the task launcher (%s); tasks start cold", exc)
            os.close(command_write)
            os.close(report_read)
            return False
        finally:
            os.close(command_read)
            os.close(report_write)
        with contextlib.suppress(OSError):
            fcntl.fcntl(command_write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(report_read, False)
        self.current = _Instance(process, command_write, report_read)
        self.starts += 1
        return True

    async def start_task(self, task_dir: Path, env: dict[str, str],
                         timeout: float) -> dict[str, Any] | None:
        """Hand the task to a forked wrapper; its report, or None if none came in ``timeout``.

        Raises LauncherGone when the line could not be handed over (nothing started).
        """
        if not self.alive and not self.start():
            raise LauncherGone("no launcher")
        instance = self.current
        assert instance is not None and instance.commands is not None
        key = str(task_dir)
        line = json.dumps({"task_dir": key, "env": env}).encode("utf-8") + b"\n"
        future: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future())
        instance.pending[key] = future
        try:
            view = memoryview(line)
            while view:  # a blocking pipe of PIPE_SIZE: the launcher reads it at once
                view = view[os.write(instance.commands, view):]
        except OSError as exc:  # EPIPE: the launcher is gone, and the line's end never got in
            instance.pending.pop(key, None)
            log.warning("the task launcher is gone (%s); starting another", exc)
            instance.close_commands()
            raise LauncherGone(str(exc)) from exc
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            instance.pending.pop(key, None)

    def close(self) -> None:
        """The drone stops: closing the command pipe makes the launcher exit."""
        if self.current is not None:
            self.current.close_reports()
            self.current = None
