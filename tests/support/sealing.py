"""Sealing a task the way an authorized pilot's client would, minus the client's own rules.

For hostile tests: a pilot whose client does not hold its spec to the shared rule (or a
test standing for one) seals and signs what it likes; the drone's own checks must refuse
it. Everything but the rule is the real construction (shared/e2e.py, shared/sealed_task.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragoon.shared import e2e, orders
from dragoon.shared.canonical import canonical_json, sha256_hex, spec_sha256
from dragoon.shared.keys import load_private_key_file
from dragoon.shared.signers import Signer
from dragoon.shared.spec import CLEAR_FIELDS
from dragoon.shared.trust import KnownDrone, X25519Key


@dataclass(frozen=True)
class DroneKeys:
    """A real drone's public keys, read from its data dir as a pilot who enrolled it has."""

    fingerprint: str
    x25519: bytes

    @classmethod
    def of(cls, data_dir: Path) -> DroneKeys:
        key = load_private_key_file(data_dir / "drone_key").public_key
        return cls(key.fingerprint, X25519Key.load(data_dir / "drone_x25519").public)


def sealed_fields(spec: dict[str, Any], *, drone: str, keys: DroneKeys, signer: Signer,
                  key: bytes | None = None) -> dict[str, Any]:
    """The fields a handed-out task carries for ``spec`` (taken as it stands), sealed to the
    drone and signed by ``signer``: clear ``spec``, ``payload``, ``wrap``, the order."""
    task_key = key or e2e.new_task_key()
    order_id = orders.new_order_id()
    sealed = e2e.seal_payload(task_key, canonical_json(spec), order_id=order_id)
    clear = {k: spec[k] for k in CLEAR_FIELDS if k in spec}
    order = orders.task_order(target=orders.drone_target(drone), spec_sha256=spec_sha256(clear),
                              payload_sha256=sha256_hex(sealed), recipients=[keys.fingerprint],
                              order_id=order_id)
    return {"spec": clear, "payload": e2e.b64(sealed),
            "wrap": e2e.wrap_key(task_key, keys.x25519),
            **orders.sign_order(signer, order).wire()}


def known_drone_of(data_dir: Path) -> KnownDrone:
    """A real drone's ``known_drones`` entry, read from its data dir: what `dragoon drones
    trust NAME FINGERPRINT` writes once the fingerprint read on the box matches."""
    from dragoon.drone import config

    name = config.load(data_dir / "drone.toml").name
    key = load_private_key_file(data_dir / "drone_key").public_key
    return KnownDrone(name, key, X25519Key.load(data_dir / "drone_x25519").public)


def trust_drone(env: Mapping[str, str], data_dir: Path) -> None:
    """Put the drone of ``data_dir`` in the known_drones of the pilot whose env this is."""
    from dragoon.cockpit.client.enrollments import remember

    remember(known_drone_of(data_dir), env)


def trust_test_drone(env: Mapping[str, str], drone: Any) -> None:
    """The same for a tests.support.relay.DroneClient (a test drone made from shared/)."""
    from dragoon.cockpit.client.enrollments import remember

    remember(KnownDrone(drone.name, drone.signer.public_key, drone.x25519.public), env)
