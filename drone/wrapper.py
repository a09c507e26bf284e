"""The task wrapper: the small process that owns one task, so the drone never has to.

The drone starts this file as ``python -I -S wrapper.py TASK_DIR`` in a new
session and then forgets it: the task's output goes to spool files, never
through pipes, and the task's exit status goes to ``exit.json``. So the drone
can be killed, restarted or upgraded while the task runs; a new drone reads
the same files. The wrapper imports only the standard library (``-S`` skips
site-packages, ``-I`` ignores PYTHON* variables the task's env may carry), so
a drone upgrade that changes the package cannot break a running wrapper.

Protocol with the drone (all files inside TASK_DIR):

- reads ``launch.json``: ``{"command", "cwd"}``; the environment is inherited.
- runs ``bash -c COMMAND`` in its own new session and process group, stdin
  from /dev/null, stdout/stderr appended to ``stdout`` / ``stderr``.
- writes ``pid.json`` ``{"pid", "wrapper_pid", "started_at"}`` once started.
- after the task's main process ends, sends SIGTERM then SIGKILL to what is
  left of its process group (nothing outlives a task), then writes
  ``exit.json`` ``{"exit_code", "signal", "cpu_seconds", "max_rss",
  "finished_at", "error"}`` atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

LEFTOVER_GRACE_SECONDS = 1.0


def _write_json_atomic(path: str, value: dict[str, Any]) -> None:
    # The task can write to TASK_DIR: whatever it planted under the temp name (a FIFO, which
    # would make this open wait forever, or a symlink) is unlinked, never opened.
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(value).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_group(pgid: int) -> None:
    """Leftover background processes of a finished task must not keep writing its spool."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def main(task_dir: str) -> int:
    # The wrapper must outlive hang-ups and the drone's own signals; only the task is killed.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    exit_path = os.path.join(task_dir, "exit.json")
    with open(os.path.join(task_dir, "launch.json"), encoding="utf-8") as handle:
        launch = json.load(handle)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    out_fd = os.open(os.path.join(task_dir, "stdout"), flags, 0o600)
    err_fd = os.open(os.path.join(task_dir, "stderr"), flags, 0o600)
    started_at = time.time()
    try:
        child = subprocess.Popen(
            ["bash", "-c", launch["command"]],
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            cwd=launch["cwd"],
            start_new_session=True,
            close_fds=True,
            # The task gets default signal dispositions, not the wrapper's SIG_IGN.
            restore_signals=True,
            preexec_fn=_default_signals,  # resets the ignored signals
        )
    except OSError as exc:
        os.write(err_fd, f"dragoon: cannot start the task: {exc}\n".encode())
        _write_json_atomic(exit_path, {
            "exit_code": None, "signal": None, "cpu_seconds": 0.0, "max_rss": 0,
            "started_at": started_at, "finished_at": time.time(),
            "error": f"cannot start the task: {exc.strerror or exc}",
        })
        return 0
    os.close(out_fd)
    os.close(err_fd)
    _write_json_atomic(os.path.join(task_dir, "pid.json"),
                       {"pid": child.pid, "wrapper_pid": os.getpid(), "started_at": started_at})
    while True:
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    finished_at = time.time()
    _sweep_group(child.pid)
    exit_code = os.waitstatus_to_exitcode(status)
    _write_json_atomic(exit_path, {
        "exit_code": exit_code if exit_code >= 0 else None,
        "signal": -exit_code if exit_code < 0 else None,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss": usage.ru_maxrss * 1024,
        "started_at": started_at,
        "finished_at": finished_at,
        "error": None,
    })
    return 0


def _default_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
