"""A key that seals many trials is wrapped once per recipient, and every trial still opens."""

from __future__ import annotations

from dragoon.shared import e2e
from dragoon.shared.sealed_task import Recipient, seal_task
from dragoon.shared.spec import parse_spec
from nacl.public import PrivateKey


def test_wraps_of_an_earlier_seal_under_the_same_key_are_reused_and_still_open() -> None:
    secrets = [PrivateKey.generate() for _ in range(3)]
    recipients = [Recipient(f"SHA256:r{i}", bytes(k.public_key)) for i, k in enumerate(secrets)]
    spec = parse_spec({"command": "echo hi"})
    assert not isinstance(spec, str)
    key = e2e.new_task_key()
    first = seal_task(spec, order_id="o1", recipients=recipients, key=key)
    second = seal_task(spec, order_id="o2", recipients=recipients, key=key, wraps=first.wraps)
    assert second.wraps == first.wraps  # not wrapped again
    assert second.payload != first.payload  # each payload bound to its own order
    for secret, recipient in zip(secrets, recipients, strict=True):
        assert e2e.unwrap_key(second.wraps[recipient.fingerprint], bytes(secret)) == key
    # Wraps that miss a recipient are not trusted for it: the key is wrapped anew.
    partial = seal_task(spec, order_id="o3", recipients=recipients, key=key,
                        wraps={recipients[0].fingerprint: first.wraps[recipients[0].fingerprint]})
    assert set(partial.wraps) == {r.fingerprint for r in recipients}
    assert e2e.unwrap_key(partial.wraps[recipients[2].fingerprint], bytes(secrets[2])) == key
