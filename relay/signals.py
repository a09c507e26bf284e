"""In-process wake-ups keyed by name: what makes long-polls answer at once, without polling.

Each key has a version counter. A waiter reads the version, checks the
database, and then waits for the version to move past what it read, so a
change that lands between the check and the wait is never missed.

With replicas (PostgreSQL), ``notify`` also tells the other relays (relay/bus.py),
and what they tell this one arrives as ``wake``/``wake_all``: local only, never
sent on. Without (SQLite), ``publish`` is None and nothing else happens.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable


class Signals:
    def __init__(self, publish: Callable[[Hashable], None] | None = None) -> None:
        self._versions: dict[Hashable, int] = defaultdict(int)
        self._waiters: dict[Hashable, set[asyncio.Future[None]]] = defaultdict(set)
        # Moves every key's version at once (``wake_all``): a waiter between its
        # ``version`` and its ``wait`` sees it too, not only those already waiting.
        self._generation = 0
        self._publish = publish
        self.closed = False

    def close(self) -> None:
        """Shutting down: wake every waiter, and make later waits return at once (False)."""
        self.closed = True
        self.wake_all()

    def version(self, key: Hashable) -> int:
        return self._versions[key] + self._generation

    def notify(self, key: Hashable) -> None:
        """Wake everyone waiting on ``key``, here and on the other replicas; call on the
        event loop, after the commit."""
        self.wake(key)
        if self._publish is not None:
            self._publish(key)

    def wake(self, key: Hashable) -> None:
        """Wake the waiters on ``key`` in this process only (what another replica said)."""
        self._versions[key] += 1
        for future in self._waiters.pop(key, set()):
            if not future.done():
                future.set_result(None)

    def wake_keys(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.wake(key)

    def wake_all(self) -> None:
        """Every waiter looks again: what other replicas said may have been missed."""
        self._generation += 1
        waiters, self._waiters = self._waiters, defaultdict(set)
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def wait(self, key: Hashable, since: int, timeout: float) -> bool:
        """Wait until ``key`` moves past version ``since``; False when ``timeout`` ran out
        or the relay is shutting down."""
        if self.closed:
            return False
        if self.version(key) != since:
            return True
        if timeout <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key].add(future)
        try:
            await asyncio.wait_for(future, timeout)
            return not self.closed
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    self._waiters.pop(key, None)
