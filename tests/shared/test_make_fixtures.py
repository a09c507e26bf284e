"""fixtures/make_fixtures.py never regenerates the vectors by accident, and it reproduces them.

Keys are fresh on every run, so a run reproduces the committed files except
for what a key decides (public keys, fingerprints, signatures, and the
fingerprint line of a canonical request); everything else must come out
byte for byte as committed.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "make_fixtures.py"
KEYED = {"public_key", "fingerprint", "signature", "relay_public_key",
         # enrollments.json: what the drone's, the pilot's and the relay's keys decide
         "x25519_signature", "binding_message_b64", "binding", "token", "relay_half",
         "relay_key", "pilots",
         # recipients.json: a signed pilots list's text holds the pilots' public keys
         "list",
         # sealed_messages.json: a fresh task key and random nonces each run (what a seal
         # must be); tests/shared/test_sealed_message.py opens each committed vector
         "task_key", "sealed"}
# The line of each signed string that names the signer's fingerprint, by its version tag.
FINGERPRINT_LINE = {b"RE-V1": 6, b"RE-LOGIN-V1": 2}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _committed(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((SCRIPT.parent / name).read_text(encoding="utf-8"))
    return data


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, timeout=300)


def _unkeyed(value: Any) -> Any:
    """``value`` without what the keys of one run decide."""
    if isinstance(value, list):
        return [_unkeyed(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {k: _unkeyed(v) for k, v in value.items() if k not in KEYED}
    if "canonical_b64" in out and "fingerprint" in value:  # a line names the signer
        lines = base64.b64decode(value["canonical_b64"]).split(b"\n")
        index = FINGERPRINT_LINE[lines[0]]
        assert lines[index] == value["fingerprint"].encode()
        out["canonical_b64"] = b"\n".join([*lines[:index], b"<fingerprint>",
                                           *lines[index + 1:]])
    return out


def test_make_fixtures_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    existing = tmp_path / "signatures.json"
    existing.write_text("[]\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "refusing to overwrite signatures.json" in done.stderr
    assert "--force" in done.stderr
    assert existing.read_text() == "[]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signatures.json"]


def test_committed_fixtures_are_all_present() -> None:
    names = {p.name for p in SCRIPT.parent.glob("*.json")}
    assert names >= {"fingerprints.json", "signatures.json", "canonical_requests.json",
                     "canonical_tasks.json", "task_envelopes.json", "streamed_requests.json",
                     "logins.json"}
    assert names == set(GEN.FILES)


def test_a_run_reproduces_every_committed_byte_no_key_decides(tmp_path: Path) -> None:
    done = _run("--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in GEN.FILES:
        made = json.loads((tmp_path / name).read_text(encoding="utf-8"))
        assert _unkeyed(made) == _unkeyed(_committed(name)), name


def test_only_makes_the_named_file_beside_committed_ones(tmp_path: Path) -> None:
    (tmp_path / "signatures.json").write_text("[]\n")
    done = _run("--out", str(tmp_path), "--only", "task_envelopes.json")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signatures.json",
                                                          "task_envelopes.json"]
    assert (tmp_path / "signatures.json").read_text() == "[]\n"
    again = _run("--out", str(tmp_path), "--only", "task_envelopes.json")
    assert again.returncode == 1
    assert "refusing to overwrite task_envelopes.json" in again.stderr


@pytest.mark.parametrize("vector", _committed("canonical_requests.json"), ids=lambda v: v["case"])
def test_the_generator_rebuilds_each_committed_canonical_request(vector: dict[str, Any]) -> None:
    built = GEN.canonical_request(vector["method"], vector["path"], vector["query"],
                                  vector["timestamp"], vector["nonce"], vector["fingerprint"],
                                  base64.b64decode(vector["body_b64"]))
    assert built == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", _committed("streamed_requests.json"), ids=lambda v: v["case"])
def test_the_generator_rebuilds_each_committed_streamed_request(vector: dict[str, Any]) -> None:
    assert base64.b64decode(vector["body_b64"]) == GEN.streamed_body(vector["body_size"])
    built = GEN.canonical_request(vector["method"], vector["path"], vector["query"],
                                  vector["timestamp"], vector["nonce"], vector["fingerprint"],
                                  b"", body_hash=vector["body_sha256"])
    assert built == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", _committed("canonical_tasks.json"), ids=lambda v: v["task_id"])
def test_the_generator_rebuilds_each_committed_task(vector: dict[str, Any]) -> None:
    assert GEN.canonical_json(vector["spec"]) == vector["spec_canonical_json"]
    built = GEN.canonical_task(vector["task_id"], vector["drone"], vector["seq"], vector["spec"])
    assert built == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", _committed("task_envelopes.json"), ids=lambda v: v["case"])
def test_the_generator_rebuilds_each_committed_envelope(vector: dict[str, Any]) -> None:
    envelope = vector["envelope"]
    built = GEN.canonical_task_from_hash(envelope["id"], envelope["drone"], envelope["seq"],
                                         vector["spec_sha256"])
    assert built == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", _committed("logins.json"), ids=lambda v: v["case"])
def test_the_generator_rebuilds_each_committed_login(vector: dict[str, Any]) -> None:
    built = GEN.login_string(vector["challenge"], vector["fingerprint"])
    assert built == base64.b64decode(vector["canonical_b64"])


def test_fixtures_hold_no_private_key() -> None:
    for path in SCRIPT.parent.glob("*.json"):
        assert "PRIVATE KEY" not in path.read_text(encoding="utf-8"), path
