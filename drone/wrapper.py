"""The task wrapper: the small process that owns one task, so the drone never has to.

The drone starts this file as ``python -I -S wrapper.py TASK_DIR`` in a new
session and then forgets it: the task's output goes to spool files, never
through the drone, and the task's exit status goes to ``exit.json``. So the drone
can be killed, restarted or upgraded while the task runs; a new drone reads
the same files. The wrapper imports only the standard library (``-S`` skips
site-packages, ``-I`` ignores PYTHON* variables the task's env may carry), so
a drone upgrade that changes the package cannot break a running wrapper.

Protocol with the drone (all files inside TASK_DIR):

- reads ``launch.json``: ``{"command", "cwd"[, "stdin": true]}``; the environment is
  inherited.
- runs ``bash -c COMMAND`` in its own new session and process group, stdin
  from /dev/null, stdout/stderr on two pipes that this process reads (one
  thread, ``selectors``) and appends to the spool files ``stdout`` /
  ``stderr``, and after each run of bytes of one stream a record to the spool
  file ``order`` (``OrderLog``): the true relative order of the two streams,
  which two files alone cannot tell.
- with ``"stdin": true``, the task's stdin is a pipe instead, fed by a thread of
  its own (``_StdinFeeder``) from the spool ``stdin`` that the drone appends to;
  it rewrites ``stdin.fed`` with how many bytes the task took, and closes the
  pipe once ``stdin.eof`` (``{"size"}``) says the spool is complete and all of
  it was fed. Blocking writes to the pipe are the back-pressure: the drone
  fetches no further ahead of ``stdin.fed`` than its bound (drone/stdin.py).
- writes ``pid.json`` ``{"pid", "wrapper_pid", "started_at"}`` once started, then
  (given a report fd) one line on it, ``{"task_dir", "pid", "wrapper_pid",
  "started_at"}``, ``"pid": null`` when the task could not be started: the
  drone learns the start from that line the moment it is written, without
  looking for pid.json.
- after the task's main process ends, sends SIGTERM then SIGKILL to what is
  left of its process group (nothing outlives a task), reads the pipes to
  their end (at most ``DRAIN_SECONDS`` more: a process that left the group can
  hold a pipe open for ever), then writes
  ``exit.json`` ``{"exit_code", "signal", "cpu_seconds", "max_rss",
  "finished_at", "error"}`` atomically.

Two ways in. ``wrapper.py TASK_DIR [REPORT_FD]`` owns one task (a cold start,
an interpreter per task). ``wrapper.py --launcher`` is the drone's launcher: a
pre-started wrapper, in its own session, that has already paid the
interpreter's start and imports, and reads one line per task on its stdin,
``{"task_dir", "env"}``; for each it forks, and the child becomes that task's
wrapper exactly as a cold one (new session, cwd TASK_DIR, the task's env,
stderr to ``wrapper.log``), reporting on the launcher's stdout. The launcher
never runs a task itself, holds no task dir, and exits at EOF on its stdin,
which the kernel gives it when the drone that started it is gone, killed or
not: a launcher is never left behind, and a forked wrapper never depends on
it (see docs/drone.md, "Starting a task").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

LEFTOVER_GRACE_SECONDS = 1.0
DRAIN_SECONDS = 2.0  # after the sweep: a process that escaped the group may hold a pipe open
READ_SIZE = 1 << 20  # one os.read takes all a full pipe holds: few syscalls per gigabyte
PIPE_SIZE = 1 << 20  # asked of the kernel (the unprivileged maximum); 64 KiB if refused
ORDER_HEADER = b"dragoon-order 1\n"
FLUSH_BYTES = 1 << 20  # a run of one stream is recorded at least every MiB...
FLUSH_SECONDS = 0.05  # ...and every 50 ms, so a reader never waits long on a busy stream
SWEEP_POLL = 0.02


class OrderLog:
    """The ``order`` spool: which stream each run of output bytes came from, in order.

    Two spool files cannot say whether a stderr line came before or after a
    stdout line; this file does, so a reader can replay the two in the order
    the task wrote them. The format is shared/order.py's (its reader lives
    there; this file may import nothing of the package):

    - the first line is ``dragoon-order 1`` (the format's version);
    - then one ASCII line per run, ``o N`` (the next N bytes of ``stdout``) or
      ``e N`` (of ``stderr``), N a decimal count without leading zeros, > 0.

    Only whole lines count, so the file can be read at any byte boundary. A
    run's record is written after its bytes are in their spool, so the counts
    never claim bytes the spools do not hold. Chunks of one stream in a row
    make one record, written when the other stream speaks, before the wrapper
    waits for output, or when the run reaches FLUSH_BYTES or FLUSH_SECONDS.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.tag = b""
        self.pending = 0
        self.since = 0.0
        self.failed = False  # a write failed (a full disk): no more records, never a wrong one
        self._write(ORDER_HEADER)

    def add(self, tag: bytes, count: int) -> None:
        if tag != self.tag:
            self.flush()
            self.tag = tag
        now = time.monotonic()
        if not self.pending:
            self.since = now
        self.pending += count
        if self.pending >= FLUSH_BYTES or now - self.since >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self._write(self.tag + b" %d\n" % self.pending)
            self.pending = 0

    def _write(self, line: bytes) -> None:
        # A record cut short would make the rest unreadable, so after a failed write the order
        # stops: its readers show what it does not cover in arrival order.
        if not self.failed and _write_all(self.fd, line) < len(line):
            self.failed = True


def _write_all(fd: int, data: bytes) -> int:
    """Bytes written: all of them, or fewer when the disk refuses (full, quota).

    The task must not die of a full disk it did not cause: the wrapper goes on
    reading its pipes, drops what it cannot store and says so once in
    wrapper.log (its stderr: given by the drone's ``spawn.launch`` to a cold
    start, opened by a forked wrapper itself, ``_forked``).
    """
    view = memoryview(data)
    written = 0
    while view:
        try:
            step = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as exc:
            _note_once(f"dragoon wrapper: output dropped, a spool write failed: {exc}")
            break
        written += step
        view = view[step:]
    return written


_noted: set[str] = set()


def _note_once(text: str) -> None:
    if text not in _noted:
        _noted.add(text)
        with contextlib.suppress(OSError):
            os.write(2, text.encode("utf-8", "replace") + b"\n")


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


def _write_json_atomic(path: str, value: dict[str, Any], *, durable: bool = True) -> None:
    # The task can write to TASK_DIR: whatever it planted under the temp name (a FIFO, which
    # would make this open wait forever, or a symlink) is unlinked, never opened.
    # ``durable=False`` skips the fsyncs: for a record that only matters while the task's
    # processes live (pid.json), which a power cut, the one thing fsync guards against,
    # ends anyway. A drone crash loses nothing the kernel holds.
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(value).encode("utf-8"))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
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


