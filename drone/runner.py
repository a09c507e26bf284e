"""One held task, from launch (or re-adoption after a restart) to the relay's acknowledged finish.

The runner owns no process: the wrapper does. It learns of the task's end
from the wrapper's exit (a pidfd, drone/watch.py) and then reads
``exit.json``; it enforces the timeout and cancel (SIGTERM to the process
group, grace, SIGKILL) with loop timers; it ships output and messages when
the task dir says they changed (inotify, drone/dirwatch.py), then artifacts,
reports the finish, and removes the task's spool once the relay holds it all.
A runner whose task has ended keeps no timer: a drone holding no running task
does not wake for tasks at all. Everything it decides is written to the task
dir first (``kill.json``, ``result.json``), so a restarted drone re-arms the
same timers from the same records and decides the same.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dragoon.drone import artifacts, safefile, spawn
from dragoon.drone.client import (
    JitteredBackoff,
    RelayLink,
    RelayUnavailable,
    error_code,
    until_reachable,
)
from dragoon.drone.dirwatch import BACKSTOP, DirWatch
from dragoon.drone.inbox import InboxShipper
from dragoon.drone.sealer import SealedSpool
from dragoon.drone.shipper import (
    IDLE_POLL,
    AckedOffsets,
    StreamShipper,
    TaskFinished,
    TaskGone,
)
from dragoon.drone.state import read_json, write_json
from dragoon.drone.stdin import FED, StdinFetcher, stdin_note
from dragoon.drone.stdin import IDLE as STDIN_IDLE
from dragoon.drone.watch import ExitWatch
from dragoon.shared.e2e import new_task_key
from dragoon.shared.spec import TaskSpec

if TYPE_CHECKING:
    from dragoon.drone.config import DroneSettings

log = logging.getLogger("dragoon.drone")

STREAMS: Final = ("stdout", "stderr", "order")  # order: which of the two came when
OPTIONAL: Final = frozenset({"order"})  # given up, not retried, if the relay refuses it
SAMPLE_EVERY: Final = 1.0  # seconds between process-tree samples, while the task runs
SAMPLE_FIRST: Final = 0.25  # the first sample: a task this short has its wrapper's figures
INBOX_EVERY: Final = 0.2  # seconds between looks at the inbox where inotify is missing
WATCHED: Final = (*STREAMS, "inbox", FED)  # the task dir's files whose changes wake the runner
VANISHED: Final = ("the task's wrapper process vanished without recording an exit status "
                   "(killed from outside the drone?)")


@dataclass
class Outcome:
    """What the drone reports in the finish body; computed once, then kept in result.json."""

    state: str
    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None
    peak_rss: int | None
    started_at: float | None
    finished_at: float
    error: str | None


class TaskRunner:
    def __init__(
        self,
        *,
        task_id: str,
        task_dir: Path,
        work_dir: Path,
        spec: TaskSpec,
        timeout: float | None,
        grace: float,
        client: RelayLink,
        settings: DroneSettings,
        before_cleanup: Callable[[], None] | None = None,
        start_notes: list[str] | None = None,
        task_key: str | None = None,
    ) -> None:
        """``before_cleanup`` runs (in a thread) before the task dir is removed: the daemon's
        ledger writes state.json then, as the task dir held the accept's durable record.
        ``start_notes``: task.json's notes (the daemon has just written or read it).
        ``task_key``: what the task's output is sealed under (task.json's, drone/sealer.py)."""
        self.id = task_id
        self._before_cleanup = before_cleanup
        self._start_notes = [str(n) for n in start_notes] if isinstance(start_notes, list) else []
        # The task key (task.json's, base64): what this task's reported texts are sealed with.
        self.task_key = base64.b64decode(task_key) if isinstance(task_key, str) else None
        if self.task_key is None:
            # A task adopted from before sealed tasks: no pilot can open its output whatever
            # key seals it (one mode: never shipped in clear); the pilot is told it does not
            # open.
            log.error("task %s has no task key; its output cannot be opened by any pilot",
                      task_id)
        self.output_key = self.task_key or new_task_key()
        self.dir = task_dir
        self.work_dir = work_dir
        self.spec = spec
        self.timeout = timeout
        self.grace = grace
        self.client = client
        self.settings = settings
        self._proc: spawn.ProcRecord | None = None
        self.wrapper: subprocess.Popen[bytes] | None = None
        self.exited = asyncio.Event()
        self.exit_info: dict[str, Any] | None = None
        self.kill: dict[str, Any] | None = read_json(task_dir / "kill.json")
        sample = read_json(task_dir / "sample.json") or {}
        self.peak_rss: int = int(sample.get("peak_rss", 0))
        self.cpu_seen: float = float(sample.get("cpu_seconds", 0.0))
        self.outcome: Outcome | None = None
        saved = read_json(task_dir / "result.json")
        if isinstance(saved, dict):
            self.outcome = Outcome(**saved)
            self.exited.set()
        self.offsets = AckedOffsets(task_dir / "acked.json",
                                    lambda p, v: write_json(p, v, durable=False))
        hint = read_json(task_dir / "acked.json")
        if isinstance(hint, dict):
            self.offsets.offsets.update({k: int(v) for k, v in hint.items() if k in STREAMS})
        self.shippers = {
            stream: StreamShipper(
                client, task_id=task_id, stream=stream,
                sealer=SealedSpool(task_key=self.output_key, task_id=task_id, stream=stream,
                                   plain=task_dir / stream),
                acked=self.offsets.offsets[stream], on_ack=self.offsets.update,
                optional=stream in OPTIONAL)
            for stream in STREAMS
        }
        # Its messages are sealed under the task key, and its stdin opened with it.
        self.inbox = InboxShipper(client, task_id=task_id, inbox=task_dir / "inbox",
                                  state_path=task_dir / "inbox.json", task_key=self.task_key)
        self.stdin = (StdinFetcher(client, task_id=task_id, task_dir=task_dir,
                                   task_key=self.task_key) if spec.stdin else None)
        self.done = asyncio.Event()
        # Armed by run(), in the loop: the exit watch, the timers, the task dir's watch.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_watch: ExitWatch | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.files: DirWatch | None = None

    # ----- process control: the wrapper's exit is an event, deadlines are timers -----

    @property
    def running(self) -> bool:
        """Occupies a slot: started (or starting) and not yet exited."""
        return not self.exited.is_set()

    @property
    def proc(self) -> spawn.ProcRecord | None:
        return self._proc

    @proc.setter
    def proc(self, record: spawn.ProcRecord | None) -> None:
        """Known once the wrapper named the task's pid; watched from then on if run() began."""
        self._proc = record
        if record is not None and self._loop is not None:
            self._watch_process()

    def _arm(self) -> None:
        """Start watching (from run(), in the loop): the task dir always, the process if known."""
        self._loop = asyncio.get_running_loop()
        self.files = DirWatch(self.dir, WATCHED, loop=self._loop)
        if not self.files.active:
            log.info("task %s: no inotify (%s); its files are looked at every %g s", self.id,
                     self.files.why_not, IDLE_POLL)
        if self._proc is not None:
            self._watch_process()

    def _watch_process(self) -> None:
        """Watch the wrapper's exit, arm the timeout and a pending kill's grace, sample."""
        if self.exited.is_set() or self._proc is None or self._exit_watch is not None:
            return
        proc = self._proc
        self._exit_watch = ExitWatch(proc.wrapper_pid, lambda: spawn.wrapper_alive(proc),
                                     self._wrapper_exited, loop=self._loop)
        if self.exited.is_set():
            return
        if self.kill is not None and not self.kill.get("term_sent", True):
            self._send_term()  # a cancel that came while the task was starting
        self._arm_deadlines()
        self._later("sample", SAMPLE_FIRST, self._sample_now)

    def _later(self, name: str, delay: float, callback: Any) -> None:
        """(Re)arm the runner's timer ``name``; a wall-clock deadline in the past fires at once."""
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if self._loop is not None and not self.exited.is_set():
            self._timers[name] = self._loop.call_later(max(0.0, delay), self._fire, name,
                                                       callback)

    def _fire(self, name: str, callback: Any) -> None:
        self._timers.pop(name, None)
        if self.exited.is_set():
            return
        try:
            callback()
        except Exception:
            log.exception("task %s: %s failed", self.id, name)

    def _arm_deadlines(self) -> None:
        """The timeout and the grace, from the task's records: a restarted drone arms the same."""
        if self._proc is None:
            return
        now = time.time()
        if self.timeout is not None and self.kill is None:
            self._later("timeout", self._proc.started_at + self.timeout - now, self._timed_out)
        if self.kill is not None and not self.kill.get("escalated"):
            self._later("grace", self.kill["term_at"] + self.kill["grace"] - now,
                        self._escalate)

    def _timed_out(self) -> None:
        if self.kill is None:
            self.request_kill("timeout", self.grace)

    def _escalate(self) -> None:
        assert self._proc is not None and self.kill is not None
        if self.kill.get("escalated"):
            return
        log.info("task %s: grace over, SIGKILL to its process group", self.id)
        spawn.kill_tree(self._proc, signal.SIGKILL)
        self.kill["escalated"] = True
        write_json(self.dir / "kill.json", self.kill)

    def request_kill(self, reason: str, grace: float) -> None:
        """SIGTERM → grace → SIGKILL, started once; a later request can only shorten it."""
        if self.exited.is_set():
            return
        now = time.time()
        if self.kill is not None:
            if now + grace < self.kill["term_at"] + self.kill["grace"]:
                self.kill["grace"] = max(0.0, now + grace - self.kill["term_at"])
                write_json(self.dir / "kill.json", self.kill)
                self._arm_deadlines()
            return
        self.kill = {"reason": reason, "term_at": now, "grace": grace, "escalated": False,
                     "term_sent": False}
        why = {"timeout": "timed out", "replaced": "the drone was replaced"}.get(
            reason, "cancel requested")
        log.info("task %s: %s: SIGTERM to its process group, SIGKILL after %.0f s",
                 self.id, why, grace)
        self._send_term()
        timeout = self._timers.pop("timeout", None)
        if timeout is not None:
            timeout.cancel()
        if self._exit_watch is not None:
            self._arm_deadlines()

    def _send_term(self) -> None:
        """SIGTERM once the task's pid is known (a cancel can arrive while it is starting)."""
        assert self.kill is not None
        if self._proc is not None and not self.kill.get("term_sent"):
            spawn.kill_tree(self._proc, signal.SIGTERM)
            self.kill["term_sent"] = True
        write_json(self.dir / "kill.json", self.kill)

    def _wrapper_exited(self) -> None:
        """The pidfd said so: exit.json is written (the wrapper's last act), or never will be."""
        self._exit_watch = None
        if self.wrapper is not None:
            with contextlib.suppress(Exception):
                self.wrapper.poll()  # the drone's own child: reaped now, not left a zombie
        if not self._read_exit():
            self._conclude(self._failed(VANISHED))

    def tick(self) -> None:
        """Look once, now, for the task's end: reap the wrapper and read ``exit.json``.

        For the moments when no event can come: a launch whose wrapper never named
        the task's pid, a re-adoption that finds the wrapper gone. A running task's
        end arrives through its ExitWatch; nothing calls this periodically.
        """
        if self.exited.is_set():
            return
        if self.wrapper is not None:
            self.wrapper.poll()
        self._read_exit()

    def _sample_now(self) -> None:
        """One process-tree sample (peak RSS, CPU), then the next in SAMPLE_EVERY."""
        assert self._proc is not None
        sample = spawn.sample_tree(self._proc)
        if sample is not None:
            self.peak_rss = max(self.peak_rss, sample.rss)
            self.cpu_seen = max(self.cpu_seen, sample.cpu_seconds)
            write_json(self.dir / "sample.json",
                       {"peak_rss": self.peak_rss, "cpu_seconds": self.cpu_seen}, durable=False)
        self._later("sample", SAMPLE_EVERY, self._sample_now)

    def _failed(self, error: str) -> Outcome:
        started = self._proc.started_at if self._proc else None
        return Outcome("failed", None, None, self.cpu_seen or None, self.peak_rss or None,
                       started, time.time(), error)

    def _read_exit(self) -> bool:
        info = read_json(self.dir / "exit.json")
        if not isinstance(info, dict):
            return False
        self.exit_info = info
        self._conclude(self._outcome_from_exit(info))
        return True

    def _outcome_from_exit(self, info: dict[str, Any]) -> Outcome:
        exit_code, sig = info.get("exit_code"), info.get("signal")
        error = info.get("error")
        if error:
            state = "failed"
        elif self.kill is not None and self.kill["reason"] == "timeout":
            state, error = "timed_out", f"timed out after {self.timeout:g} s"
        elif self.kill is not None:
            state = "cancelled"
        elif exit_code == 0:
            state = "succeeded"
        else:
            state = "failed"
        cpu = max(float(info.get("cpu_seconds") or 0.0), self.cpu_seen)
        peak = max(int(info.get("max_rss") or 0), self.peak_rss)
        return Outcome(state, exit_code, sig, round(cpu, 3), peak,
                       info.get("started_at") or (self.proc.started_at if self.proc else None),
                       float(info.get("finished_at") or time.time()), error)

    def _conclude(self, outcome: Outcome) -> None:
        self._disarm()
        if self.outcome is None:
            self.outcome = outcome
            # An outcome read from exit.json (fsynced by the wrapper) is decided again, the
            # same, from it and kill.json by a drone that lost result.json in a power cut: not
            # fsynced then, off the path from the exit to the finish. One the drone made up
            # (a vanished wrapper, a reboot) has nothing else to be decided from: fsynced.
            write_json(self.dir / "result.json", outcome.__dict__,
                       durable=self.exit_info is None)
            how = (f"exit code {outcome.exit_code}" if outcome.exit_code is not None
                   else f"signal {outcome.signal}" if outcome.signal else outcome.error)
            log.info("task %s: exited (%s) → %s", self.id, how, outcome.state)
        self.exited.set()
        if self.files is not None:
            self.files.poke_all()  # every shipper takes the rest of its file now
            # Nothing writes the spools any more: the task dir's watch goes now, not at the
            # finish (which can wait long on a relay that is down), so only running tasks
            # hold one.
            self.files.close()

    def _disarm(self) -> None:
        """The task has ended: no timer and no process watch is left behind."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._exit_watch is not None:
            self._exit_watch.close()
            self._exit_watch = None

    def conclude_without_exit(self, error: str) -> None:
        """The task can never report an exit (reboot, failed launch): it ends as failed."""
        self._conclude(self._failed(error))

    # ----- shipping and reporting -----

    async def run(self) -> None:
        """Ship everything, then finish; returns when the relay holds the task's end.

        Once the exit is known every byte is in the spools (the wrapper drains the
        pipes before it writes exit.json): the streams' tails and the messages'
        (artifacts, then the inbox's last lines) go at once and side by side, and the
        finish the moment both are acknowledged.
        """
        self._arm()
        try:
            await self._gather(self._ship_until_exit(), self._messages())
            await self._finish()
        except TaskGone as exc:
            log.warning("task %s: %s; dropping its spool", self.id, exc)
        finally:
            self._disarm()
            if self.files is not None:
                self.files.close()
        for shipper in self.shippers.values():
            shipper.close()
        # A task can leave any number of files in its task dir: removed off the loop.
        try:
            await asyncio.to_thread(self._cleanup)
        except OSError as exc:  # state.json not written: the task dir, its record, stays
            log.error("task %s: cannot record its accept in state.json (%s); its task dir "
                      "is kept", self.id, exc)
        self.done.set()

    @staticmethod
    async def _gather(*coros: Any) -> None:
        """All of them; the first failure cancels the rest and is raised."""
        jobs = [asyncio.ensure_future(c) for c in coros]
        try:
            await asyncio.gather(*jobs)
        finally:
            for job in jobs:
                job.cancel()

    def _look_every(self, fallback: float) -> float:
        """Seconds between a waiter's own looks: rare where inotify (and the watch's safety
        look, every SAFETY_LOOK) wakes it, else ``fallback``."""
        return BACKSTOP if self.files is not None and self.files.active else fallback

    async def _ship_until_exit(self) -> None:
        """The three streams until the task has exited and the relay holds every byte."""
        assert self.files is not None
        every = self._look_every(IDLE_POLL)
        streams = [s.run(self.exited, self.files.poke(name), every)
                   for name, s in self.shippers.items()]
        # The task's stdin is fetched while it runs; once it has exited nobody reads it.
        feed = (asyncio.ensure_future(self.stdin.run(
            self.exited, self.files.poke(FED), self._look_every(STDIN_IDLE)))
            if self.stdin else None)
        try:
            await self._gather(*streams)
        except BaseException:
            self.offsets.flush()  # the hint for a restarted drone (a stop flushes it too)
            raise
        finally:
            if feed is not None:
                feed.cancel()
        # Every byte is acknowledged: no hint is written on the way to the finish (a drone
        # that crashes before it ships again from the last hint; the relay dedups).

    async def _messages(self) -> None:
        """The inbox while the task runs; after its exit, artifacts, then the last lines."""
        await self._inbox_loop()
        await self._artifacts()
        await until_reachable(lambda: self.inbox.ship(final=True))

    async def _inbox_loop(self) -> None:
        assert self.files is not None
        poke = self.files.poke("inbox")  # set by a write to the inbox, and by the exit
        every = self._look_every(INBOX_EVERY)
        backoff = JitteredBackoff()
        while not self.exited.is_set():
            try:
                await self.inbox.ship()
                backoff.reset()
                await poke.wait(every)
            except RelayUnavailable:
                await asyncio.sleep(backoff.next_delay())

    async def _artifacts(self) -> None:
        if not self.spec.artifacts:
            return
        record_path = self.dir / "artifacts.json"
        record = read_json(record_path)
        if not isinstance(record, dict):
            selection = await safefile.in_thread(lambda: artifacts.select(
                self.work_dir, self.spec.artifacts, max_total=self.settings.max_artifact_bytes))
            notes = [f"artifact pattern {pattern!r} matched nothing"
                     for pattern in selection.unmatched]
            notes += [f"artifact refused: {what}: {reason}" for what, reason in selection.refused]
            if notes:
                # They reach the pilot as messages sent by the drone itself (the inbox file is
                # the task's to write, and could be a FIFO by now) and as the task's notes.
                self.inbox.note(*(f"dragoon: {note}" for note in notes))
                log.info("task %s: %s", self.id, "; ".join(notes))
            record = {"files": [[m.path, str(m.real), m.size] for m in selection.matches],
                      "refused": selection.refused, "uploaded": [], "notes": notes}
            write_json(record_path, record)
        for index, (rel, real, _size) in enumerate(record["files"]):
            if rel in record["uploaded"]:
                continue
            # Done either way: stored, or refused (said in a message and in the task's notes).
            refused = await until_reachable(
                lambda index=index, rel=rel, real=real: self._upload(record, index, rel,
                                                                     Path(real)))
            if refused is not None:
                self.inbox.note(f"dragoon: {refused}")
                record.setdefault("notes", []).append(refused)
            record["uploaded"].append(rel)
            write_json(record_path, record)

    def _task_key(self) -> bytes:
        """The task key (task.json's, read when the runner was made)."""
        if self.task_key is None:
            raise artifacts.ArtifactRefused("the task's key is not in its task.json")
        return self.task_key

    async def _seal(self, record: dict[str, Any], index: int, real: Path) -> Any:
        """The artifact sealed into its spool (shared/sealed_files.py), once: a resend after
        a restart uploads the same bytes, which the relay takes as the resend it is."""
        from dragoon.shared.sealed_files import FileStream, Sealed, seal_file

        spool = self.dir / f"artifact-{index}.sealed"
        kept = Sealed.from_json(record.setdefault("sealed", {}).get(str(index)))
        if kept is not None and spool.is_file() and spool.stat().st_size == kept.stored_size:
            return kept
        fd, size = await safefile.in_thread(artifacts.open_match, self.work_dir, real)
        try:
            stream = FileStream(self._task_key(), self.id, "artifact", str(index))
            rel = record["files"][index][0]
            sealed = await safefile.in_thread(
                lambda: seal_file(fd, size, spool, stream, path=rel))
        finally:
            os.close(fd)
        record["sealed"][str(index)] = sealed.to_json()
        write_json(self.dir / "artifacts.json", record)
        return sealed

    async def _upload(self, record: dict[str, Any], index: int, rel: str,
                      real: Path) -> str | None:
        """Upload one artifact, sealed under the task key: None once the relay stored it,
        else why it was not. The relay knows it by its index alone; its path, size and
        hash travel in the sealed metadata."""
        spool = self.dir / f"artifact-{index}.sealed"
        try:
            sealed = await self._seal(record, index, real)
            fd = os.open(spool, os.O_RDONLY | os.O_NOFOLLOW)
        except (artifacts.ArtifactRefused, OSError) as exc:  # OSError: the spool (disk full)
            log.warning("task %s: artifact %s not uploaded: %s", self.id, rel, exc)
            return f"artifact not stored: {rel}: {exc}"
        try:
            params = {"task": self.id, "path": str(index), "sha256": sealed.stored_sha256,
                      "size": sealed.stored_size, "meta": sealed.meta}
            response = await self.client.request(
                "POST", "/v1/worker/blob", params=params,
                stream=artifacts.stream_fd(fd, sealed.stored_size),
                stream_sha256=sealed.stored_sha256, stream_size=sealed.stored_size,
                read_timeout=300.0)
        finally:
            os.close(fd)
        if response.status_code == 200:
            log.info("task %s: artifact %s uploaded (%d bytes, %d sealed)", self.id, rel,
                     sealed.size, sealed.stored_size)
            spool.unlink(missing_ok=True)
            return None
        reason = f"HTTP {response.status_code} {error_code(response)}"
        log.warning("task %s: artifact %s refused by the relay: %s", self.id, rel, reason)
        return f"artifact not stored: {rel}: {reason}"

    def finish_body(self) -> dict[str, Any]:
        assert self.outcome is not None
        body: dict[str, Any] = {"task": self.id, **self.outcome.__dict__}
        for stream, shipper in self.shippers.items():
            if not shipper.given_up:  # a relay that refused the order stream is not told of it
                body[f"{stream}_size"] = shipper.spool_size()
        if body["cpu_seconds"] is not None:
            body["cpu_seconds"] = float(body["cpu_seconds"])
        if body["peak_rss"] is not None:
            body["peak_rss"] = int(body["peak_rss"])
        if body["error"] is not None:
            body["error"] = self.sealed(str(body["error"])[:2000], "error")
        notes = self.notes()
        if notes:
            body["notes"] = [self.sealed(note, f"note-{i}") for i, note in enumerate(notes)]
        return body

    def sealed(self, text: str, name: str) -> str:
        """A text about the task, sealed under its key (shared/e2e.py ``seal_text``): a
        reason or note may quote the command's cwd or an artifact's path, which the relay
        must not read. Only a task adopted from before sealed tasks has no key."""
        if self.task_key is None:
            return text
        from dragoon.shared.e2e import seal_text

        return seal_text(self.task_key, text, task_id=self.id, name=name)

    def notes(self) -> list[str]:
        """What the task's finish says without failing it: the daemon's notes at its start
        (task.json: dragoon upgraded under the drone; handed over by the daemon, which wrote
        or read it), its artifact notes (artifacts.json) and why its stdin stopped early
        (stdin.note), kept on disk so a drone restarted before the finish still reports
        them."""
        notes = [note[:1000] for note in self._start_notes]
        if self.spec.artifacts:
            record = read_json(self.dir / "artifacts.json")
            found = record.get("notes") if isinstance(record, dict) else None
            notes += [str(note)[:1000] for note in found] if isinstance(found, list) else []
        stopped = stdin_note(self.dir) if self.spec.stdin else None
        if stopped:  # the relay's stdin did not open (drone/stdin.py): said, never fed
            notes.append(stopped[:1000])
        return notes[:100]

    async def _finish(self) -> None:
        backoff = JitteredBackoff()
        while True:
            try:
                response = await self.client.request("POST", "/v1/worker/finish",
                                                      json_body=self.finish_body())
            except RelayUnavailable:
                await asyncio.sleep(backoff.next_delay())
                continue
            if response.status_code == 200:
                log.info("task %s: finish acknowledged (%s)", self.id, self.outcome and
                         self.outcome.state)
                return
            code = error_code(response)
            if response.status_code == 409 and code == "output_incomplete":
                held = response.json()
                for stream in STREAMS:
                    if isinstance(held.get(f"{stream}_size"), int):
                        self.shippers[stream].acked = held[f"{stream}_size"]
                log.info("task %s: relay lacks output; shipping the rest", self.id)
                await self._ship_until_exit()
                continue
            if response.status_code == 404:
                raise TaskGone(f"relay does not know task {self.id}")
            if response.status_code == 409 and code == "task_finished":
                raise TaskFinished(f"relay holds another outcome for task {self.id}: "
                                   f"{response.json().get('state')}")
            log.warning("task %s: finish refused: HTTP %d %s; retrying", self.id,
                        response.status_code, code)
            await asyncio.sleep(backoff.next_delay())

    def _cleanup(self) -> None:
        """The relay holds it all: the spool and the task's records go (its accept is in
        state.json first)."""
        if self._before_cleanup is not None:
            self._before_cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def reap(self) -> None:
        if self.wrapper is not None:
            with contextlib.suppress(Exception):
                self.wrapper.poll()
