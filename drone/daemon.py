"""``dragoon drone run``: the long-poll loop, task acceptance, and re-adoption after a restart.

One asyncio loop holds two kinds of work: the poll loop (heartbeat with
metrics, tasks, cancels and fetches in the answer), and one runner per held
task that watches its process, ships its output and reports its end. Nothing
runs on a period: a runner learns of its task's exit and output from the
kernel (pidfd, inotify) and keeps timers only while its task runs, so a drone
holding no running task sleeps in its long-poll. Stopping the drone (SIGTERM, SIGINT) stops
only the drone: tasks run on in their own sessions and a new drone re-adopts
them from the data dir. Being replaced (the relay answers ``drone_replaced``:
a newer enrollment took the name) is the exception: the drone kills its tasks,
whose results could never be reported, and exits with ``EXIT_REPLACED``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dragoon.drone import config, fetch, safefile
from dragoon.drone.client import (
    DroneReplaced,
    JitteredBackoff,
    RelayLink,
    RelayUnavailable,
    error_code,
    until_reachable,
)
from dragoon.drone.install import RunningCode, installed_version
from dragoon.drone.launcher import Launcher
from dragoon.drone.lazy import lazy_call, lazy_module
from dragoon.drone.metrics import Metrics
from dragoon.drone.pilots_publish import PilotsPublisher
from dragoon.drone.state import (
    AdmissionLedger,
    DataDir,
    fsync_dir,
    is_safe_id,
    read_json,
    write_json,
)
from dragoon.shared.keys import PublicKey, load_public_key_file
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.tls import ca_context

if TYPE_CHECKING:
    import httpx
    from dragoon.drone import spawn
    from dragoon.drone.artifacts import stream_fd
    from dragoon.drone.orders import OrderGate
    from dragoon.drone.runner import TaskRunner
    from dragoon.drone.verify import parse_spec, parse_task, verify_task
    from dragoon.shared.spec import TaskSpec
    from dragoon.shared.trust import X25519Key
else:
    # The task path (and psutil, ctypes, the spec rules under it) is loaded by the first
    # task or re-adoption, not by an idle drone (drone/lazy.py; tests/drone/test_imports.py).
    spawn = lazy_module("dragoon.drone.spawn")
    stream_fd = lazy_call("dragoon.drone.artifacts", "stream_fd")
    TaskRunner = lazy_call("dragoon.drone.runner", "TaskRunner")
    parse_spec = lazy_call("dragoon.drone.verify", "parse_spec")
    parse_task = lazy_call("dragoon.drone.verify", "parse_task")
    verify_task = lazy_call("dragoon.drone.verify", "verify_task")

log = logging.getLogger("dragoon.drone")

DEFER_PAUSE: Final = 1.0
FETCH_MEMORY: Final = 1000
FETCH_CHECK_WAIT: Final = 2.0  # seconds a poll waits for fetch checks, so refusals ride on it
# Variables of the drone's own supervisor that a task must not inherit.
PRIVATE_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS",
                      "LISTEN_PID", "LISTEN_FDNAMES")
# What decides whom the drone's own HTTPS client trusts: the relay's CA is the drone's
# business, and a task that inherited it would trust (or fail to trust) the rest of the
# world by the drone's rule. A task that needs one sets it in its spec's env, which is kept.
TLS_ENV: Final = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                  "SSLKEYLOGFILE", "DRAGOON_CA_CERT")
# The exit status of a drone whose name a newer enrollment took (EX_CONFIG of sysexits.h):
# starting it again cannot help, so deploy/dragoon-drone.service does not restart on it.
EXIT_REPLACED: Final = 78
# Past their grace, the killed tasks of a replaced drone get this long to be reaped.
REPLACED_REAP: Final = 10.0


version = installed_version  # the version this drone reports; read once, at its start


class DroneDaemon:
    def __init__(self, data: DataDir, *, ca_cert: Path | None = None) -> None:
        """``ca_cert`` (``drone run --ca-cert``) wins over drone.toml's ``ca_cert``."""
        self.data = data
        self.settings = config.load(data.settings)
        self.signer = KeyFileSigner.from_file(data.key)
        self.relay_key: PublicKey = load_public_key_file(data.relay_key)
        self.state = AdmissionLedger.load(data.state, data.tasks)
        self.ca_cert = ca_cert or self.settings.ca_cert_path(data.root)
        verify = ca_context(self.ca_cert) if self.ca_cert is not None else True
        self.client = RelayLink(self.settings.relay, self.signer, verify=verify)
        self.metrics = Metrics(data.root)
        self.runners: dict[str, TaskRunner] = {}
        self._launching: dict[str, TaskRunner] = {}  # accepted, wrapper not yet reported
        self.launcher: Launcher | None = None  # made in main(), with the captured wrapper
        self._jobs: set[asyncio.Task[Any]] = set()
        self._unheld: set[str] = set()
        self._fetches_seen: dict[str, None] = {}  # insertion-ordered, bounded
        self._x25519: X25519Key | None = None  # the encryption key, read at the first task
        self._gate: OrderGate | None = None  # made at the first order (drone/orders.py)
        self.pilots_list = PilotsPublisher(data.authorized_pilots, self.signer,
                                           self.settings.name)
        self._order_ids: dict[str, str] = {}  # held task → the id of the order it runs under
        self._cancels_refused: dict[tuple[str, object], None] = {}  # logged once each
        self.started: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.refused_cancels: list[dict[str, Any]] = []  # cancels whose order was refused
        self.fetch_errors: list[dict[str, Any]] = []
        self.hostname = socket.gethostname()
        self.version = version()
        self.code: RunningCode | None = None  # captured in main(), once the data dir exists
        self.fetch_roots = fetch.resolve_roots(self.settings.fetch_roots, data.work)
        self._stop = asyncio.Event()
        # Clear while a poll answer is being acted on: a task may be half launched then.
        self._answer_done = asyncio.Event()
        self._answer_done.set()

    # ----- lifecycle -----

    async def main(self) -> int:
        """Run until stopped (0) or told by the relay that the drone was replaced."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        self.data.create()
        self.code = RunningCode(self.data, version=self.version)
        self.launcher = Launcher(str(self.code.wrapper), self._drone_env())
        self.launcher.start()  # its interpreter starts now, off the first task's path
        log.info("drone %s starting (relay %s, %d slot(s), labels %s, TLS trust %s)",
                 self.settings.name, self.settings.relay, self.settings.slots,
                 ",".join(self.settings.labels) or "-", self.ca_cert or "system CAs")
        self._say_if_no_pilot()
        self.adopt()
        self._drop_fetch_spools()
        poller = asyncio.create_task(self.poll_loop())
        stopped = asyncio.create_task(self._stop.wait())
        replaced = asyncio.create_task(self.client.replaced.wait())
        await asyncio.wait({stopped, replaced}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        replaced.cancel()
        status = 0
        if self.client.replaced_by is not None:
            # Nothing more to ask of the relay: the key is retired. A task being launched
            # from the last answer is let through first, so that it is held, and killed.
            await self._answer_done.wait()
            poller.cancel()
            await self.stop_replaced(self.client.replaced_by)
            status = EXIT_REPLACED
        else:
            held = sum(1 for r in self.runners.values() if r.running)
            log.info("drone stopping; %d running task(s) keep running and will be re-adopted",
                     held)
        for job in (poller, *self._jobs):
            job.cancel()
        for runner in self.runners.values():
            runner.offsets.flush()
        await asyncio.gather(poller, *self._jobs, return_exceptions=True)
        self.state.save_if_behind()  # not needed (the task dirs hold them), but tidy
        await self.client.aclose()
        if self.launcher is not None:
            self.launcher.close()
        return status

    def _say_if_no_pilot(self) -> None:
        """A drone that obeys no pilot runs nothing: said at start, not first at a refusal.

        Read as text (a key line is a line that is neither blank nor a comment): the keys
        themselves are parsed by the first order's check (drone/orders.py).
        """
        try:
            text = self.data.authorized_pilots.read_text("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            log.error("cannot read %s (%s): this drone runs nothing until it can",
                      self.data.authorized_pilots, exc)
            return
        if not any(line.strip() and not line.lstrip().startswith("#")
                   for line in text.splitlines()):
            log.warning("%s authorizes no pilot: this drone runs nothing (every order is "
                        "refused) until a pilot key is added on this box: dragoon drone "
                        "authorize KEY --data %s (docs/drone.md)",
                        self.data.authorized_pilots, self.data.root)

    async def stop_replaced(self, replaced: DroneReplaced) -> None:
        """A newer enrollment took this drone's name: kill its tasks, then stop for good.

        Their results could never be reported (the relay has them ``lost``), and a
        task left running would compete with its re-submission on the new drone.
        Each gets SIGTERM, its grace, then SIGKILL (its runner's timer does that).
        """
        name = replaced.drone or self.settings.name
        when = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(replaced.replaced_at))
                if replaced.replaced_at is not None else "an unknown time")
        log.error("replaced by a newer enrollment of %s at %s; stopping", name, when)
        running = [r for r in self.runners.values() if r.running]
        for runner in running:
            runner.request_kill("replaced", runner.grace)
        if not running:
            return
        deadline = max(r.grace for r in running) + REPLACED_REAP
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.exited.wait() for r in running)), deadline)
        left = [r.id for r in running if r.running]
        if left:
            log.warning("task(s) %s did not exit after SIGKILL", ", ".join(left))

    def _spawn_job(self, coro: Any) -> asyncio.Task[Any]:
        job = asyncio.create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, job: asyncio.Task[Any]) -> None:
        self._jobs.discard(job)
        if (not job.cancelled() and job.exception() is not None
                and not isinstance(job.exception(), DroneReplaced)):
            log.error("internal error in a drone job: %r", job.exception(),
                      exc_info=job.exception())

    # ----- pilot-signed orders -----

    @property
    def gate(self) -> OrderGate:
        """The order checks (drone/orders.py), loaded with the first order, not at start."""
        if self._gate is None:
            from dragoon.drone.orders import OrderGate

            self._gate = OrderGate(self.data.root, self.data.authorized_pilots,
                                   name=self.settings.name, labels=self.settings.labels)
        return self._gate

    def refusal(self, why: str) -> str:
        """The reason the pilot reads for an order this drone refuses."""
        return f"refused by drone {self.settings.name}: {why}"

    def check_task_order(self, raw: dict[str, Any], task_id: str,
                         spec: dict[str, Any]) -> tuple[Any, str | None]:
        """The task's order, once it may be obeyed, or (None, the reason it is refused).

        Remembered (``seen_orders``) by ``admit`` once ``task.json`` holds the accept: an id
        seen before, for whichever task, is a replay (a task redelivered after its accept
        is known by ``is_accepted`` first, and acknowledged).
        """
        from dragoon.shared.canonical import spec_sha256
        from dragoon.shared.orders import OrderError

        try:
            order = self.gate.check(raw.get("order"), raw.get("order_signature"),
                                    kind="task", ref=task_id, strict=True)
            actual = spec_sha256(spec)
            if actual != order.fields["spec_sha256"]:
                raise OrderError(f"the spec hashes to {actual[:12]}…, not the "
                                 f"{order.fields['spec_sha256'][:12]}… the pilot signed")
        except OrderError as exc:
            return None, self.refusal(exc.detail)
        return order, None

    def open_sealed(self, raw: dict[str, Any], order: Any, clear: dict[str, Any],
                    task_id: str) -> tuple[Any, str | None]:
        """The task's whole spec and key out of its sealed payload (shared/sealed_task.py),
        or (None, the reason it is refused): a task not sealed to this drone's key, or
        whose payload, wrap or clear fields the relay altered, never runs."""
        from dragoon.shared.e2e import E2EError, seal_text
        from dragoon.shared.sealed_task import BadSealedSpec, open_task

        if self.signer.public_key.fingerprint not in order.fields["recipients"]:
            return None, self.refusal("the task is not sealed to this drone's key")
        try:
            opened = open_task(order, clear=clear, payload=raw.get("payload"),
                               wrap=raw.get("wrap"), x25519_secret=self.encryption_key().secret)
        except E2EError as exc:
            return None, self.refusal(exc.detail)
        except BadSealedSpec as exc:  # sealed by an authorized pilot, but no spec by the rule
            return None, seal_text(exc.task_key, f"bad_spec: {exc}", task_id=task_id,
                                   name="error")
        except (OSError, ValueError) as exc:  # TrustFileError included
            return None, self.refusal(f"its encryption key cannot be read: {exc}")
        return opened, None

    def _remember_task_order(self, order: Any, task_id: str) -> str | None:
        """Put the accepted task's order in seen_orders; None, or why it could not be."""
        from dragoon.shared.orders import OrderError

        try:
            # Not fsynced here: task.json (fsynced) holds the id too, until _before_cleanup.
            self.gate.seen.remember(order, task_id, durable=False)
        except OrderError as exc:
            log.error("task %s: %s", task_id, exc.detail)
            return exc.detail
        return None

    def _before_cleanup(self) -> None:
        """Before a task dir goes (in the runner's cleanup thread): the accept into state.json
        and the order's id into seen_orders, durably, as the dir held both till now."""
        self.state.save_if_behind()
        if self._gate is not None:
            self._gate.seen.sync()

    # ----- re-adoption -----

    def adopt(self) -> None:
        """Take back every task a previous drone held: running ones keep running.

        A running task's wrapper is no longer this drone's child, but its exit is
        still an event: the runner opens a pidfd on it (drone/watch.py) once its
        pid and start time are checked, and re-arms the timeout and any kill's
        grace from task.json and kill.json.
        """
        if not self.data.tasks.is_dir():
            return
        for task_dir in sorted(self.data.tasks.iterdir()):
            task_id = task_dir.name
            if not is_safe_id(task_id) or not task_dir.is_dir():
                continue
            record = read_json(task_dir / "task.json")
            if not isinstance(record, dict):
                log.warning("task %s: no readable task.json; leaving %s alone", task_id, task_dir)
                continue
            spec = parse_spec(record["spec"])
            if isinstance(spec, str):
                continue
            runner = self._make_runner(task_id, record, spec)
            if isinstance(record.get("order_id"), str):
                self._order_ids[task_id] = record["order_id"]
                # Accepted, and perhaps not yet in seen_orders (a crash between the two).
                self.gate.seen.recall(record["order_id"], record.get("order_expires"), task_id)
            if runner.outcome is None:
                proc = spawn.ProcRecord.from_json(read_json(task_dir / "proc.json"))
                if proc is None and not (task_dir / "exit.json").exists():
                    proc = spawn.recover(task_dir)
                runner.proc = proc
                if (task_dir / "exit.json").exists():
                    runner.tick()
                elif proc is None:
                    runner.conclude_without_exit("the drone stopped while starting the task; "
                                                 "it never started")
                elif spawn.rebooted_since(proc):
                    runner.conclude_without_exit(
                        f"the drone host rebooted while the task ran (pid {proc.pid}); "
                        "the task ended with it")
                elif not spawn.wrapper_alive(proc):
                    runner.tick()
                    if runner.outcome is None:
                        runner.conclude_without_exit(
                            "the task's wrapper process vanished without recording an exit "
                            "status (killed from outside the drone?)")
                else:
                    log.info("task %s: re-adopted (pid %d still running)", task_id, proc.pid)
                    self.started.append({"id": task_id, "started_at": proc.started_at,
                                         "pid": proc.pid})
            self._hold(runner)

    def _make_runner(self, task_id: str, record: dict[str, Any], spec: TaskSpec) -> TaskRunner:
        return TaskRunner(
            task_id=task_id, task_dir=self.data.task_dir(task_id),
            work_dir=Path(record["work_dir"]), spec=spec, timeout=record.get("timeout"),
            grace=float(record.get("grace", self.settings.default_grace)), client=self.client,
            settings=self.settings, before_cleanup=self._before_cleanup,
            start_notes=record.get("notes"), task_key=record.get("task_key"))

    def _hold(self, runner: TaskRunner) -> None:
        self.runners[runner.id] = runner
        job = self._spawn_job(runner.run())
        job.add_done_callback(lambda _j, task_id=runner.id: self._release(task_id))

    def _release(self, task_id: str) -> None:
        runner = self.runners.pop(task_id, None)
        self._order_ids.pop(task_id, None)
        if runner is not None:
            runner.reap()

    # ----- the poll loop -----

    async def poll_body(self) -> dict[str, Any]:
        return {
            "wait": self.settings.poll_wait,
            "metrics": await self.metrics.collect(),
            "labels": self.settings.labels,
            "slots": self.settings.slots,
            "hostname": self.hostname,
            "version": self.version,
            "running": sorted(self.runners),
            "started": list(self.started),
            "rejected": list(self.rejected),
            "fetch_errors": list(self.fetch_errors),
            "refused_cancels": list(self.refused_cancels),
        }

    async def poll_loop(self) -> None:
        backoff = JitteredBackoff()
        last_refusal: str | None = None
        while True:
            # Whom this drone obeys, signed, for the pilots to encrypt for: sent at start and
            # again once authorized_pilots changed (drone/pilots_publish.py); a stat a poll.
            await self.pilots_list.publish_if_due(self.client)
            body = await self.poll_body()
            try:
                response = await self.client.request(
                    "POST", "/v1/worker/poll", json_body=body,
                    read_timeout=self.settings.poll_wait + 20)
            except RelayUnavailable:
                await asyncio.sleep(backoff.next_delay())
                continue
            if response.status_code != 200:
                refusal = f"HTTP {response.status_code} {error_code(response)}"
                if refusal != last_refusal:
                    log.warning("relay refuses the poll: %s; retrying with backoff", refusal)
                    last_refusal = refusal
                await asyncio.sleep(backoff.next_delay())
                continue
            if last_refusal is not None:
                log.info("relay accepts the poll again")
                last_refusal = None
            backoff.reset()
            # What this poll carried has been heard; drop exactly those reports.
            for key, sent in (("started", body["started"]), ("rejected", body["rejected"]),
                              ("fetch_errors", body["fetch_errors"]),
                              ("refused_cancels", body["refused_cancels"])):
                pending: list[dict[str, Any]] = getattr(self, key)
                del pending[: len(sent)]
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            self._answer_done.clear()
            try:
                await self.handle_answer(answer if isinstance(answer, dict) else {})
            finally:
                self._answer_done.set()

    async def handle_answer(self, answer: dict[str, Any]) -> None:
        for item in answer.get("cancel") or []:
            if isinstance(item, dict):
                runner = self.runners.get(str(item.get("id")))
                if runner is not None:
                    grace = self.check_cancel(item, runner.grace)
                    if grace is not None:
                        runner.request_kill("cancel", grace)
        tasks = [t for t in answer.get("tasks") or [] if isinstance(t, dict)]
        deferred = False
        launches: list[asyncio.Future[None]] = []
        # Admitted one at a time, in sequence order (the sequence check and the durable
        # record), then launched together: the answer's wrappers start side by side.
        for raw in sorted(tasks, key=lambda t: t.get("seq") if isinstance(t.get("seq"), int)
                          else 0):
            admitted = self.admit(raw)
            if admitted is False:
                deferred = True
            elif admitted is not True:
                launches.append(asyncio.ensure_future(admitted))
        for item in answer.get("fetches") or []:
            if isinstance(item, dict):
                await self.start_fetch(item)
        # The next poll carries their "started" reports (a launch takes milliseconds).
        await asyncio.gather(*launches)
        if deferred:
            await self._slot_freed(DEFER_PAUSE)

    async def _slot_freed(self, timeout: float) -> None:
        """Until a held task exits (a slot is free), at most ``timeout``: the relay counted a
        slot the drone still had in use; its task is handed out again on the next poll."""
        exits = [asyncio.ensure_future(r.exited.wait())
                 for r in self.runners.values() if r.running]
        if not exits:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait(exits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in exits:
                waiter.cancel()

    def check_cancel(self, item: dict[str, Any], task_grace: float) -> float | None:
        """The grace a cancel is obeyed with, or None when its order is refused (logged and
        reported once).

        The pilot's cancel order must name this task and the order the task runs under;
        its grace is the one used (the relay's copy beside it is not), or the task's own.
        """
        from dragoon.shared.orders import OrderError

        task_id = str(item.get("id"))
        try:
            order = self.gate.check(item.get("order"), item.get("order_signature"),
                                    kind="cancel", ref=task_id)
            if order.fields["task"] != task_id:
                raise OrderError(f"the cancel order is for task {order.fields['task']}")
            if order.fields["task_order"] != self._order_ids.get(task_id):
                raise OrderError("the cancel order names another order than the one the "
                                 "task runs under")
            self.gate.seen.remember(order, task_id)
        except OrderError as exc:
            key = (task_id, item.get("order"))
            if key not in self._cancels_refused:
                self._cancels_refused[key] = None
                while len(self._cancels_refused) > FETCH_MEMORY:
                    del self._cancels_refused[next(iter(self._cancels_refused))]
                reason = self.refusal(exc.detail)
                log.warning("cancel of task %s refused: %s", task_id, reason)
                # Told to the relay once, which shows it on the task (``cancel_refused``).
                self.refused_cancels.append({"id": task_id, "reason": reason[:2000]})
            return None
        grace = order.fields["grace"]
        return self.settings.effective_grace(float(grace) if grace is not None else task_grace)

    def free_slots(self) -> int:
        in_use = sum(1 for r in self.runners.values() if r.running) + len(self._launching)
        return self.settings.slots - in_use

    def _reject(self, task_id: str, reason: str) -> None:
        log.warning("task %s rejected: %s", task_id, reason)
        self.rejected.append({"id": task_id, "reason": reason[:2000]})

    async def accept(self, raw: dict[str, Any]) -> bool:
        """Verify, record, launch; False only when the task was deferred for lack of a slot."""
        admitted = self.admit(raw)
        if isinstance(admitted, bool):
            return admitted
        await admitted
        return True

    def admit(self, raw: dict[str, Any]) -> bool | Coroutine[Any, Any, None]:
        """Verify and record the task durably, at once; its launch is the coroutine returned.

        True: nothing to launch (rejected, already accepted, failed before its start);
        False: deferred for lack of a slot. Everything up to the durable ``state.accept``
        happens here, without a yield, so accepts of one answer never interleave their
        sequence checks, and nothing is spawned before the task is recorded.
        """
        parsed = parse_task(raw)
        if isinstance(parsed, str):
            self._reject(str(raw.get("id", "?")), f"bad_task_signature: {parsed}")
            return True
        if self.state.is_accepted(parsed.id):
            log.info("task %s: already accepted; acknowledged, not run again", parsed.id)
            if (parsed.id not in self.runners and parsed.id not in self._launching
                    and parsed.id not in self._unheld):
                # Accepted, then lost in a crash before it started: end it, or the relay
                # would hand it out forever. At most once means never a second start.
                self._unheld.add(parsed.id)
                self._spawn_job(self._finish_unheld(parsed.id))
            return True
        if self.free_slots() <= 0:
            log.info("task %s: no free slot (%d in use); left to the relay", parsed.id,
                     self.settings.slots)
            return False
        reason = verify_task(parsed, relay_key=self.relay_key, drone_name=self.settings.name,
                             last_seq=self.state.last_seq)
        if reason is None and not is_safe_id(parsed.id):
            reason = f"task id {parsed.id!r} is not a plain token"
        if reason is not None:
            self._reject(parsed.id, f"bad_task_signature: {reason}")
            return True
        # The pilot's order, checked and remembered before anything of the task is made.
        order, refused = self.check_task_order(raw, parsed.id, parsed.spec)
        if refused is None:
            opened, refused = self.open_sealed(raw, order, parsed.spec, parsed.id)
        if refused is not None:
            self._reject(parsed.id, refused)
            return True
        spec = opened.spec
        task_dir = self.data.make_task_dir(parsed.id)
        self.state.accept(parsed.id, parsed.seq)
        work_dir = self._work_dir(parsed.id, spec)
        record = {
            "id": parsed.id, "seq": parsed.seq, "spec": spec.to_json(),
            "accepted_at": time.time(),
            # The task key: what its output, artifacts and messages are sealed under. The
            # drone's own disk (task dirs are 0700) holds it as it holds the plaintext.
            "task_key": base64.b64encode(opened.task_key).decode("ascii"),
            "order_id": order.id, "order_expires": order.expires,
            "work_dir": str(work_dir),
            "timeout": self.settings.effective_timeout(spec.timeout),
            "grace": self.settings.effective_grace(spec.grace),
        }
        # dragoon upgraded on disk under this drone: said in the task's notes (and logged).
        upgraded = self.code.changed() if self.code is not None else None
        if upgraded:
            record["notes"] = [upgraded]
        # The accept's durable record (its id and seq; state.json catches up before the task
        # dir goes, AdmissionLedger): fsynced, with tasks/ holding the dir, before anything
        # is spawned, so a crash from here on never reruns it.
        write_json(task_dir / "task.json", record)
        fsync_dir(self.data.tasks)
        # Then the order's id into seen_orders: task.json holds it already (a crash before
        # seen_orders has it is made good by adopt()), seen_orders durably before the dir goes.
        remembered = self._remember_task_order(order, parsed.id)
        (task_dir / "inbox").touch(mode=0o600)
        runner = self._make_runner(parsed.id, record, spec)
        self._order_ids[parsed.id] = order.id
        if remembered is not None:  # not started: a replay of it could not be refused
            runner.conclude_without_exit(remembered)
            self._hold(runner)
            return True
        env = self._task_env(parsed.id, spec, task_dir)
        cwd_problem = spawn.cwd_problem(work_dir) if spec.cwd else None
        if cwd_problem is not None:  # dragoon's failure, not the command's: no exit code
            log.warning("task %s: not started: cwd %s: %s", parsed.id, spec.cwd, cwd_problem)
            runner.conclude_without_exit(f"cwd {spec.cwd}: {cwd_problem}")
            self._hold(runner)
            return True
        self._launching[parsed.id] = runner  # holds its slot while the wrapper starts
        return self._launch(runner, parsed.id, spec, work_dir, env, upgraded)

    async def _launch(self, runner: TaskRunner, task_id: str, spec: TaskSpec, work_dir: Path,
                      env: dict[str, str], upgraded: str | None) -> None:
        unstartable = False
        try:
            wrapper, proc = await spawn.launch(
                runner.dir, command=spec.command, cwd=work_dir, env=env, stdin=spec.stdin,
                wrapper=str(self.code.wrapper) if self.code is not None else spawn.WRAPPER,
                launcher=self.launcher)
        except spawn.WrapperUnstartable:
            wrapper, proc, unstartable = None, None, True
        finally:
            self._launching.pop(task_id, None)
        runner.wrapper, runner.proc = wrapper, proc
        if proc is None:
            runner.tick()  # the wrapper may have written exit.json (e.g. cwd missing)
            if runner.outcome is None:
                runner.conclude_without_exit(upgraded or (
                    f"cannot run {sys.executable}: the drone's Python changed under it? "
                    "restart it" if unstartable else "the task wrapper did not start"))
        else:
            log.info("task %s: started (pid %d) in %s: %s", task_id, proc.pid, work_dir,
                     spec.command if len(spec.command) < 80 else spec.command[:77] + "...")
            self.started.append({"id": task_id, "started_at": proc.started_at,
                                 "pid": proc.pid})
        self._hold(runner)

    async def _finish_unheld(self, task_id: str) -> None:
        body = {"task": task_id, "state": "failed", "finished_at": time.time(),
                "error": "the drone stopped after accepting the task and before starting it; "
                         "not started again (a task runs at most once)"}
        response = await until_reachable(
            lambda: self.client.request("POST", "/v1/worker/finish", json_body=body))
        log.info("task %s: reported failed (accepted but never started): HTTP %d",
                 task_id, response.status_code)

    def _work_dir(self, task_id: str, spec: TaskSpec) -> Path:
        """The spec's cwd (relative ones from the home dir), else a fresh per-task folder."""
        if spec.cwd:
            path = Path(spec.cwd).expanduser()
            return path if path.is_absolute() else Path.home() / path
        return self.data.make_work_dir(task_id)

    @staticmethod
    def _drone_env() -> dict[str, str]:
        """The drone's environment less what is the drone's own business (PRIVATE_ENV, TLS)."""
        return {k: v for k, v in os.environ.items()
                if k not in PRIVATE_ENV and k not in TLS_ENV}

    def _task_env(self, task_id: str, spec: TaskSpec, task_dir: Path) -> dict[str, str]:
        env = self._drone_env()
        env.update(spec.env)
        env["DRAGOON_TASK_ID"] = task_id
        env["DRAGOON_INBOX"] = str(task_dir / "inbox")
        # `dragoon notify` must work in a task even when the drone's venv is not on PATH;
        # appended, so the box's own tools keep precedence.
        own_bin = str(Path(sys.executable).parent)
        path = env.get("PATH", "/usr/bin:/bin")
        if own_bin not in path.split(":"):
            env["PATH"] = f"{path}:{own_bin}"
        return env

    # ----- fetch -----

    async def start_fetch(self, item: dict[str, Any]) -> None:
        """Check the order and open the sealed path, then check the path off the loop; a
        refusal found within FETCH_CHECK_WAIT rides on the very next poll, a slow
        filesystem delays only its own fetch; upload in the back."""
        fetch_id = item.get("id")
        if not isinstance(fetch_id, str):
            return
        # Every poll answer lists every pending fetch: one already being handled is ignored.
        if fetch_id in self._fetches_seen:
            return
        self._fetches_seen[fetch_id] = None
        while len(self._fetches_seen) > FETCH_MEMORY:
            del self._fetches_seen[next(iter(self._fetches_seen))]
        from dragoon.shared.e2e import E2EError
        from dragoon.shared.orders import OrderError
        from dragoon.shared.sealed_files import fetch_stream, open_fetch

        try:
            order = self.gate.check(item.get("order"), item.get("order_signature"),
                                    kind="fetch", ref=fetch_id)
            path, key = open_fetch(order, payload=item.get("payload"), wrap=item.get("wrap"),
                                   x25519_secret=self.encryption_key().secret)
            self.gate.seen.remember(order, fetch_id)
        except (OrderError, E2EError) as exc:
            self._fetch_refused(fetch_id, self.refusal(exc.detail))
            return
        except (OSError, ValueError) as exc:  # TrustFileError included
            self._fetch_refused(fetch_id, self.refusal(f"its encryption key cannot be read: "
                                                       f"{exc}"))
            return
        stream = fetch_stream(key, order.id)
        check = asyncio.ensure_future(safefile.in_thread(
            lambda: fetch.open_for_fetch(path, self.fetch_roots,
                                         max_bytes=self.settings.max_fetch_bytes)))
        await asyncio.wait({check}, timeout=FETCH_CHECK_WAIT)
        if check.done() and isinstance(check.exception(), fetch.FetchRefused):
            self._fetch_refused(fetch_id, str(check.exception()), stream)
            return
        self._spawn_job(self.serve_fetch(fetch_id, check, stream))

    def _drop_fetch_spools(self) -> None:
        """Sealed fetches a stopped drone left (``DIR/fetches``): none is being served at the
        start, and a fetch still pending is handed out again and sealed afresh."""
        with contextlib.suppress(FileNotFoundError):
            for spool in (self.data.root / "fetches").iterdir():
                with contextlib.suppress(OSError):
                    spool.unlink()

    def encryption_key(self) -> X25519Key:
        """The drone's X25519 key, read at its first use."""
        from dragoon.shared.trust import X25519Key

        if self._x25519 is None:
            self._x25519 = X25519Key.load(self.data.x25519_key)
        return self._x25519

    def _fetch_refused(self, fetch_id: str, reason: str, stream: Any = None) -> None:
        """Reported on the next poll: sealed under the fetch key once the drone has it (a
        refusal may name the path or the drone's folders), in clear before (it names
        neither: a bad order, a wrap for another key)."""
        log.info("fetch %s refused: %s", fetch_id, reason)
        if stream is not None:
            from dragoon.shared.sealed_files import seal_error

            reason = seal_error(stream.key, stream.task_id, reason)
        self.fetch_errors.append({"id": fetch_id, "error": reason[:2000]})

    async def serve_fetch(self, fetch_id: str, check: asyncio.Future[fetch.Opened],
                          stream: Any) -> None:
        """Seal the already-opened file into a spool, then upload the spool: what was checked
        is what is sealed, and every attempt sends the same sealed bytes."""
        from dragoon.shared.sealed_files import seal_file

        try:
            opened = await check
        except fetch.FetchRefused as exc:
            self._fetch_refused(fetch_id, str(exc), stream)
            return
        except Exception as exc:  # a bug, not the pilot's fault: the fetch must still end
            log.exception("fetch %s: checking the path failed", fetch_id)
            self._fetch_refused(fetch_id, f"the drone could not check the path: {exc!r}",
                                stream)
            return
        spool_dir = self.data.root / "fetches"
        spool = spool_dir / f"{fetch_id}.sealed"
        try:
            try:
                spool_dir.mkdir(mode=0o700, exist_ok=True)
                sealed = await safefile.in_thread(seal_file, opened.fd, opened.size, spool,
                                                  stream)
            finally:
                os.close(opened.fd)
        except OSError as exc:
            self._fetch_refused(fetch_id, f"the drone could not seal the file: {exc}", stream)
            spool.unlink(missing_ok=True)
            return

        async def attempt() -> httpx.Response:
            fd = os.open(spool, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                return await self.client.request(
                    "POST", "/v1/worker/blob",
                    params={"fetch": fetch_id, "sha256": sealed.stored_sha256,
                            "size": sealed.stored_size, "meta": sealed.meta},
                    stream=stream_fd(fd, sealed.stored_size),
                    stream_sha256=sealed.stored_sha256, stream_size=sealed.stored_size,
                    read_timeout=300.0)
            finally:
                os.close(fd)

        try:
            response = await until_reachable(attempt)
        finally:
            spool.unlink(missing_ok=True)
        if response.status_code == 200:
            log.info("fetch %s served: %s (%d bytes)", fetch_id, opened.real, sealed.size)
        else:
            reason = f"relay refused the upload: HTTP {response.status_code} {error_code(response)}"
            log.warning("fetch %s: %s", fetch_id, reason)
            self.fetch_errors.append({"id": fetch_id, "error": reason})


def run(data_dir: Path, *, ca_cert: Path | None = None) -> None:
    """Run the drone until SIGTERM/SIGINT; relay errors never end it, but being replaced does
    (exit status ``EXIT_REPLACED``)."""
    drone = DroneDaemon(DataDir(data_dir), ca_cert=ca_cert)
    status = 0
    with contextlib.suppress(KeyboardInterrupt):
        status = asyncio.run(drone.main())
    if status:
        sys.exit(status)