def _signal_group(pgid: int, signum: int) -> bool:
    """False when nothing is left of the group."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Pump:
    """Reads the task's stdout and stderr pipes into their spools, one thread, no blocking.

    Leftover background processes of a finished task must not keep writing its
    spool: once the main process is reaped, its group gets SIGTERM, then
    SIGKILL after LEFTOVER_GRACE_SECONDS, and the pipes are read meanwhile (so
    last words written on SIGTERM are kept), then to their end, for at most
    DRAIN_SECONDS more.
    """

    def __init__(self, child: subprocess.Popen[bytes], spools: dict[bytes, int],
                 order: OrderLog) -> None:
        self.child = child
        self.order = order
        self.selector = selectors.DefaultSelector()
        self.pipes = 0
        for tag, pipe in ((b"o", child.stdout), (b"e", child.stderr)):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self.selector.register(fd, selectors.EVENT_READ, (tag, spools[tag], pipe))
            self.pipes += 1
        self.pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # Linux >= 5.3; else polled
            self.pidfd = os.pidfd_open(child.pid)
            self.selector.register(self.pidfd, selectors.EVENT_READ, None)
        self.result: tuple[int, Any] | None = None  # (wait status, rusage) of the main process
        self.finished_at = 0.0
        self.kill_at: float | None = None  # SIGKILL for the leftovers is due then
        self.drain_until: float | None = None

    def run(self) -> tuple[int, Any, float]:
        """Until the main process is reaped, its group swept and the pipes drained."""
        while self.pipes or self.result is None or self.drain_until is None:
            events = self.selector.select(0)
            if not events:
                self.order.flush()  # the wrapper is about to wait: what it read is recorded
                events = self.selector.select(self._timeout())
            for key, _mask in events:
                if key.data is None:
                    self._reap()
                else:
                    self._read(key.fd, *key.data)
            self._step()
            if self.drain_until is not None and time.monotonic() >= self.drain_until:
                break
        self.order.flush()
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fd)
            if key.data is not None:
                key.data[2].close()  # an escaped writer gets EPIPE from now on
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.selector.close()
        assert self.result is not None
        return self.result[0], self.result[1], self.finished_at

    def _read(self, fd: int, tag: bytes, spool: int, pipe: IO[bytes]) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.selector.unregister(fd)
            pipe.close()  # through its file object, which would close the number again
            self.pipes -= 1
            return
        written = _write_all(spool, data)
        if written:
            self.order.add(tag, written)

    def _reap(self, *, block: bool = True) -> None:
        if self.result is not None:
            return
        while True:
            try:
                pid, status, usage = os.wait4(self.child.pid, 0 if block else os.WNOHANG)
                break
            except InterruptedError:
                continue
        if pid == 0:
            return
        self.child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap again
        self.result = (status, usage)
        self.finished_at = time.time()
        if self.pidfd is not None:
            self.selector.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if _signal_group(self.child.pid, signal.SIGTERM):
            self.kill_at = time.monotonic() + LEFTOVER_GRACE_SECONDS
        else:
            self.drain_until = time.monotonic() + DRAIN_SECONDS

    def _step(self) -> None:
        """The timed parts: reaping without a pidfd, the leftovers' SIGKILL."""
        if self.result is None and self.pidfd is None:
            self._reap(block=not self.pipes)
        if self.kill_at is not None and (time.monotonic() >= self.kill_at
                                         or not _group_alive(self.child.pid)):
            _signal_group(self.child.pid, signal.SIGKILL)
            self.kill_at = None
            self.drain_until = time.monotonic() + DRAIN_SECONDS

    def _timeout(self) -> float | None:
        now = time.monotonic()
        if self.kill_at is not None:
            return max(0.0, min(SWEEP_POLL, self.kill_at - now))
        if self.drain_until is not None:
            return max(0.0, self.drain_until - now)
        if self.result is None and self.pidfd is None:
            return SWEEP_POLL  # no pidfd: the exit is polled (_step)
        return None


