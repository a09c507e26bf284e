"""The task wrapper: the small process that owns one task, so the drone never has to.

The drone starts this file as ``python -I -S wrapper.py TASK_DIR`` in a new
session and then forgets it: the task's output goes to spool files, never
through pipes, and the task's exit status goes to ``exit.json``. So the drone
can be killed, restarted or upgraded while the task runs; a new drone reads
the same files. The wrapper imports only the standard library (``-S`` skips
site-packages, ``-I`` ignores PYTHON* variables the task's env may carry), so
a drone upgrade that changes the package cannot break a running wrapper.

Protocol with the drone (all files inside TASK_DIR):

- reads ``launch.json``: ``{"command", "cwd"[, "stdin": true]}``; the environment is
  inherited.
- runs ``bash -c COMMAND`` in its own new session and process group, stdin
  from /dev/null, stdout/stderr appended to ``stdout`` / ``stderr``.
- with ``"stdin": true``, the task's stdin is a pipe instead, fed by a thread of
  its own (``_StdinFeeder``) from the spool ``stdin`` that the drone appends to;
  it rewrites ``stdin.fed`` with how many bytes the task took, and closes the
  pipe once ``stdin.eof`` (``{"size"}``) says the spool is complete and all of
  it was fed. Blocking writes to the pipe are the back-pressure: the drone
  fetches no further ahead of ``stdin.fed`` than its bound (drone/stdin.py).
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
import threading
import time
from typing import Any

LEFTOVER_GRACE_SECONDS = 1.0
STDIN_POLL_SECONDS = 0.02  # between looks at a spool that has nothing new
STDIN_BLOCK = 64 * 1024


class _StdinFeeder(threading.Thread):
    """Copies the stdin spool into the task's stdin pipe, in order, exactly once.

    A thread, not the main loop: a write blocks while the task does not read,
    which is the point. EPIPE (the task closed its stdin, or ended) just stops
    the feeding. A daemon thread, so it never keeps a finished wrapper alive.
    """

    def __init__(self, task_dir: str, pipe_fd: int) -> None:
        super().__init__(name="stdin-feeder", daemon=True)
        self.spool_path = os.path.join(task_dir, "stdin")
        self.fed_path = os.path.join(task_dir, "stdin.fed")
        self.eof_path = os.path.join(task_dir, "stdin.eof")
        self.pipe_fd = pipe_fd
        self.fed = 0

    def run(self) -> None:
        spool = -1
        try:
            spool = os.open(self.spool_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            while True:
                data = os.pread(spool, STDIN_BLOCK, self.fed)
                if data:
                    view = memoryview(data)
                    while view:
                        written = os.write(self.pipe_fd, view)
                        view = view[written:]
                        self.fed += written
                    self._publish()
                    continue
                final = self._final_size()
                if final is not None and self.fed >= final:
                    return
                time.sleep(STDIN_POLL_SECONDS)
        except BrokenPipeError:
            return  # the task closed its stdin: nothing more to feed
        except OSError as exc:
            sys.stderr.write(f"dragoon wrapper: the task's stdin stopped: {exc}\n")
        finally:
            if spool >= 0:
                os.close(spool)
            with contextlib.suppress(OSError):
                os.close(self.pipe_fd)

    def _publish(self) -> None:
        # Rewritten, never fsynced: a stale value only makes the drone fetch a little less.
        tmp = f"{self.fed_path}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, str(self.fed).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.fed_path)

    def _final_size(self) -> int | None:
        try:
            fd = os.open(self.eof_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            size = json.loads(os.read(fd, 4096) or b"null")["size"]
        except (ValueError, TypeError, KeyError):
            return None
        finally:
            os.close(fd)
        return size if isinstance(size, int) else None


def _stdin_pipe(task_dir: str, launch: dict[str, Any]) -> tuple[int, _StdinFeeder] | None:
    """The read end for the task and its feeder (started later), or None: /dev/null."""
    if launch.get("stdin") is not True:
        return None
    read_end, write_end = os.pipe()
    return read_end, _StdinFeeder(task_dir, write_end)


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
    stdin_pipe = _stdin_pipe(task_dir, launch)
    try:
        child = subprocess.Popen(
            ["bash", "-c", launch["command"]],
            stdin=subprocess.DEVNULL if stdin_pipe is None else stdin_pipe[0],
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
    if stdin_pipe is not None:
        os.close(stdin_pipe[0])  # the task holds it now: its exit gives the feeder EPIPE
        stdin_pipe[1].start()
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
