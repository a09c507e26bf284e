"""In-process wake-ups keyed by name: what makes long-polls answer at once, without polling.

Each key has a version counter. A waiter reads the version, checks the
database, and then waits for the version to move past what it read, so a
change that lands between the check and the wait is never missed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Hashable


class Signals:
    def __init__(self) -> None:
        self._versions: dict[Hashable, int] = defaultdict(int)
        self._waiters: dict[Hashable, set[asyncio.Future[None]]] = defaultdict(set)
        self.closed = False

    def close(self) -> None:
        """Shutting down: wake every waiter, and make later waits return at once (False)."""
        self.closed = True
        for key in list(self._waiters):
            self.notify(key)

    def version(self, key: Hashable) -> int:
        return self._versions[key]

    def notify(self, key: Hashable) -> None:
        """Wake everyone waiting on ``key``; call on the event loop, after the commit."""
        self._versions[key] += 1
        for future in self._waiters.pop(key, set()):
            if not future.done():
                future.set_result(None)

    async def wait(self, key: Hashable, since: int, timeout: float) -> bool:
        """Wait until ``key`` moves past version ``since``; False when ``timeout`` ran out
        or the relay is shutting down."""
        if self.closed:
            return False
        if self._versions[key] != since:
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
