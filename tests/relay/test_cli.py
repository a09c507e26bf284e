"""``dragoon relay init | add-operator | enroll | serve`` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pyotp
from dragoon.shared.enrollment import JoinToken

from tests.support.relay import (
    ONE_PROCESS,
    REPO,
    RelayProcess,
    dragoon,
    init_relay,
    new_signer,
    relay_db,
)
from tests.support.tls import self_signed_certificate


def test_add_operator_prints_secret_uri_and_qr_code(tmp_path: Path) -> None:
    init_relay(tmp_path / "relay")
    key = tmp_path / "alice" / "id_ed25519"
    new_signer(key)
    out = dragoon("relay", "add-operator", "--data", str(tmp_path / "relay"), "--name", "alice",
                  "--key", f"{key}.pub").stdout
    secret = next(line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith("TOTP secret: "))
    uri = next(line.split(": ", 1)[1] for line in out.splitlines()
               if line.startswith("otpauth URI: "))
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == secret and parsed.issuer == "dragoon" and parsed.name == "alice"
    assert uri.startswith("otpauth://totp/")
    assert sum("█" in line or "▀" in line or "▄" in line for line in out.splitlines()) > 10


def test_enroll_prints_the_token_alone(tmp_path: Path) -> None:
    init_relay(tmp_path / "relay", url="https://relay.example:8443")
    out = dragoon("relay", "enroll", "--data", str(tmp_path / "relay"), "--drone", "gpu-1",
                  "--labels", "gpu,a100").stdout
    assert len(out.strip().splitlines()) == 1
    token = JoinToken.decode(out)
    assert (token.relay, token.drone) == ("https://relay.example:8443", "gpu-1")


def test_enroll_takes_labels_with_spaces_after_commas(tmp_path: Path) -> None:
    """`dragoon relay enroll --labels "gpu, a100"` as `dragoon submit --labels` takes it."""
    init_relay(tmp_path / "relay", url="https://relay.example:8443")
    dragoon("relay", "enroll", "--data", str(tmp_path / "relay"), "--drone", "gpu-2",
            "--labels", "gpu, a100, gpu", "--ttl", "1h30m")
    with relay_db(tmp_path / "relay") as conn:
        (labels, expires_at, created_at), = (tuple(r) for r in conn.execute(
            "SELECT labels, expires_at, created_at FROM enrollments WHERE drone = 'gpu-2'"))
    assert json.loads(labels) == ["a100", "gpu"]
    assert 5400 <= expires_at - created_at <= 5401


def test_enroll_refuses_bad_flags_with_the_shared_reason_before_touching_the_data(
    tmp_path: Path
) -> None:
    for flag, value, reason in (
        ("--labels", "gpu a100", "'gpu a100' is not a label"),
        ("--labels", "gpu,,a100", "'gpu,,a100' has an empty label between commas"),
        ("--ttl", "0", "must be more than zero"),
        ("--ttl", "31d", "must be at most 30d"),
        ("--drone", "gpu 2", "'gpu 2' is not a name"),
    ):
        args = {"--drone": "gpu-2", flag: value}
        result = dragoon("relay", "enroll", "--data", str(tmp_path / "none"),
                         *(word for pair in args.items() for word in pair), check=False)
        assert result.returncode == 2, (flag, value, result.stderr)
        assert f"Invalid value for '{flag}': {reason}" in result.stderr
    assert not (tmp_path / "none").exists()


def test_admin_command_on_a_missing_data_dir_fails_in_one_line(tmp_path: Path) -> None:
    result = dragoon("relay", "enroll", "--data", str(tmp_path / "none"), "--drone", "x",
                     check=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_serve_refuses_a_public_bind_without_tls(tmp_path: Path) -> None:
    init_relay(tmp_path / "relay")
    result = dragoon("relay", "serve", "--data", str(tmp_path / "relay"), "--bind", "0.0.0.0:0",
                     check=False)
    assert result.returncode == 1
    assert "--insecure" in result.stderr and "Traceback" not in result.stderr


def test_serve_with_tls_answers_https(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with RelayProcess(tmp_path / "relay", backend=ONE_PROCESS,
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        assert relay.url.startswith("https://127.0.0.1:")
        assert httpx.get(f"{relay.url}/healthz", verify=False).json() == {"ok": True}  # noqa: S501


def test_relay_logs_hold_no_token_or_totp(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", extra_args=["--log-level", "info"]) as relay:
        pilot = relay.pilot()
        token = pilot.post("/v1/workers", json={"name": "d"}).json()["token"]
        relay.stop()
        logs = relay.stderr_text()
    assert pilot.token and pilot.token not in logs
    assert JoinToken.decode(token).secret not in logs
    assert pilot.totp_secret not in logs  # type: ignore[attr-defined]


def test_relay_help_does_not_import_textual() -> None:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom dragoon.cli import main\n"
            "r = CliRunner().invoke(main, ['relay', '--help'])\nassert r.exit_code == 0, r.output\n"
            "assert 'add-operator' in r.output\nprint('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "False"


def test_init_keeps_secrets_private_and_is_safe_to_rerun(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    first = dragoon("relay", "init", "--data", str(data)).stdout
    second = dragoon("relay", "init", "--data", str(data)).stdout
    fingerprint = [line for line in first.splitlines() if "task-signing key" in line]
    assert fingerprint and fingerprint[0] in second  # the key was kept, not replaced
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("relay_key", "relay.db"):
        assert (data / name).stat().st_mode & 0o077 == 0, name
