"""The pilot certificate and the drone's signed pilots list (shared/pilots_list.py): one
canonical text, signed and checked in their own SSHSIG namespaces."""

from __future__ import annotations

import pytest
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PrivateKey
from dragoon.shared.pilots_list import (
    PilotsListError,
    certify_pilot_x25519,
    check_pilot_x25519_certificate,
    check_pilots_list,
    make_pilots_list,
    parse_pilots_list,
    sign_pilots_list,
)
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.trust import X25519Key, certify_x25519

DRONE = KeyFileSigner(PrivateKey.generate_ed25519())
ALICE = PrivateKey.generate_ed25519("alice@laptop").public_key
BOB = PrivateKey.generate_ed25519("bob").public_key


def test_the_list_renders_canonically_and_parses_back() -> None:
    listing = make_pilots_list("box-1", 1764600000123, [ALICE, BOB, ALICE])
    text = listing.text()
    assert text == ("dragoon-drone-pilots-v1\ndrone box-1\nversion 1764600000123\n"
                    f"{ALICE.openssh(with_comment=False)}\n{BOB.openssh(with_comment=False)}\n")
    assert parse_pilots_list(text) == listing
    assert parse_pilots_list(make_pilots_list("box-1", 0, []).text()).pilots == ()


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("\n", "\r\n"),
    lambda t: t[:-1],
    lambda t: t.replace("version 5", "version 05"),
    lambda t: t.replace("version 5", "version -5"),
    lambda t: t.replace("drone box-1", "drone  box-1"),
    lambda t: t.replace("drone box-1", "drone ../x"),
    lambda t: t + t.splitlines()[3] + "\n",  # a key twice
    lambda t: t[:-1] + " alice@laptop\n",  # a comment
    lambda t: t.replace("dragoon-drone-pilots-v1", "dragoon-drone-pilots-v2"),
    lambda t: t + "\n",
    lambda t: t + "from=\"x\" " + t.splitlines()[3] + "\n",
])
def test_any_other_text_is_refused(edit) -> None:  # type: ignore[no-untyped-def]
    text = make_pilots_list("box-1", 5, [ALICE]).text()
    with pytest.raises(PilotsListError):
        parse_pilots_list(edit(text))


def test_the_list_is_checked_against_the_drones_key() -> None:
    listing = make_pilots_list("box-1", 7, [ALICE])
    signature = sign_pilots_list(DRONE, listing)
    assert check_pilots_list(DRONE.public_key, listing.text(), signature) == listing
    longer = make_pilots_list("box-1", 7, [ALICE, BOB]).text()
    with pytest.raises(SignatureError):
        check_pilots_list(DRONE.public_key, longer, signature)
    other = KeyFileSigner(PrivateKey.generate_ed25519())
    with pytest.raises(SignatureError):
        check_pilots_list(DRONE.public_key, longer, sign_pilots_list(other, listing))


def test_a_pilot_certificate_holds_only_for_its_key_and_namespace() -> None:
    pilot = KeyFileSigner(PrivateKey.generate_ed25519())
    x25519 = X25519Key.generate().public
    certificate = certify_pilot_x25519(pilot, x25519)
    check_pilot_x25519_certificate(pilot.public_key, x25519, certificate)
    with pytest.raises(SignatureError):
        check_pilot_x25519_certificate(pilot.public_key, X25519Key.generate().public,
                                       certificate)
    with pytest.raises(SignatureError):
        check_pilot_x25519_certificate(ALICE, x25519, certificate)
    # The drone's certificate of its own key is another namespace: it can't stand for one.
    with pytest.raises(SignatureError):
        check_pilot_x25519_certificate(pilot.public_key, x25519,
                                       certify_x25519(pilot, x25519))
