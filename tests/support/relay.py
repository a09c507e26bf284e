"""Test support for anything that needs a real relay: a subprocess, admin helpers, signed clients.

Used by the relay, drone and cockpit tests alike; its API stays stable:

- ``RelayProcess(tmp_path / "relay")`` — context manager. ``init``s the data dir,
  runs ``dragoon relay serve --data DIR --bind 127.0.0.1:0`` as a real subprocess,
  parses the URL from its ``dragoon relay listening on URL`` line. ``.url``,
  ``.data_dir``, ``.stop()`` (SIGTERM), ``.kill9()``, ``.start()``, ``.restart()``,
  ``.stderr_text()``; ``config={"sweep_interval": 0.2, …}`` overrides relay.toml.
- ``init_relay(data_dir, config=…)``, ``add_operator(data_dir, name, pubkey_path) -> totp_secret``,
  ``enroll(data_dir, drone, labels, url=…) -> join_token`` run the admin CLI, in this
  process (``relay_admin``: the same click commands, without a Python start and the
  relay's imports per call; the admin CLI's own tests run ``dragoon relay …`` for real).
- The backend: ``DRAGOON_TEST_BACKEND`` (``sqlite``, the default, ``postgresql`` or
  ``replicas``) picks it for every relay, or ``RelayProcess(..., backend=…)`` for one.
  ``replicas``: three ``dragoon relay serve`` on one fresh PostgreSQL database (the data
  dir copied per replica) behind one real HAProxy (tests/support/balancer.py), the whole a
  drop-in for one relay (``RelayProcess``'s docstring says what maps to what). On
  PostgreSQL, ``init_relay`` creates a fresh database (tests/support/pg.py) and writes its
  URL into relay.toml, so a restart, or another ``RelayProcess`` on the same data dir,
  reuses it; the context's exit marks it to drop, and it is dropped at the end of the test
  (``drop_released_databases``, an autouse fixture of tests/conftest.py) unless the data
  dir was opened again meanwhile. ``relay_db(data_dir)`` opens a data dir's database,
  whichever it is, for a test to look into.
- ``RelayProcess.pilot(name)`` → a logged-in ``PilotSession`` (new ed25519 key, operator added).
- ``PilotSession(url, signer)`` with ``.login(totp_secret)``, then ``.get/.post/.request``
  signed RE-V1 with the bearer token; answers are ``httpx.Response``.
- ``DroneClient.join(token, data_dir=None)`` → an enrolled drone (``/v1/worker/init`` done)
  with ``.poll(**body)``, ``.log(task, stream, offset, data)``, ``.finish(task, **body)``,
  ``.blob(...)``, ``.message(...)``, and ``.post/.request`` for anything else.

Waits are on conditions with deadlines (the ``listening`` line, a process exit),
never fixed sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlencode

import httpx
import pyotp
from dragoon.shared import orders
from dragoon.shared.canonical import login_string
from dragoon.shared.constants import NS_LOGIN
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.keys import PrivateKey
from dragoon.shared.request_auth import retry_timestamp, sign_request, sign_streamed_request
from dragoon.shared.signers import KeyFileSigner, Signer
from dragoon.shared.sshsig import sign_b64
from dragoon.shared.trust import X25519Key, certify_x25519, parse_x25519

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("sqlite", "postgresql", "replicas")
#: How many replicas the ``replicas`` backend runs, and where its balancer connects from.
REPLICAS = 3
BALANCER_ADDRESS = "127.0.0.1"
#: The backend of every relay a test starts unless it names one: ``DRAGOON_TEST_BACKEND``.
BACKEND = os.environ.get("DRAGOON_TEST_BACKEND", "sqlite") or "sqlite"
if BACKEND not in BACKENDS:
    raise RuntimeError(f"DRAGOON_TEST_BACKEND={BACKEND!r}: one of {', '.join(BACKENDS)}")
#: The backend for a test of what one ``relay serve`` process does at its own socket (TLS,
#: its listener): on ``replicas`` the balancer holds that socket, so such a test runs one
#: relay on PostgreSQL instead.
ONE_PROCESS = "postgresql" if BACKEND == "replicas" else BACKEND
# PostgreSQL databases made by init_relay, by data dir; and those released (their relay's
# context ended), dropped at the end of the test unless the data dir is opened again.
_DATABASES: dict[Path, str] = {}
_RELEASED: set[Path] = set()
LISTENING = "dragoon relay listening on "
START_TIMEOUT = 20.0


def dragoon(
    *args: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``dragoon ARGS`` in a subprocess of this interpreter (the venv)."""
    return subprocess.run(
        [sys.executable, "-m", "dragoon", *args], capture_output=True, text=True, check=check,
        timeout=timeout, cwd=REPO,
    )


