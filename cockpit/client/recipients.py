"""Who a task is encrypted for, decided on the pilot's side against its own roots (issue 13;
docs/security.md, "Who a task is encrypted for"; docs/protocol.md, "Recipients").

The relay answers ``GET /v1/workers/{name}/recipients`` with the drone's keys, the drone's
signed list of the pilots it obeys, and the X25519 keys it holds for those pilots. None of
it is believed on the relay's word:

- the drone's ed25519 and X25519 keys must be its ``known_drones`` entry (a drone not in
  it, or reported with other keys, is refused, one line naming the drone and both
  fingerprints);
- the pilots list must be signed by that known key (namespace ``dragoon-drone-pilots-v1``),
  name this drone, and be no older than the newest list of this drone this pilot has seen
  (kept in ``$XDG_STATE_HOME/dragoon/pilots-lists.json``), so a relay can't replay the
  list from before a ``dragoon drone revoke``;
- each listed pilot's X25519 key must be certified by that pilot's SSH key, as listed
  (namespace ``dragoon-pilot-key-v1``).

A refusal is ``RecipientsRefused`` (a ``TrustMismatch``), never a shorter list. What a relay
can still do is withhold: a pilot with no published key is skipped and named
(``without_key``), a drone that published no list yet is named (``unlisted``), and then
only the drone and this pilot read the output. This pilot is always a recipient, with the
key in its own ``pilot.x25519``, whatever the relay holds; when the relay holds none or
another for it, it is published again here (the lazy path of a pilot that logged in
before the key existed).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragoon.cockpit.client._client import RelayClient
from dragoon.cockpit.client.config import PilotConfigError, state_dir
from dragoon.cockpit.client.enrollments import (
    PendingStore,
    TrustMismatch,
    confirm,
    known_drones_path,
)
from dragoon.cockpit.client.pilot_key import load_or_make_pilot_key, publication
from dragoon.shared.errors import DragoonError
from dragoon.shared.keys import PublicKey, write_private_file
from dragoon.shared.pilots_list import check_pilot_x25519_certificate, check_pilots_list
from dragoon.shared.sealed_task import Recipient
from dragoon.shared.trust import (
    KnownDrone,
    TrustFileError,
    parse_x25519,
    read_known_drones,
    x25519_fingerprint,
)

SEEN_LISTS_FILE = "pilots-lists.json"  # in the state dir: the newest list version per drone key


class RecipientsRefused(TrustMismatch):
    """The relay's answer fails a check against this pilot's roots; the text is one line."""


@dataclass(frozen=True)
class Recipients:
    """Whom a task's key is sealed to, every key checked against this pilot's roots.

    ``pilots`` starts with this pilot itself. ``without_key``: fingerprints of pilots a
    drone obeys who published no X25519 key (they won't read this task's output).
    ``unlisted``: drones that published no pilots list yet (only this pilot reads).
    ``unknown``: for a labels target, drones the relay lists with the labels that are not
    in known_drones, so left out (the relay can't choose them for this task)."""

    drones: tuple[Recipient, ...]
    pilots: tuple[Recipient, ...]
    without_key: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    # Every pilot key the drones' checked lists authorize: whose signed orders this pilot
    # believes when it opens a task (cockpit/client/sealing.py).
    signers: tuple[PublicKey, ...] = ()


def _refuse(name: str, why: str) -> RecipientsRefused:
    return RecipientsRefused(f"drone {name}: REFUSED, {why}")


def _known(env: Mapping[str, str]) -> dict[str, KnownDrone]:
    try:
        return read_known_drones(known_drones_path(env))
    except TrustFileError as exc:
        raise PilotConfigError(f"{exc}; fix or remove the line") from None


class _SeenLists:
    """The newest pilots-list version seen per drone key (fingerprint → version), 0600."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.path: Path = state_dir(env) / SEEN_LISTS_FILE

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            seen = data["seen"]
            if not isinstance(seen, dict) or not all(
                    isinstance(v, int) for v in seen.values()):
                raise ValueError("not a table of versions")
            return {str(k): int(v) for k, v in seen.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PilotConfigError(f"{self.path} is unreadable ({exc}); remove it (the check "
                                   "against older pilots lists starts anew)") from None

    def note(self, fingerprint: str, version: int) -> None:
        seen = self.load()
        if seen.get(fingerprint, -1) >= version:
            return
        seen[fingerprint] = version
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(self.path, json.dumps({"seen": seen}, indent=1).encode())


def _check_drone(name: str, known: KnownDrone | None, drone: Any) -> KnownDrone:
    """The known drone, once the relay's report of its keys is exactly the known entry."""
    if not isinstance(drone, dict):
        raise _refuse(name, "the relay sent no keys for it")
    try:
        key = PublicKey.from_openssh(str(drone.get("public_key") or ""), source="drone key")
        x25519: bytes | None = parse_x25519(str(drone.get("x25519_public_key") or ""))
    except DragoonError:
        key, x25519 = None, None
    reported = key.fingerprint if key is not None else "none"
    reported_x = x25519_fingerprint(x25519) if x25519 is not None else "none"
    if known is None:
        raise _refuse(name, f"not in known_drones (the relay reports ed25519 {reported}); "
                            "confirm its enrollment (`dragoon drones`) or trust it by "
                            f"fingerprint (`dragoon drones trust {name} FINGERPRINT`)")
    if key != known.ed25519 or x25519 != known.x25519:
        raise _refuse(name, f"the relay reports ed25519 {reported}, x25519 {reported_x}, but "
                            f"known_drones has ed25519 {known.fingerprint}, x25519 "
                            f"{x25519_fingerprint(known.x25519)} (the relay, or someone "
                            "between it and the drone, may have swapped them)")
    return known


@dataclass
class _PilotsOfDrone:
    pilots: list[Recipient]
    without_key: list[str]
    listed: bool
    self_stale: bool  # this pilot is listed and the relay holds no, or another, key for it
    keys: tuple[PublicKey, ...] = ()  # every pilot key of the checked list


def _check_pilots(drone: KnownDrone, answer: Mapping[str, Any], me: PublicKey, mine: bytes,
                  seen: _SeenLists) -> _PilotsOfDrone:
    """The pilots of ``drone``'s signed list with their checked X25519 keys (module doc)."""
    name = drone.name
    signed = answer.get("pilots")
    if signed is None:
        return _PilotsOfDrone([], [], listed=False, self_stale=False)
    if not isinstance(signed, dict):
        raise _refuse(name, "the relay's pilots list is not an object")
    try:
        listing = check_pilots_list(drone.ed25519, str(signed.get("list")),
                                    str(signed.get("signature")))
    except DragoonError as exc:
        raise _refuse(name, f"its pilots list is not signed by its key {drone.fingerprint} "
                            f"({exc})") from None
    if listing.drone != name:
        raise _refuse(name, f"the relay serves drone {listing.drone}'s pilots list for it")
    newest = seen.load().get(drone.fingerprint, -1)
    if listing.version < newest:
        raise _refuse(name, f"the relay serves its pilots list version {listing.version}, "
                            f"older than version {newest} this pilot saw (a revoked pilot may "
                            "be back in it)")
    seen.note(drone.fingerprint, listing.version)

    held: dict[str, Any] = {}
    for entry in answer.get("pilot_keys") or []:
        fingerprint = entry.get("fingerprint") if isinstance(entry, dict) else None
        if not isinstance(fingerprint, str):
            raise _refuse(name, "the relay sent a pilot key entry without a fingerprint")
        if fingerprint in held:
            raise _refuse(name, f"the relay sent two X25519 keys for pilot {fingerprint}")
        held[fingerprint] = entry
    pilots: list[Recipient] = []
    without: list[str] = []
    self_stale = False
    for key in listing.pilots:
        entry = held.get(key.fingerprint)
        if entry is None:
            if key == me:
                self_stale = True
            else:
                without.append(key.fingerprint)
            continue
        try:
            x25519 = parse_x25519(str(entry.get("x25519_public_key") or ""))
            check_pilot_x25519_certificate(key, x25519, str(entry.get("x25519_signature")))
        except DragoonError:
            raise _refuse(name, f"the X25519 key the relay holds for pilot {key.fingerprint} "
                                "is not certified by that pilot's key (the relay may have "
                                "swapped it)") from None
        if key == me:
            self_stale = x25519 != mine  # a key this pilot made before, on another machine
            continue
        pilots.append(Recipient(key.fingerprint, x25519))
    return _PilotsOfDrone(pilots, without, listed=True, self_stale=self_stale,
                          keys=tuple(listing.pilots))


async def _resolve(client: RelayClient, names: Sequence[str], env: Mapping[str, str], *,
                   skip_unknown: bool = False) -> Recipients:
    me = client.signer.public_key
    mine = load_or_make_pilot_key(env)
    known = _known(env)
    missing = [n for n in names if n not in known]
    if missing and any(p.name in missing and p.relay == client.base_url
                       for p in PendingStore(env).load()):
        # Enrolled by this pilot, not confirmed yet: confirm it now, as a listing would.
        _confirmed, refused = confirm(client.base_url, await client.drones(), env=env)
        for refusal in refused:
            if any(str(refusal).startswith(f"drone {n}:") for n in missing):
                raise refusal
        known = _known(env)
    unknown = [n for n in names if n not in known] if skip_unknown else []
    seen = _SeenLists(env)
    drones: list[Recipient] = []
    pilots: dict[str, Recipient] = {me.fingerprint: Recipient(me.fingerprint, mine.public)}
    without: dict[str, None] = {}
    signers: dict[bytes, PublicKey] = {}
    unlisted: list[str] = []
    republish = False
    wanted = [name for name in names if name not in unknown]
    # One request per drone, all in flight together: a sweep over 20 drones or a fan-out
    # to 50 waits for one round trip, not for 50 in a row.
    answers = await asyncio.gather(*(client.recipients(drone=name) for name in wanted))
    for name, answer in zip(wanted, answers, strict=True):
        drone = _check_drone(name, known.get(name), answer.get("drone"))
        drones.append(Recipient(drone.fingerprint, drone.x25519))
        found = _check_pilots(drone, answer, me, mine.public, seen)
        if not found.listed:
            unlisted.append(name)
        republish = republish or found.self_stale
        for pilot in found.pilots:
            pilots.setdefault(pilot.fingerprint, pilot)
        without.update(dict.fromkeys(found.without_key))
        signers.update({key.blob: key for key in found.keys})
    if republish:  # signed off the loop: an ssh-agent answers over a socket
        body = await asyncio.to_thread(publication, client.signer, mine)
        await client.publish_pilot_key(**body)
    return Recipients(drones=tuple(drones), pilots=tuple(pilots.values()),
                      without_key=tuple(f for f in without if f not in pilots),
                      unlisted=tuple(unlisted), unknown=tuple(unknown),
                      signers=tuple(signers.values()))


async def recipients_for_drone(client: RelayClient, name: str, *,
                               env: Mapping[str, str] = os.environ) -> Recipients:
    """The recipients of a task for the drone ``name``; RecipientsRefused (one line) when
    the relay's answer fails any check against this pilot's roots."""
    return await _resolve(client, [name], env)


async def recipients_for_labels(client: RelayClient, labels: Iterable[str], *,
                                env: Mapping[str, str] = os.environ) -> Recipients:
    """The recipients of a task for any drone with all ``labels``: every drone the relay
    lists with them that is in known_drones (the others are named in ``unknown`` and left
    out: a labels order lists its candidate drones, so the relay can choose none of them).
    """
    wanted = set(labels)
    listed = [d for d in await client.drones()
              if isinstance(d.get("labels"), list) and wanted <= set(d["labels"])]
    return await _resolve(client, sorted(str(d.get("name")) for d in listed), env,
                          skip_unknown=True)