def _unheeded(_signum: int, _frame: object) -> None:
    """The handler of the signals the wrapper outlives (a handler, not SIG_IGN: see below)."""


def _ignore_signals() -> None:
    # The wrapper must outlive hang-ups and the drone's own signals; only the task is killed.
    # Caught by a handler that does nothing rather than ignored: exec gives a caught signal
    # its default back, where an ignored one would stay ignored in the task, so bash starts
    # without a preexec_fn, which lets Popen use vfork (~1 ms less per task start).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, _unheeded)
    # A spool past a file-size limit is a failed write (EFBIG, see _write_all), not a death;
    # Popen's restore_signals gives the task the default back.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


_reported = False  # this process has said how its task started: its report fd is closed


def _report(fd: int | None, task_dir: str, pid: int | None, started_at: float) -> None:
    """The one line that tells the drone the task started (or could not), then the fd closes.

    Under PIPE_BUF bytes, so the lines of wrappers forked by one launcher never interleave.
    """
    global _reported
    if fd is None or _reported:
        return
    _reported = True
    line = json.dumps({"task_dir": task_dir, "pid": pid, "wrapper_pid": os.getpid(),
                       "started_at": started_at}).encode("utf-8") + b"\n"
    with contextlib.suppress(OSError):  # the drone is gone: it reads pid.json when back
        os.write(fd, line)
    with contextlib.suppress(OSError):
        os.close(fd)


