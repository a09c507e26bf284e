"""The drone's gate for pilot-signed orders (issue 13, piece 2; docs/security.md).

Before a task, a cancel or a fetch is acted on, its order (shared/orders.py) must:
verify under a key in the drone's ``authorized_pilots`` (read again whenever the
file changes, so ``dragoon drone authorize`` / ``revoke`` take effect without a
restart); be unexpired (``CLOCK_SKEW`` allowed); name this drone or labels it
has; and not be in the drone's **seen orders** under another reference (a
replay). The relay can't add to any of this: it only carries the order.

Seen orders live in ``DATA/seen_orders``, an append-only file, one line per
order: ``ID EXPIRES REF`` (REF: the relay's task or fetch id the order was taken
for). A task order seen again is a replay and is refused, whichever task it comes
with (a redelivered task is known as accepted before its order is looked at); a
cancel or fetch order seen again with the same REF is the relay delivering it again
(a cancel repeated in every poll) and is harmless, with another REF a replay. A line
is fsynced before the order is acted on. Entries are kept until their expiry (plus the
skew) and the file is rewritten without the expired ones when it doubles; at most ``MAX_SEEN`` are
kept, and since an order lives at most 31 days, that bounds it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dragoon.drone.state import fsync_dir, is_safe_id, write_atomic
from dragoon.shared import orders
from dragoon.shared.errors import DragoonError
from dragoon.shared.keys import PublicKey
from dragoon.shared.orders import Order, OrderError
from dragoon.shared.trust import read_authorized_pilots

log = logging.getLogger("dragoon.drone")

SEEN_ORDERS: Final = "seen_orders"
MAX_SEEN: Final = 200_000  # ~60 bytes a line: a 12 MB file at worst


class AuthorizedPilots:
    """The drone's ``authorized_pilots``, read again whenever the file's stat changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[PublicKey] = []
        self._error: str | None = None

    def keys(self) -> list[PublicKey]:
        """The keys now; a file that can't be read authorizes no one (and says why)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            try:
                self._keys, self._error = read_authorized_pilots(self.path), None
            except DragoonError as exc:
                self._keys, self._error = [], str(exc)
                log.error("authorized_pilots unreadable, no order is obeyed: %s", exc)
            self._stamp = stamp
            if not self._keys and self._error is None:
                log.warning("%s authorizes no pilot: this drone runs nothing until a pilot "
                            "key is added (dragoon drone authorize KEY, docs/drone.md)",
                            self.path)
        if self._error is not None:
            raise OrderError(f"authorized_pilots cannot be read ({self._error})")
        return self._keys


@dataclass
class _Seen:
    expires: int
    ref: str


class SeenOrders:
    """Order ids the drone acted on, durable, until their expiry (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, _Seen] = {}
        self._lines = 0
        self._unsynced = False  # appended without an fsync since the last sync()
        self._torn = False  # the file ends in a line cut by a crash: the next starts anew
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return
        self._torn = bool(text) and not text.endswith("\n")
        now = time.time()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit():
                continue  # a torn last line after a crash: its order was never acted on
            self._lines += 1
            if int(parts[1]) + orders.CLOCK_SKEW >= now:
                self._seen[parts[0]] = _Seen(int(parts[1]), parts[2])

    def seen_ref(self, order_id: str) -> str | None:
        entry = self._seen.get(order_id)
        return None if entry is None else entry.ref

    def check(self, order: Order, ref: str, *, strict: bool = False) -> None:
        """OrderError when the order was already taken for another task or fetch; with
        ``strict`` (a task's order), for any, this one included."""
        if not is_safe_id(ref):  # it is written into seen_orders: a plain token only
            raise OrderError(f"{ref!r} is not a plain task or fetch id")
        earlier = self.seen_ref(order.id)
        if earlier is not None and (strict or earlier != ref):
            raise OrderError(f"order {order.id} was already used (for {earlier}): a replay")

    def recall(self, order_id: str, expires: object, ref: str) -> None:
        """An order a task dir's task.json says was accepted: remembered if it is not yet
        (best effort; the task dir itself keeps the task from running twice meanwhile)."""
        if self.seen_ref(order_id) is not None or not isinstance(expires, int):
            return
        try:
            self.remember(Order({"id": order_id, "expires": expires}, ""), ref)
        except OrderError as exc:
            log.warning("task %s: %s", ref, exc.detail)

    def remember(self, order: Order, ref: str, *, durable: bool = True) -> None:
        """Appended, and fsynced before the order is acted on. ``durable=False`` (a task's
        order, whose task.json, fsynced, holds it too) leaves the fsync to ``sync``, which
        runs before the task dir goes: one fsync less on the way to the start."""
        if self.seen_ref(order.id) == ref:
            return
        if len(self._seen) >= MAX_SEEN:
            self._prune()
            if len(self._seen) >= MAX_SEEN:
                raise OrderError(f"the drone remembers {MAX_SEEN} unexpired orders already; "
                                 "refusing more until some expire")
        created = not self.path.exists()
        line = (b"\n" if self._torn else b"") + f"{order.id} {order.expires} {ref}\n".encode(
            "ascii", "replace")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                         0o600)
            try:
                os.write(fd, line)
                if durable:
                    os.fsync(fd)
                else:
                    self._unsynced = True
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:  # a full disk: not obeyed, since it could not be remembered
            raise OrderError(f"the drone cannot record the order in {self.path} "
                             f"({exc.strerror or exc}); not acted on") from None
        self._torn = False
        self._seen[order.id] = _Seen(order.expires, ref)
        self._lines += 1
        if self._lines > 2 * len(self._seen) + 1000:
            self._prune()

    def sync(self) -> None:
        """fsync what ``remember(durable=False)`` appended (called from the task's cleanup
        thread, before its task dir, the other durable copy, is removed)."""
        if not self._unsynced:
            return
        self._unsynced = False  # first: an append after this is covered or flags it again
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _prune(self) -> None:
        """Rewrite the file without the expired entries (atomically, fsynced)."""
        now = time.time()
        self._seen = {k: v for k, v in self._seen.items()
                      if v.expires + orders.CLOCK_SKEW >= now}
        data = "".join(f"{k} {v.expires} {v.ref}\n" for k, v in self._seen.items())
        try:
            write_atomic(self.path, data.encode("ascii", "replace"))
        except OSError as exc:  # kept in memory; the longer file is still correct
            log.warning("could not rewrite %s without its expired orders: %s", self.path, exc)
        self._lines = len(self._seen)


class OrderGate:
    """Every check of the module docstring, for one drone."""

    def __init__(self, root: Path, authorized: Path, *, name: str, labels: Iterable[str]) -> None:
        self.pilots = AuthorizedPilots(authorized)
        self.seen = SeenOrders(root / SEEN_ORDERS)
        self.name = name
        self.labels = list(labels)

    def check(self, text: object, signature: object, *, kind: str, ref: str,
              strict: bool = False) -> Order:
        """The order once it may be obeyed; OrderError with the reason the pilot reads.

        ``strict``: an id seen before is a replay whatever it was taken for (tasks); else
        the same id for the same ``ref`` is the relay delivering it again (a cancel it
        repeats in each answer, a pending fetch after a restart): harmless."""
        if text is None and signature is None:
            raise OrderError("no order signed by a pilot came with it")
        order = orders.parse_order(text)
        if order.kind != kind:
            raise OrderError(f"the order is a {order.kind} order, not a {kind}")
        key = orders.signer_of(order, signature)
        orders.check_authorized(key, self.pilots.keys())
        orders.check_unexpired(order)
        orders.check_target(order, name=self.name, labels=self.labels)
        self.seen.check(order, ref, strict=strict)
        return order
