"""The drone tells pilots whom it obeys: its ``authorized_pilots``, signed by its own key, sent to
the relay at start and again whenever the file changes (docs/protocol.md, "Recipients").

Pilots encrypt a task's output for every pilot in that list; the signature (SSHSIG,
``dragoon-drone-pilots-v1``, shared/pilots_list.py) is what keeps a relay from adding a
reader of its own. The file is looked at before each poll (a stat), so ``dragoon drone
authorize`` / ``revoke`` reach the relay within one poll, without a timer of its own and
without a restart. A list that can't be sent (the relay away) is tried again before the
next poll; one the relay refuses (a 4xx) goes again only once the file changes, or at the
next start; an unreadable file publishes nothing (and the order gate, which reads the same
file, obeys no one meanwhile).

The version is the signing time in milliseconds, kept strictly increasing: above the last
version signed, which is kept in ``DIR/pilots_list_version`` (written before the list is
sent), so a drone whose clock went back, or that restarted, never signs a list that pilots
who saw the last one would refuse as older.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from dragoon.drone.client import RelayLink, RelayUnavailable, error_code
from dragoon.drone.state import write_atomic
from dragoon.shared.errors import DragoonError
from dragoon.shared.signers import Signer

log = logging.getLogger("dragoon.drone")

ROUTE = "/v1/worker/pilots"
VERSION_FILE = "pilots_list_version"  # in the data dir, beside authorized_pilots


class PilotsPublisher:
    """Publishes ``authorized_pilots`` when its stat differs from the last one sent."""

    def __init__(self, path: Path, signer: Signer, name: str) -> None:
        self.path = path
        self.signer = signer
        self.name = name
        self._version_file = path.parent / VERSION_FILE
        self.version = self._last_version()  # of the last list signed
        self._sent: tuple[int, int, int] | None = None  # the file's stat when last sent
        self._failed: str | None = None  # the last failure, logged once

    def _last_version(self) -> int:
        try:
            text = self._version_file.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return 0
        return int(text) if text.isdigit() else 0

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def due(self) -> bool:
        return self._stamp() != self._sent

    async def publish_if_due(self, client: RelayLink) -> bool:
        """Send the list if the file changed since it was last sent; True once it was."""
        stamp = self._stamp()
        if stamp == self._sent:
            return False
        from dragoon.shared.pilots_list import make_pilots_list, sign_pilots_list
        from dragoon.shared.trust import read_authorized_pilots

        version = max(time.time_ns() // 1_000_000, self.version + 1)
        try:
            keys = read_authorized_pilots(self.path)
            signed = make_pilots_list(self.name, version, keys)
        except DragoonError as exc:
            self._say(f"authorized_pilots not published: {exc}")
            return False
        try:
            write_atomic(self._version_file, f"{version}\n".encode("ascii"))
        except OSError as exc:
            self._say(f"cannot record the pilots list's version in {self._version_file} "
                      f"({exc.strerror or exc}), not published")
            return False
        self.version = version
        body = {"list": signed.text(), "signature": sign_pilots_list(self.signer, signed)}
        try:
            response = await client.request("PUT", ROUTE, json_body=body)
        except RelayUnavailable:
            return False  # the poll loop says the relay is away; tried before the next poll
        if response.status_code != 200:
            # Refused as it stands: sending it again each poll would change nothing. It goes
            # again when the file changes, or at the next start.
            self._sent = stamp
            log.warning("the relay refuses the pilots list: HTTP %d %s; sent again when "
                        "authorized_pilots changes", response.status_code, error_code(response))
            return False
        self._sent, self._failed = stamp, None
        log.info("published the pilots list: %d pilot(s), version %d", len(keys), self.version)
        return True

    def _say(self, why: str) -> None:
        if why != self._failed:
            log.warning("%s; tried again before the next poll", why)
            self._failed = why
