"""fixtures/orders.json: pilot-signed orders (docs/protocol.md, "Orders") for each kind and
each key type a pilot uses, signed by ``ssh-keygen -Y sign``; read back here by
shared/orders.py, and checked again with ``ssh-keygen -Y verify``."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared import orders
from dragoon.shared.canonical import canonical_json
from dragoon.shared.constants import NS_SUBMIT
from dragoon.shared.keys import PublicKey
from dragoon.shared.orders import OrderError
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.sshsig import armor

from tests.shared.conftest import load_vectors

VECTORS = load_vectors("orders.json")
ACCEPTED = [v for v in VECTORS if v["accepted"]]


@pytest.mark.parametrize("vector", ACCEPTED, ids=lambda v: v["case"])
def test_the_order_parses_and_its_signer_is_the_vectors_key(vector: dict[str, Any]) -> None:
    order, key = orders.read_signed(vector["order_json"], vector["signature"])
    assert order.fields == vector["order"]
    assert order.text == canonical_json(vector["order"]).decode("utf-8")
    assert key == PublicKey.from_openssh(vector["public_key"])
    orders.check_authorized(key, [PublicKey.from_openssh(vector["public_key"])])


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v["accepted"]],
                         ids=lambda v: v["case"])
def test_a_refused_vector_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(OrderError, match="does not verify"):
        orders.read_signed(vector["order_json"], vector["signature"])


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_ssh_keygen_verifies_each_vector_as_dragoon_does(vector: dict[str, Any],
                                                         tmp_path: Path) -> None:
    sig = tmp_path / "order.sig"
    sig.write_text(armor(base64.b64decode(vector["signature"])), encoding="ascii")
    allowed = tmp_path / "allowed_signers"
    key_type, key_b64 = vector["public_key"].split()[:2]
    allowed.write_text(f"pilot@dragoon {key_type} {key_b64}\n", encoding="ascii")
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I",
                           "pilot@dragoon", "-n", NS_SUBMIT, "-s", str(sig)],
                          input=vector["order_json"].encode("utf-8"), capture_output=True,
                          timeout=60, check=False)
    assert (done.returncode == 0) == vector["accepted"], done.stderr


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_ssh_keygen_verifies_an_order_dragoon_signs(tmp_path: Path, key_path: Path) -> None:
    """The other way: an order shared/orders.py builds and signs (every key type a pilot
    uses) is one OpenSSH accepts."""
    signer = KeyFileSigner.from_file(key_path)
    signed = orders.sign_order(signer, orders.fetch_order(drone="box-1", payload_sha256="ab" * 32))
    sig = tmp_path / "order.sig"
    sig.write_text(armor(base64.b64decode(signed.signature)), encoding="ascii")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"pilot@dragoon {signer.public_key.openssh(with_comment=False)}\n")
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I",
                           "pilot@dragoon", "-n", NS_SUBMIT, "-s", str(sig)],
                          input=signed.order.text.encode("utf-8"), capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_an_order_in_another_spelling_is_refused() -> None:
    text = ACCEPTED[0]["order_json"]
    with pytest.raises(OrderError, match="canonical"):
        orders.parse_order(text.replace(",", ", ", 1))


@pytest.mark.parametrize(("change", "reason"), [
    ({"v": 1}, "version"), ({"kind": "run"}, "kind"), ({"id": "short"}, "order id"),
    ({"expires": "soon"}, "expires"), ({"target": {"drone": "x", "labels": ["a"]}}, "target"),
    ({"target": {"labels": ["b", "a"]}}, "sorted"), ({"spec_sha256": "ab"}, "spec_sha256"),
    ({"extra": 1}, "unknown field"), ({"payload_sha256": "AB" * 32}, "payload_sha256"),
    ({"recipients": []}, "recipients"), ({"recipients": ["SHA256:x"]}, "recipients"),
    ({"recipients": ["SHA256:" + "B" * 43, "SHA256:" + "A" * 43]}, "sorted"),
])
def test_a_malformed_task_order_names_what_is_wrong(change: dict[str, Any], reason: str) -> None:
    fields = {**ACCEPTED[0]["order"], **change}
    with pytest.raises(OrderError, match=reason):
        orders.parse_order(canonical_json(fields).decode("utf-8"))


def test_checks_of_expiry_and_target() -> None:
    order = orders.task_order(target=orders.labels_target(["gpu"]), spec_sha256="0" * 64,
                              payload_sha256="0" * 64, recipients=["SHA256:" + "A" * 43],
                              expires=1000)
    orders.check_unexpired(order, now=1000 + orders.CLOCK_SKEW)
    with pytest.raises(OrderError, match="expired"):
        orders.check_unexpired(order, now=1001 + orders.CLOCK_SKEW)
    orders.check_target(order, name="box-1", labels=["gpu", "linux"])
    with pytest.raises(OrderError, match="lacks gpu"):
        orders.check_target(order, name="box-1", labels=["linux"])
