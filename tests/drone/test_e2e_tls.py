"""A drone behind a relay served with TLS from a private CA: `--ca-cert`, kept, and never lent.

Real parts: a relay serving HTTPS with a certificate signed by a CA made here,
the pilot's `dragoon` CLI (trusting the CA through DRAGOON_CA_CERT), and real
`dragoon drone join` / `dragoon drone run` processes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import Pilot, make_pilot
from tests.drone.conftest import DroneProcess
from tests.support.relay import REPO, RelayProcess, wait_until
from tests.support.tls import certificate_from_ca, private_ca

# What would make a task trust (or distrust) the world by the drone's rule.
TLS_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "SSLKEYLOGFILE", "DRAGOON_CA_CERT")


@dataclass
class TlsSite:
    relay: RelayProcess
    pilot: Pilot
    ca: Path  # the CA that signed the relay's certificate
    stranger_ca: Path  # a CA that signed nothing the relay serves
    root: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    root = tmp_path_factory.mktemp("tls-site")
    ca, ca_key = private_ca(root, "site-ca")
    stranger_ca, _ = private_ca(root, "stranger-ca")
    cert, key = certificate_from_ca(root, ca, ca_key)
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2},
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        assert relay.url.startswith("https://")
        pilot = make_pilot(relay, root, "tls-alice")
        pilot.extra_env["DRAGOON_CA_CERT"] = str(ca)
        pilot.login()
        try:
            yield TlsSite(relay, pilot, ca, stranger_ca, root)
        finally:
            relay.kill9()


def join(data: Path, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                           str(data), *extra], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "SSL_CERT_FILE": ""}, check=False)


def drone_online(pilot: Pilot, name: str) -> bool:
    return any(d["name"] == name and d["state"] == "online" for d in pilot.json("drones"))


def test_join_without_the_ca_fails_in_tls_with_exit_6_and_writes_nothing(
        site: TlsSite, tmp_path: Path) -> None:
    token = site.pilot.ok("enroll", "tls-untrusting").strip()
    data = tmp_path / "drone"
    done = join(data, token)
    assert done.returncode == 6, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("dragoon drone join: TLS failure talking to https://"), lines
    assert "--ca-cert" in lines[0]
    assert not (data / "drone.toml").exists()
    # A CA that signed something else is no better; the same token is still good after.
    wrong = join(data, token, "--ca-cert", str(site.stranger_ca))
    assert wrong.returncode == 6 and "TLS failure" in wrong.stderr, wrong.stderr
    assert f"chain to {site.stranger_ca}?" in wrong.stderr
    unusable = join(data, token, "--ca-cert", str(tmp_path / "missing.pem"))
    assert unusable.returncode == 6, unusable.stderr
    assert "cannot use CA certificate" in unusable.stderr and "no such file" in unusable.stderr
    assert join(data, token, "--ca-cert", str(site.ca)).returncode == 0


def test_a_drone_joined_with_the_ca_trusts_it_at_run_and_no_task_inherits_tls_settings(
        site: TlsSite, tmp_path: Path) -> None:
    name = "tls-drone"
    token = site.pilot.ok("enroll", name).strip()
    data = tmp_path / "drone"
    handed = tmp_path / "downloaded-ca.pem"  # where the operator happened to put the CA
    handed.write_bytes(site.ca.read_bytes())
    done = join(data, token, "--ca-cert", str(handed), "--labels", "tls")
    assert done.returncode == 0, done.stderr
    copied = data / "relay-ca.pem"
    assert copied.read_bytes() == site.ca.read_bytes()
    assert stat.S_IMODE(copied.stat().st_mode) == 0o644
    assert tomllib.loads((data / "drone.toml").read_text())["ca_cert"] == "relay-ca.pem"
    handed.unlink()  # the drone needs only its own copy from now on
    drone = DroneProcess(data)
    drone.configure(poll_wait=5.0)
    # The drone's own environment carries TLS settings that, were they used, would make the
    # relay untrusted (the stranger CA): only drone.toml's ca_cert decides, and tasks get none.
    drone.start(env={"SSL_CERT_FILE": str(site.stranger_ca), "SSL_CERT_DIR": str(tmp_path),
                     "REQUESTS_CA_BUNDLE": str(site.stranger_ca),
                     "CURL_CA_BUNDLE": str(site.stranger_ca),
                     "SSLKEYLOGFILE": str(tmp_path / "keys.log"),
                     "DRAGOON_CA_CERT": str(site.stranger_ca),
                     "DRAGOON_TEST_MARK": "inherited"})
    try:
        wait_until(lambda: drone_online(site.pilot, name), timeout=60, interval=0.3,
                   message=f"drone online; log:\n{drone.log_text()}")
        out = site.pilot.ok("run", name, "--env", "CURL_CA_BUNDLE=/the/tasks/own.pem", "--",
                            "env")
        task_env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert task_env["DRAGOON_TEST_MARK"] == "inherited"  # the drone's env does reach tasks
        assert task_env["CURL_CA_BUNDLE"] == "/the/tasks/own.pem"  # the spec's own env is kept
        leaked = {k: v for k, v in task_env.items() if k in TLS_VARIABLES and k != "CURL_CA_BUNDLE"}
        assert leaked == {}
        assert "relay-ca" not in out and "stranger-ca" not in out
        assert f"TLS trust {copied}" in drone.log_text()
    finally:
        assert drone.stop() == 0


def test_drone_run_meeting_an_untrusted_relay_says_tls_and_keeps_retrying(
        site: TlsSite, tmp_path: Path) -> None:
    name = "tls-retrying"
    token = site.pilot.ok("enroll", name).strip()
    data = tmp_path / "drone"
    assert join(data, token, "--ca-cert", str(site.ca)).returncode == 0
    drone = DroneProcess(data)
    drone.process = subprocess.Popen(
        [sys.executable, "-m", "dragoon", "drone", "run", "--data", str(data),
         "--ca-cert", str(site.stranger_ca)],
        stdin=subprocess.DEVNULL, stdout=open(drone.log_path, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: "TLS failure" in drone.log_text(), timeout=60, interval=0.2,
                   message="the TLS failure logged")
        line = next(x for x in drone.log_text().splitlines() if "TLS failure" in x)
        assert " ERROR " in line and "retrying" in line and "ca_cert" in line, line
        assert drone.process.poll() is None  # a daemon: it waits for the relay, never exits
        assert not drone_online(site.pilot, name)
    finally:
        assert drone.stop() == 0


def test_drone_run_with_an_unusable_ca_file_stops_with_exit_6(site: TlsSite,
                                                             tmp_path: Path) -> None:
    token = site.pilot.ok("enroll", "tls-no-ca-file").strip()
    data = tmp_path / "drone"
    assert join(data, token, "--ca-cert", str(site.ca)).returncode == 0
    (data / "relay-ca.pem").write_text("not a certificate\n")
    done = subprocess.run([sys.executable, "-m", "dragoon", "drone", "run", "--data", str(data)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 6, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"dragoon drone run: cannot use CA certificate "
                               f"{data / 'relay-ca.pem'}: not PEM certificates"), lines