def main(task_dir: str, report_fd: int | None = None) -> int:
    _ignore_signals()
    exit_path = os.path.join(task_dir, "exit.json")
    with open(os.path.join(task_dir, "launch.json"), encoding="utf-8") as handle:
        launch = json.load(handle)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    out_fd = os.open(os.path.join(task_dir, "stdout"), flags, 0o600)
    err_fd = os.open(os.path.join(task_dir, "stderr"), flags, 0o600)
    order = OrderLog(os.open(os.path.join(task_dir, "order"), flags, 0o600))
    started_at = time.time()
    stdin_pipe = _stdin_pipe(task_dir, launch)
    try:
        child = subprocess.Popen(
            ["bash", "-c", launch["command"]],
            stdin=subprocess.DEVNULL if stdin_pipe is None else stdin_pipe[0],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=launch["cwd"],
            start_new_session=True,
            close_fds=True,
            # The task gets default signal dispositions: exec resets the caught ones, and
            # restore_signals the ignored SIGPIPE and SIGXFSZ.
            restore_signals=True,
        )
    except OSError as exc:
        notice = f"dragoon: cannot start the task: {exc}\n".encode()
        order.add(b"e", _write_all(err_fd, notice))
        order.flush()
        _write_json_atomic(exit_path, {
            "exit_code": None, "signal": None, "cpu_seconds": 0.0, "max_rss": 0,
            "started_at": started_at, "finished_at": time.time(),
            "error": f"cannot start the task: {exc.strerror or exc}",
        })
        _report(report_fd, task_dir, None, started_at)
        return 0
    if stdin_pipe is not None:
        os.close(stdin_pipe[0])  # the task holds it now: its exit gives the feeder EPIPE
        stdin_pipe[1].start()
    _write_json_atomic(os.path.join(task_dir, "pid.json"),
                       {"pid": child.pid, "wrapper_pid": os.getpid(), "started_at": started_at},
                       durable=False)
    _report(report_fd, task_dir, child.pid, started_at)
    status, usage, finished_at = _Pump(child, {b"o": out_fd, b"e": err_fd}, order).run()
    os.close(out_fd)
    os.close(err_fd)
    os.close(order.fd)
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


def serve() -> int:
    """The launcher (``--launcher``): fork one wrapper per line on stdin, until its EOF.

    stdin is the drone's command pipe and stdout the report pipe; both move to fds of
    their own, and 0 and 1 become /dev/null. The launcher stays single-threaded (a fork
    copies only the calling thread) and lets the kernel reap its children (SIGCHLD
    ignored): a forked wrapper is watched by the drone through its pid, never by this
    process, so it runs on whatever becomes of the launcher.
    """
    _ignore_signals()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    commands, report = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    pending = b""
    while True:
        try:
            chunk = os.read(commands, 1 << 16)
        except InterruptedError:
            continue
        if not chunk:
            return 0  # the drone closed the pipe or is gone: a launcher never outlives it
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if os.fork() == 0:
                os._exit(_forked(line, commands, report))


def _forked(line: bytes, commands: int, report: int) -> int:
    """In the child: become the wrapper of the task the line names, as a cold start would."""
    task_dir = ""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the wrapper reaps its task itself
        os.close(commands)
        os.setsid()  # a session of its own, apart from the launcher's
        order = json.loads(line)
        task_dir, env = str(order["task_dir"]), order["env"]
        os.chdir(task_dir)
        log = os.open(os.path.join(task_dir, "wrapper.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    except Exception as exc:  # said in the report; nothing was started
        _note_once(f"dragoon launcher: cannot become the task's wrapper: {exc!r}")
        _report(report, task_dir, None, time.time())
        return 1
    try:
        return main(task_dir, report)
    except Exception as exc:  # this wrapper fails alone, never the launcher
        _note_once(f"dragoon wrapper: {exc!r}")
        return 1
    finally:
        _report(report, task_dir, None, time.time())  # unless main() has reported
        with contextlib.suppress(Exception):
            sys.stderr.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--launcher"]:
        sys.exit(serve())
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
