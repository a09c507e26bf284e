"""Back-off for followers: keep trying through a relay restart or a network drop.

A follower never gives up on the first refused connection (the relay may be
restarting under systemd), but it does give up after ``give_up_after`` seconds
without a single good answer, so a relay that is gone for good ends in a clear
error rather than a silent hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dragoon.cockpit.client._errors import RelayError

RetryHook = Callable[[RelayError, float], None]


@dataclass
class Backoff:
    first: float = 0.1
    cap: float = 2.0
    give_up_after: float = 300.0
    on_retry: RetryHook | None = None
    max_server_errors: int = 10
    _server_errors: int = field(default=0, init=False)
    _delay: float = field(default=0.0, init=False)
    _failing_since: float | None = field(default=None, init=False)

    def reset(self) -> None:
        self._delay = 0.0
        self._failing_since = None
        self._server_errors = 0

    async def wait(self, error: RelayError) -> None:
        """Sleep before the next attempt, or re-raise ``error`` when it is not worth retrying."""
        if not error.retryable:
            raise error
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.give_up_after:
            raise error
        if error.status == 500:
            self._server_errors += 1
            if self._server_errors > self.max_server_errors:
                raise error
        self._delay = self.first if not self._delay else min(self.cap, self._delay * 2)
        if self.on_retry is not None:
            self.on_retry(error, self._delay)
        await asyncio.sleep(self._delay)