def relay_admin(*args: str) -> str:
    """Run ``dragoon relay ARGS`` (init, add-operator, enroll) in this process; its stdout.

    The test helpers call these for nearly every relay a test starts, so a subprocess each
    cost the suite minutes (the relay's imports, ~0.7 s a call). The commands keep no state
    between calls: each reads the data dir and opens the database itself."""
    from click.testing import CliRunner
    from dragoon.relay.cli import relay

    result = CliRunner().invoke(relay, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise AssertionError(f"dragoon relay {' '.join(args)} exited {result.exit_code}:\n"
                             f"{result.output}")
    return result.stdout


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def configured_database(data_dir: Path) -> str:
    """The ``database`` of a data dir's relay.toml ("" for SQLite)."""
    import tomllib

    path = Path(data_dir) / "relay.toml"
    if not path.exists():
        return ""
    return str(tomllib.loads(path.read_text(encoding="utf-8")).get("database", ""))


def init_relay(
    data_dir: Path, *, url: str | None = None, config: Mapping[str, Any] | None = None,
    backend: str | None = None,
) -> None:
    """``dragoon relay init``, then apply ``config`` overrides to relay.toml.

    ``backend`` (default ``BACKEND``) ``postgresql`` or ``replicas``: a fresh database for
    a new data dir, the one its relay.toml names for one initialised before."""
    backend = backend or BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
    args = ["init", "--data", str(data_dir)]
    if url:
        args += ["--url", url]
    key = Path(data_dir).resolve()
    if backend in ("postgresql", "replicas") and not configured_database(data_dir):
        from tests.support.pg import new_database

        _DATABASES[key] = new_database("relay")
        args += ["--database", _DATABASES[key]]
    _RELEASED.discard(key)
    relay_admin(*args)
    if config:
        path = data_dir / "relay.toml"
        lines = [
            line for line in path.read_text().splitlines()
            if line.split("=", 1)[0].strip() not in config
        ]
        lines += [f"{key} = {_toml_value(value)}" for key, value in config.items()]
        path.write_text("\n".join(lines) + "\n")


def add_operator(data_dir: Path, name: str, pubkey_path: Path) -> str:
    """Register a pilot with the admin CLI; returns its TOTP secret."""
    out = relay_admin("add-operator", "--data", str(data_dir), "--name", name,
                      "--key", str(pubkey_path), "--no-qr")
    for line in out.splitlines():
        if line.startswith("TOTP secret: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"no TOTP secret in add-operator output:\n{out}")


def enroll(data_dir: Path, drone: str, labels: Iterable[str] = (), *, url: str | None = None,
           ttl: str = "1h", replace: bool = False, authorize: Iterable[Path] = ()) -> str:
    """Mint a join token with the admin CLI; returns the token. ``authorize``: pilot public
    key files the drone is to obey (``--authorize``), seeded into its authorized_pilots."""
    args = ["enroll", "--data", str(data_dir), "--drone", drone,
            "--labels", ",".join(labels), "--ttl", ttl, *(["--replace"] if replace else [])]
    for key_file in authorize:
        args += ["--authorize", str(key_file)]
    if url:
        args += ["--url", url]
    return relay_admin(*args).strip()


def post_open(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST to an unsigned route as a well-behaved client does: a 429 waits its Retry-After.

    The relay rate-limits its open routes per address (docs/security.md); many
    test drones and pilots share 127.0.0.1, so a burst of them may be asked to
    wait. Bounded: after 30 s the last answer is returned as it is.
    """
    deadline = time.monotonic() + 30
    while True:
        answer = http.post(path, json=body)
        if answer.status_code != 429 or time.monotonic() > deadline:
            return answer
        time.sleep(min(float(answer.headers.get("retry-after", "1")), 5))


# One TOTP code is accepted once: remember the steps used so that a test can log in twice.
_USED_STEPS: dict[str, int] = {}
_USED_LOCK = threading.Lock()


def fresh_totp(secret: str, *, deadline: float = 40.0) -> str:
    """A code the relay has not seen: the current step, else the next (one step of drift)."""
    end = time.monotonic() + deadline
    while True:
        with _USED_LOCK:
            current = int(time.time() // 30)
            last = _USED_STEPS.get(secret, -1)
            for step in (current, current + 1):
                if step > last:
                    _USED_STEPS[secret] = step
                    return pyotp.TOTP(secret).at(step * 30)
        if time.monotonic() > end:
            raise TimeoutError("no fresh TOTP step within the deadline")
        # Both allowed steps are spent: wait for the clock to reach the next one.
        time.sleep(max(0.05, (current + 1) * 30 - time.time()))


def new_signer(path: Path | None = None) -> KeyFileSigner:
    """A fresh ed25519 key (saved with its .pub when ``path`` is given)."""
    key = PrivateKey.generate_ed25519("test")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key.save(path)
    return KeyFileSigner(key)


def encode_query(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v))
             for k, v in params.items() if v is not None]
    return urlencode(pairs, quote_via=quote, safe="")


def _floor_refusal(answer: httpx.Response) -> int | None:
    """The timestamp to sign again at when the relay refused a request below its replay floor."""
    if answer.status_code != 401:
        return None
    try:
        body = answer.json()
    except ValueError:
        return None
    return retry_timestamp(body) if isinstance(body, dict) else None


class SignedClient:
    """A synchronous httpx client that signs every request with RE-V1."""

    def __init__(self, url: str, signer: Signer, *, token: str | None = None,
                 timeout: float = 40.0) -> None:
        self.url = url.rstrip("/")
        self.signer = signer
        self.token = token
        self._timeout = timeout
        self._retired: list[httpx.Client] = []
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        for client in [*self._retired, self.http]:
            client.close()

    def reconnect(self) -> None:
        """Leave pooled connections (to a relay that was killed) behind; the next request dials
        anew. The old client stays open until ``close`` for threads still inside a request."""
        self._retired.append(self.http)
        self.http = httpx.Client(base_url=self.url, timeout=self._timeout)

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def signed_headers(self, method: str, path: str, query: str = "", body: bytes = b"",
                       **overrides: Any) -> dict[str, str]:
        return sign_request(self.signer, method=method, path=path, query=query, body=body,
                            token=self.token, **overrides)

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        json: Any = None, content: bytes | None = None, headers: Mapping[str, str] | None = None,
        sign: bool = True, timeout: float | None = None,
    ) -> httpx.Response:
        import json as jsonlib

        body = content if content is not None else (
            b"" if json is None else jsonlib.dumps(json).encode()
        )
        query = encode_query(params)
        all_headers: dict[str, str] = {}
        if json is not None:
            all_headers["content-type"] = "application/json"
        if sign:
            all_headers.update(self.signed_headers(method, path, query, body))
        all_headers.update(headers or {})
        url = path + (f"?{query}" if query else "")
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        answer = self.http.request(method, url, content=body, headers=all_headers, **extra)
        own_signature = not any(k.lower().startswith("x-re-") for k in headers or {})
        floor = _floor_refusal(answer) if sign and own_signature else None
        if floor is not None:
            # As an honest client does after a relay restart: sign again at the replay floor.
            all_headers.update(self.signed_headers(method, path, query, body, timestamp=floor))
            answer = self.http.request(method, url, content=body, headers=all_headers, **extra)
        return answer

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


_CANCEL_PATH = re.compile(r"/v1/tasks/([^/]+)/cancel")
_FETCH_PATH = re.compile(r"/v1/workers/([^/]+)/fetch")


@dataclass
class SealedBody:
    """A submit body sealed by a test pilot, and what its order must say."""

    body: dict[str, Any]
    sealed: Any  # shared.sealed_task.SealedTask
    recipients: list[str]
    order_id: str

    def order(self, **changes: Any) -> orders.Order:
        """The task order for this body (as the client makes it), with ``changes``."""
        body = self.body
        target = (orders.drone_target(body["drone"]) if isinstance(body.get("drone"), str)
                  else orders.labels_target(body.get("labels") or []))
        within, queued = body.get("start_within"), body.get("expires_in")
        fields: dict[str, Any] = {
            "target": target, "spec_sha256": self.sealed.spec_sha256,
            "payload_sha256": self.sealed.payload_sha256, "recipients": self.recipients,
            "start_within": within if isinstance(within, int) and within > 0 else None,
            "expires_in": queued if isinstance(queued, int | float) and queued > 0 else None,
            "order_id": self.order_id}
        fields.update(changes)
        return orders.task_order(**fields)


def _throwaway_x25519() -> bytes:
    return X25519Key.generate().public


def open_listed(message: Mapping[str, Any],
                task_key: Callable[[str], bytes | None]) -> dict[str, Any]:
    """A message as ``/v1/messages`` lists it, opened under ``task_key(task id)``: ``text``,
    or ``error`` when it does not open (the client's rule, cockpit/client/_client.py)."""
    from dragoon.shared.e2e import E2EError
    from dragoon.shared.sealed_message import open_message

    opened = {k: v for k, v in message.items() if k != "sealed"}
    key = task_key(str(message.get("task")))
    if key is None:
        opened["error"] = "no task key"
        return opened
    try:
        opened["text"] = open_message(key, task_id=str(message["task"]),
                                      index=int(message["index"]), sealed=message["sealed"])
    except E2EError as exc:
        opened["error"] = exc.detail
    return opened


class PilotSession(SignedClient):
    """A pilot: challenge + signature + TOTP login, then signed requests with the bearer token.

    As the real client does (cockpit/client), a submit, cancel or fetch posted without an
    ``order`` gets the pilot's signed order added (shared/orders.py), so tests write the
    bodies of docs/api.md as before; a body that holds ``order`` (even None) is sent as it is.
    """

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if method.upper() == "POST":
            body = kwargs.get("json")
            cancel, fetch = _CANCEL_PATH.fullmatch(path), _FETCH_PATH.fullmatch(path)
            if cancel and body is None and kwargs.get("content") is None:
                body = {}
            if (path == "/v1/tasks" and isinstance(body, dict) and "payload" not in body
                    and isinstance(body.get("spec"), dict) and "command" in body["spec"]):
                body = kwargs["json"] = self._sealed(body)
            if (fetch is not None and isinstance(body, dict) and "payload" not in body
                    and isinstance(body.get("path"), str) and body["path"]):
                return self._sealed_fetch(path, unquote(fetch.group(1)), body, kwargs)
            if isinstance(body, dict) and "order" not in body:
                order = self._order_for(path, body, cancel, fetch)
                if order is not None:
                    kwargs["json"] = {**body, **orders.sign_order(self.signer, order).wire()}
        return super().request(method, path, **kwargs)

    def _sealed_fetch(self, path: str, drone: str, body: dict[str, Any],
                      kwargs: dict[str, Any]) -> httpx.Response:
        """``{"path": P}`` sealed as the real client seals a fetch (shared/sealed_files.py),
        to the key the relay reports for the drone and to this session; the fetch key is
        kept by fetch id (``fetch_keys``) for ``open_fetched``."""
        from dragoon.shared.sealed_files import seal_fetch

        listed = super().request("GET", "/v1/workers").json()["drones"]
        found = [d for d in listed if d.get("name") == drone and d.get("x25519_public_key")]
        to = [(d["fingerprint"], parse_x25519(d["x25519_public_key"])) for d in found] or [
            ("SHA256:" + "A" * 43, _throwaway_x25519())]
        order_id = orders.new_order_id()
        sealed = seal_fetch(body["path"], order_id=order_id,
                            recipients=[*to, (self.signer.fingerprint, self.x25519.public)])
        rest = {k: v for k, v in body.items() if k != "path"}
        sent = {**rest, "payload": sealed.payload, "wraps": sealed.wraps}
        if "order" not in body:
            try:
                order = orders.fetch_order(drone=drone, payload_sha256=sealed.payload_sha256,
                                           order_id=order_id)
                sent.update(orders.sign_order(self.signer, order).wire())
            except orders.OrderError:
                pass
        kwargs["json"] = sent
        answer = super().request("POST", path, **kwargs)
        if answer.status_code in (200, 201, 202):
            self.fetch_keys[answer.json()["id"]] = (sealed.key, order_id)
        return answer

    def artifacts(self, task_id: str) -> dict[str, dict[str, Any]]:
        """The task's artifacts by path, their sealed metadata opened as the pilot opens it
        (``name`` is the relay's name for each)."""
        from dragoon.shared.sealed_files import FileStream, open_meta

        key = self.task_key(task_id)
        assert key is not None, f"{task_id} was not sealed by this session"
        listed = super().request("GET", f"/v1/tasks/{task_id}/artifact").json()["artifacts"]
        found = {}
        for row in listed:
            meta = open_meta(FileStream(key, task_id, "artifact", row["path"]), row["meta"])
            found[meta["path"]] = {**meta, "name": row["path"], "stored_size": row["size"]}
        return found

    def artifact_bytes(self, task_id: str, path: str) -> bytes:
        """An artifact downloaded whole and opened, checked against its metadata."""
        from dragoon.shared.sealed_files import FileOpener, FileStream

        artifact = self.artifacts(task_id)[path]
        stored = super().request("GET", f"/v1/tasks/{task_id}/artifact",
                                 params={"path": artifact["name"]}).content
        opener = FileOpener(FileStream(self.task_key(task_id), task_id, "artifact",
                                   artifact["name"]), size=artifact["size"],
                            sha256=artifact["sha256"])
        plain = opener.feed(stored)
        opener.check()
        return plain

    @property
    def fetch_keys(self) -> dict[str, tuple[bytes, str]]:
        """Fetch id → (fetch key, order id), of every fetch this session sealed."""
        if getattr(self, "_fetch_keys", None) is None:
            self._fetch_keys: dict[str, tuple[bytes, str]] = {}
        return self._fetch_keys

    def fetch_stream(self, fetch_id: str) -> Any:
        from dragoon.shared.sealed_files import fetch_stream

        key, order_id = self.fetch_keys[fetch_id]
        return fetch_stream(key, order_id)

    def fetch_error(self, view: Mapping[str, Any]) -> str:
        """A failed fetch's error, opened as the pilot opens it."""
        from dragoon.shared.sealed_files import open_error

        stream = self.fetch_stream(view["id"])
        return open_error(stream.key, stream.task_id, view.get("error"))

    def open_fetched(self, view: Mapping[str, Any], stored: bytes) -> bytes:
        """A fetched file as the relay stores it, opened and checked as the pilot does."""
        from dragoon.shared.sealed_files import FileOpener, open_meta

        stream = self.fetch_stream(view["id"])
        meta = open_meta(stream, view["meta"])
        opener = FileOpener(stream, size=meta["size"], sha256=meta["sha256"])
        plain = opener.feed(stored)
        opener.check()
        return plain

    def _sealed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with its spec sealed as the real client seals it (shared/sealed_task.py),
        to the keys the relay reports for the target drone(s) (a test trusts its relay), and
        signed; a spec the rules refuse goes with its clear part only, for the relay."""
        from dragoon.shared.spec import CLEAR_FIELDS, SPEC_FIELDS, SpecError

        try:
            sealed = self.seal(body)
        except (SpecError, TypeError):
            # What the relay still judges is the clear part: sent alone (no payload), a bad
            # clear field gets the relay's own refusal; the rest is the pilot's door's.
            clear = {k: v for k, v in body["spec"].items() if k in CLEAR_FIELDS
                     or k not in SPEC_FIELDS}
            return {**body, "spec": clear}
        try:
            order = sealed.order()
        except (orders.OrderError, TypeError):
            return sealed.body
        return {**sealed.body, **orders.sign_order(self.signer, order).wire()}

    def seal(self, body: dict[str, Any]) -> SealedBody:
        """``body`` (docs/api.md's, with a whole ``spec``) sealed, not yet signed."""
        from dragoon.shared.sealed_task import Recipient, seal_task
        from dragoon.shared.spec import parse_spec

        spec = parse_spec(body["spec"])
        listed = super().request("GET", "/v1/workers").json()["drones"]
        drones = [d for d in listed if d.get("name") == body.get("drone")
                  or (body.get("drone") is None and isinstance(body.get("labels"), list)
                      and set(body["labels"]) <= set(d.get("labels") or []))]
        recipients = [Recipient(d["fingerprint"], parse_x25519(d["x25519_public_key"]))
                      for d in drones if d.get("x25519_public_key")]
        if not recipients:  # a drone without a key (or none at all): sealed to nobody's
            recipients = [Recipient("SHA256:" + "A" * 43, _throwaway_x25519())]
        order_id = orders.new_order_id()
        sealed = seal_task(spec, order_id=order_id,
                           recipients=[*recipients, Recipient(self.signer.fingerprint,
                                                              self.x25519.public)])
        self.task_keys[order_id] = sealed.task_key
        rest = {k: v for k, v in body.items() if k != "spec"}
        return SealedBody({**rest, **sealed.wire()}, sealed,
                          sorted({r.fingerprint for r in recipients}), order_id)

    @property
    def env(self) -> dict[str, str]:
        """A pilot's machine for in-process clients (cockpit tests): its config and state
        dirs, where its pilot.x25519 and known_drones live (never the test runner's HOME)."""
        if getattr(self, "_env", None) is None:
            import tempfile

            home = Path(tempfile.mkdtemp(prefix="pilot-home-"))
            self._env = {**os.environ, "HOME": str(home),
                         "XDG_CONFIG_HOME": str(home / "config"),
                         "XDG_STATE_HOME": str(home / "state")}
            self._env.pop("DRAGOON_CONFIG", None)
        return self._env

    @env.setter
    def env(self, value: dict[str, str]) -> None:
        self._env = value

    @property
    def x25519(self) -> X25519Key:
        """This pilot's encryption key: the pilot.x25519 of its ``env``, so an in-process
        RelayClient with that env opens what this session sealed."""
        if getattr(self, "_x25519", None) is None:
            from dragoon.cockpit.client.pilot_key import load_or_make_pilot_key

            self._x25519 = load_or_make_pilot_key(self.env)
        return self._x25519

    def client(self, url: str | None = None, **kwargs: Any) -> Any:
        """The real RelayClient for this pilot (its signer, token and env)."""
        from dragoon.cockpit.client import RelayClient

        return RelayClient(url or self.url, signer=self.signer, token=self.token,
                           env=self.env, **kwargs)

    @property
    def task_keys(self) -> dict[str, bytes]:
        """Order id → task key, of every task this session sealed."""
        if getattr(self, "_task_keys", None) is None:
            self._task_keys: dict[str, bytes] = {}
        return self._task_keys

    def opened(self, task: dict[str, Any]) -> dict[str, Any]:
        """A task view with the texts the drone sealed (error, notes: shared/e2e.py
        ``seal_text``) opened with the key this session sealed the task with."""
        from dragoon.shared.e2e import E2EError, is_sealed_text, open_text

        key = self.task_keys.get(str(task.get("order_id")))
        if key is None:
            return task

        def opened(value: Any, name: str) -> Any:
            if not is_sealed_text(value):
                return value
            try:
                return open_text(key, value, task_id=task["id"], name=name)
            except E2EError:  # sealed under another key (a hostile test's own): as it is
                return value

        shown = dict(task)
        shown["error"] = opened(task.get("error"), "error")
        if isinstance(task.get("notes"), list):
            shown["notes"] = [opened(n, f"note-{i}") for i, n in enumerate(task["notes"])]
        return shown

    def _order_for(self, path: str, body: dict[str, Any], cancel: re.Match[str] | None,
                   fetch: re.Match[str] | None) -> orders.Order | None:
        if path == "/v1/tasks":
            return None  # sealed and signed by _sealed, or refused by the relay as it stands
        if cancel is not None:
            task = super().request("GET", f"/v1/tasks/{cancel.group(1)}")
            if task.status_code != 200 or not task.json().get("order_id"):
                return None
            view = task.json()
            target = (orders.drone_target(view["drone"]) if view.get("drone")
                      else view["target"])
            grace = body.get("grace")
            return orders.cancel_order(target=target, task=view["id"],
                                       task_order_id=view["order_id"],
                                       grace=grace if isinstance(grace, int) else None)
        return None

    def task_key(self, task_id: str) -> bytes | None:
        """The key of a task this session sealed, by the task's id (via its order id)."""
        answer = super().request("GET", f"/v1/tasks/{task_id}")
        order_id = answer.json().get("order_id") if answer.status_code == 200 else None
        return self.task_keys.get(order_id) if isinstance(order_id, str) else None

    def inbox(self, **params: Any) -> list[dict[str, Any]]:
        """``GET /v1/messages`` with each message opened as the real client opens it
        (``text``), or ``error`` in its place: every message of a task this session sealed."""
        answer = self.get("/v1/messages", params=params)
        assert answer.status_code == 200, answer.text
        keys: dict[str, bytes | None] = {}

        def key(task_id: str) -> bytes | None:
            if task_id not in keys:
                keys[task_id] = self.task_key(task_id)
            return keys[task_id]

        return [open_listed(m, key) for m in answer.json()["messages"]]

    def login(self, totp_secret: str | None = None, *, totp: str | None = None) -> httpx.Response:
        """Log in; raises on failure unless ``totp`` is given (then the answer is returned)."""
        fingerprint = self.signer.fingerprint
        answer = post_open(self.http, "/v1/auth/challenge", {"fingerprint": fingerprint})
        answer.raise_for_status()
        challenge = answer.json()["challenge"]
        code = totp if totp is not None else fresh_totp(totp_secret or "")
        signature = sign_b64(self.signer, NS_LOGIN, login_string(challenge, fingerprint))
        response = self.http.post("/v1/auth/login", json={
            "fingerprint": fingerprint, "challenge": challenge, "signature": signature,
            "totp": code,
        })
        if totp is None and response.status_code != 200:
            raise AssertionError(f"login failed: {response.status_code} {response.text}")
        if response.status_code == 200:
            self.token = response.json()["token"]
        return response

    def submit(self, command: str, *, drone: str | None = None, labels: list[str] | None = None,
               **spec: Any) -> dict[str, Any]:
        """Submit a task (spec fields as keywords; ``expires_in``/``lost_after`` go on the body)."""
        body: dict[str, Any] = {"spec": {"command": command}}
        for key in ("expires_in", "lost_after"):
            if key in spec:
                body[key] = spec.pop(key)
        body["spec"].update(spec)
        if drone is not None:
            body["drone"] = drone
        if labels is not None:
            body["labels"] = labels
        answer = self.post("/v1/tasks", json=body)
        if answer.status_code != 201:
            raise AssertionError(f"submit failed: {answer.status_code} {answer.text}")
        result: dict[str, Any] = answer.json()
        return result


class DroneClient(SignedClient):
    """A test drone made from shared/: enrolls with a join token and speaks the worker routes."""

    name: str
    relay_public_key: str

    @classmethod
    def join(cls, token: str, *, url: str | None = None, labels: list[str] | None = None,
             slots: int = 1) -> DroneClient:
        parsed = JoinToken.decode(token)
        signer = new_signer()
        client = cls(url or parsed.relay, signer)
        client.x25519 = X25519Key.generate()
        answer = post_open(client.http, "/v1/worker/init", {
            "name": parsed.drone, "secret": parsed.secret,
            "public_key": signer.public_key.openssh(), "labels": labels or [], "slots": slots,
            "hostname": "test-host", "version": "test",
            "x25519_public_key": base64.b64encode(client.x25519.public).decode(),
            "x25519_signature": certify_x25519(signer, client.x25519.public),
        })
        if answer.status_code != 200:
            client.close()
            raise AssertionError(f"init failed: {answer.status_code} {answer.text}")
        client.name = parsed.drone
        client.relay_public_key = answer.json()["relay_public_key"]
        return client

    def open(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """The whole spec of a handed-out task, opened as the real drone opens it."""
        from dragoon.shared.sealed_task import open_task

        order = orders.parse_order(task["order"])
        return dict(open_task(order, clear=task["spec"], payload=task["payload"],
                              wrap=task["wrap"], x25519_secret=self.x25519.secret).spec.to_json())

    def task_key(self, task: Mapping[str, Any]) -> bytes:
        """The task key of a handed-out task, unwrapped as the real drone does: what its
        output records are sealed under (tests/support/records.py ``seal``)."""
        from dragoon.shared.sealed_task import open_task

        order = orders.parse_order(task["order"])
        return open_task(order, clear=task["spec"], payload=task["payload"], wrap=task["wrap"],
                         x25519_secret=self.x25519.secret).task_key

    def poll(self, *, wait: float = 0, timeout: float | None = None, **body: Any) -> httpx.Response:
        answer = self.post("/v1/worker/poll", json={"wait": wait, **body},
                           timeout=timeout if timeout is not None else wait + 15)
        self._keep_keys(answer)
        return answer

    def _keep_keys(self, answer: httpx.Response) -> None:
        from dragoon.shared.e2e import E2EError, unwrap_key

        try:
            tasks = answer.json().get("tasks") if answer.status_code == 200 else None
        except ValueError:
            return
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and isinstance(task.get("id"), str) and task.get("wrap"):
                with contextlib.suppress(E2EError):
                    self.task_keys[task["id"]] = unwrap_key(task["wrap"], self.x25519.secret)

    def log(self, task: str, stream: str, offset: int, data: bytes) -> httpx.Response:
        return self.post("/v1/worker/log", params={"task": task, "stream": stream,
                                                   "offset": offset}, content=data)

    def finish(self, task: str, state: str = "succeeded", **body: Any) -> httpx.Response:
        payload = {"task": task, "state": state, "exit_code": 0 if state == "succeeded" else 1}
        payload.update(body)
        return self.post("/v1/worker/finish", json=payload)

    def blob(self, data: bytes, *, sha256: str | None = None, size: int | None = None,
             **params: Any) -> httpx.Response:
        """An upload as the drone makes it: signed over the claimed ``sha256``, not the bytes."""
        import hashlib

        claim = sha256 or hashlib.sha256(data).hexdigest()
        query = encode_query({**params, "sha256": claim,
                              "size": len(data) if size is None else size})
        headers = sign_streamed_request(self.signer, method="POST", path="/v1/worker/blob",
                                        query=query, body_sha256=claim)
        return self.http.post(f"/v1/worker/blob?{query}", content=data, headers=headers)

    @property
    def task_keys(self) -> dict[str, bytes]:
        """Task id → task key, of every task a poll handed this drone (its wrap opened)."""
        if getattr(self, "_task_keys", None) is None:
            self._task_keys: dict[str, bytes] = {}
        return self._task_keys

    def message(self, task: str, index: int, text: str) -> httpx.Response:
        """Message ``index`` of ``task``, sealed as the drone seals it (shared/sealed_message.py)
        under the task's key; a task no poll handed out gets a random key (the relay can't
        tell)."""
        from dragoon.shared.e2e import new_task_key
        from dragoon.shared.sealed_message import seal_message

        key = self.task_keys.get(task) or new_task_key()
        sealed = seal_message(key, task_id=task, index=index, text=text)
        return self.post("/v1/worker/message", json={"task": task, "index": index,
                                                      "sealed": sealed})


def release_database(data_dir: Path) -> None:
    """A relay on ``data_dir`` is done: its database (if init_relay made one) is dropped at
    the end of the test, unless the data dir is initialised again before that."""
    key = Path(data_dir).resolve()
    if key in _DATABASES:
        _RELEASED.add(key)


def drop_released_databases(*, every: bool = False) -> None:
    """Drop every database released and not taken up again (the end of a test); with
    ``every``, all that init_relay made (the end of the run: a data dir only initialised,
    never served in a context, is released by nothing)."""
    from tests.support.pg import drop_database

    for key in list(_DATABASES if every else _RELEASED):
        _RELEASED.discard(key)
        url = _DATABASES.pop(key, None)
        if url is not None:
            drop_database(url)


@contextlib.contextmanager
def relay_db(data_dir: Path) -> Iterator[Any]:
    """The data dir's database, whichever backend it is on, for a test to read or change:
    rows by name (``row["col"]``), ``?`` placeholders. Changes are committed at the end
    of the block (PostgreSQL: each statement as it runs)."""
    database = configured_database(data_dir)
    if database:
        from dragoon.relay.pg import PgConnection

        pg_conn = PgConnection.connect(database)
        try:
            yield pg_conn
        finally:
            pg_conn.close()
        return
    import sqlite3

    conn = sqlite3.connect(Path(data_dir) / "relay.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


@contextlib.contextmanager
def open_database(data_dir: Path, *, backend: str | None = None) -> Iterator[Any]:
    """A relay ``Database`` (relay/db.py) in this process, on ``backend`` (default
    ``BACKEND``): ``relay.db`` in ``data_dir``, or a fresh PostgreSQL database dropped
    after the block. For tests of one module on a real database without a relay."""
    from dragoon.relay.db import Database

    backend = backend or BACKEND
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    url = ""
    if backend in ("postgresql", "replicas"):  # in process: one database either way
        from tests.support.pg import new_database

        url = new_database("module")
    database = Database(Path(data_dir) / "relay.db", url)
    try:
        yield database
    finally:
        database.close()
        if url:
            from tests.support.pg import drop_database

            drop_database(url)


class RelayServer:
    """One ``dragoon relay serve`` subprocess on a data dir: what a RelayProcess runs once,
    or once per replica. After a stop it binds the same port again."""

    def __init__(self, data_dir: Path, extra_args: Iterable[str] = (), *,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.preexec_fn = preexec_fn  # run in the child before exec (a test's rlimits)
        self.url = ""
        self.port: int | None = None
        self.process: subprocess.Popen[str] | None = None
        self.stderr: list[str] = []
        self._ready: threading.Event | None = None

    def launch(self) -> None:
        """Start the process; ``wait_ready`` waits for its ``listening`` line."""
        bind = f"127.0.0.1:{self.port or 0}"
        # One event per process: the old process's reader, reaching EOF after a kill,
        # must not signal readiness for the new one.
        self._ready = ready = threading.Event()
        self.url = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dragoon", "relay", "serve", "--data", str(self.data_dir),
             "--bind", bind, *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=self.preexec_fn,
        )
        threading.Thread(target=self._read_stderr, args=(self.process, ready),
                         daemon=True).start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.process is not None and self._ready is not None
        if not self._ready.wait(timeout) or not self.url:
            self.process.kill()
            raise RuntimeError(f"relay did not start:\n{''.join(self.stderr)}")

    def _read_stderr(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.stderr.append(line)
            if line.startswith(LISTENING):
                self.url = line[len(LISTENING):].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                ready.set()
        ready.set()  # exited without listening: wait_ready reports the stderr

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 10) -> int | None:
        """Wait for the exit (SIGKILL after ``timeout``); the exit code."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def kill9(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)


def behind_balancer(config: Mapping[str, Any]) -> dict[str, Any]:
    """A test's relay.toml overrides for replicas behind the balancer: its own list of
    ``trusted_proxies`` (even ``[]``, "no proxy in front") gets the balancer's address,
    as docs/deploy.md has an operator add it, so that the relay still counts each client
    by its own address (the one HAProxy names in X-Forwarded-For), not all as the
    balancer's. The default list already holds loopback."""
    changed = dict(config)
    proxies = changed.get("trusted_proxies")
    if isinstance(proxies, list) and BALANCER_ADDRESS not in proxies:
        changed["trusted_proxies"] = [*proxies, BALANCER_ADDRESS]
    return changed


def replica_dirs(data_dir: Path, count: int = REPLICAS) -> list[Path]:
    """The data dirs of a replicated relay: ``data_dir`` itself, then copies beside it."""
    data_dir = Path(data_dir)
    return [data_dir, *(data_dir.with_name(f"{data_dir.name}.replica-{i}")
                        for i in range(1, count))]


class RelayProcess:
    """A real relay on ephemeral loopback ports: one ``dragoon relay serve`` subprocess, or
    (backend ``replicas``) three of them on one PostgreSQL database behind one HAProxy.

    Replicas: the data dir is the first replica's; the others are copies of it beside it
    (``replica_dirs``), copied again at every ``start`` so that a test's change to
    relay.toml or the key applies to all. ``.url`` is the balancer's (relay.toml's ``url``
    too, unless the test gives one, so tokens the relay mints name it); ``.process`` is
    the first replica's; ``start``/``stop``/``kill9``/``restart`` act on every replica
    while the balancer keeps running, and ``start`` returns once the balancer routes to
    all of them again (``stop`` once it routes to none)."""

    def __init__(self, data_dir: Path, *, config: Mapping[str, Any] | None = None,
                 url: str | None = None, extra_args: Iterable[str] = (),
                 backend: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.backend = backend or BACKEND
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: one of {', '.join(BACKENDS)}")
        self.config = dict(config or {})
        self.configured_url = url
        self.extra_args = list(extra_args)
        self.url = ""
        self._clients: list[SignedClient] = []
        self.pilot_keys: list[Path] = []  # every pilot() key: drones enrolled here obey them
        self.balancer: Any = None
        if self.backend == "replicas":
            from tests.support.balancer import Balancer

            self.balancer = Balancer(self.data_dir.with_name(f"{self.data_dir.name}.balancer"))
            init_relay(self.data_dir, url=url or self.balancer.url,
                       config=behind_balancer(self.config), backend="postgresql")
            self.servers = [RelayServer(d, self.extra_args) for d in replica_dirs(self.data_dir)]
        else:
            init_relay(self.data_dir, url=url, config=self.config, backend=self.backend)
            self.servers = [RelayServer(self.data_dir, self.extra_args)]

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The (first replica's) subprocess."""
        return self.servers[0].process

    @property
    def _port(self) -> int | None:
        return self.servers[0].port

    @_port.setter
    def _port(self, port: int | None) -> None:
        self.servers[0].port = port

    def __enter__(self) -> RelayProcess:
        try:
            self.start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for client in self._clients:
            client.close()
        self._close()

    def _close(self) -> None:
        self.stop()
        if self.balancer is not None:
            self.balancer.close()
        release_database(self.data_dir)

    def _sync_replicas(self) -> None:
        """The first data dir copied over the others (relay.toml, the key; the rest of the
        state is in the database)."""
        for server in self.servers[1:]:
            shutil.copytree(self.data_dir, server.data_dir, dirs_exist_ok=True)

    def start(self) -> None:
        """Start serving; after a restart it binds the same port(s) again, so clients keep
        the URL."""
        self.url = ""
        if self.balancer is not None:
            self._sync_replicas()
        for server in self.servers:
            server.launch()
        try:
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            for server in self.servers:
                server.kill9()
            raise
        if self.balancer is not None:
            if not self.balancer.running():
                self.balancer.start([(f"r{i}", int(server.port or 0))
                                     for i, server in enumerate(self.servers)])
            self.balancer.wait_states("UP")
            self.url = self.balancer.url
        else:
            self.url = self.servers[0].url
        for client in self._clients:  # their pooled connections went with the old process
            client.reconnect()

    def stderr_text(self) -> str:
        """What the relay wrote to stderr: every replica's, one after the other."""
        return "".join("".join(server.stderr) for server in self.servers)

    def _wait_unrouted(self) -> None:
        if self.balancer is not None and self.balancer.running():
            self.balancer.wait_states("DOWN")

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait; returns the exit code (the first replica's)."""
        if not any(server.running() for server in self.servers):
            return None if self.process is None else self.process.returncode
        for server in self.servers:
            server.terminate()
        codes = [server.wait(timeout) for server in self.servers]
        self._wait_unrouted()
        return codes[0]

    def kill9(self) -> None:
        """``kill -9``: no cleanup, no flush, as a crash or OOM kill would leave it."""
        for server in self.servers:
            server.kill9()
        self._wait_unrouted()

    def restart(self) -> None:
        self.stop()
        self.start()

    # Admin helpers on this data dir.
    def add_operator(self, name: str, pubkey_path: Path) -> str:
        return add_operator(self.data_dir, name, pubkey_path)

    def enroll(self, drone: str, labels: Iterable[str] = (), ttl: str = "1h", *,
               replace: bool = False, authorize: Iterable[Path] | None = None) -> str:
        """A join token; the drone obeys every pilot made by ``pilot()`` so far, unless
        ``authorize`` names the key files (``()``: none, a drone that runs nothing)."""
        keys = list(self.pilot_keys if authorize is None else authorize)
        return enroll(self.data_dir, drone, labels, url=self.configured_url or self.url, ttl=ttl,
                      replace=replace, authorize=keys)

    def pilot(self, name: str = "alice") -> PilotSession:
        """A logged-in pilot with a fresh key (its key file is kept under the data dir)."""
        key_path = self.data_dir.parent / f"{name}-key" / "id_ed25519"
        signer = new_signer(key_path)
        secret = self.add_operator(name, Path(f"{key_path}.pub"))
        session = PilotSession(self.url, signer)
        session.totp_secret = secret  # type: ignore[attr-defined]
        session.key_path = key_path  # type: ignore[attr-defined]
        session.login(secret)
        self._clients.append(session)
        self.pilot_keys.append(Path(f"{key_path}.pub"))
        return session

    def drone(self, name: str, labels: Iterable[str] = (), *, slots: int = 1,
              pilot: PilotSession | None = None, replace: bool = False) -> DroneClient:
        """An enrolled test drone; the join token is minted by the admin CLI, or through
        ``POST /v1/workers`` by ``pilot`` when given (faster: no subprocess). ``replace``
        lets it take the name of a drone that holds it."""
        if pilot is None:
            token = self.enroll(name, labels, replace=replace)
        else:
            answer = pilot.post("/v1/workers", json={"name": name, "labels": list(labels),
                                                     "replace": replace})
            if answer.status_code != 200:
                raise AssertionError(f"minting failed: {answer.status_code} {answer.text}")
            token = answer.json()["token"]
        client = DroneClient.join(token, url=self.url, slots=slots)
        self._clients.append(client)
        return client


def wait_until(condition: Any, *, timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``condition()`` until it is truthy; returns its value or raises TimeoutError."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{message} not met within {timeout} s")
        time.sleep(interval)
