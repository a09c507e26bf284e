"""File descriptors: raise the soft limit at startup, and how many connections fit under it.

Every connection is a descriptor, and so is every database, log and blob file
the relay opens for a request. A relay that runs out accepts nothing, answers
nothing, and (before floodlog.py) logged a traceback per attempt. So the soft
limit is raised to the hard one at startup (the default soft limit is often
1,024 while the hard one is far higher), and the connection cap keeps a reserve
of descriptors for the relay's own files.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("dragoon.relay.net")

# With no hard limit, go no higher than Linux's default fs.nr_open.
UNLIMITED_TARGET: Final = 1 << 20
RESERVE_FRACTION: Final = 8  # one descriptor in eight is kept for files, never connections
# Room for the relay's own files, connections accepted but not yet counted (up to three
# loop ticks of GatedListener.ACCEPTS_PER_TICK) and shed ones not yet closed.
MIN_RESERVE: Final = 256
MIN_CONNECTIONS: Final = 16


@dataclass(frozen=True)
class FdLimit:
    soft: int
    hard: int
    raised_from: int | None = None  # the soft limit before, when it was raised


def raise_nofile_limit() -> FdLimit:
    """Set the soft RLIMIT_NOFILE to the hard limit; a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return FdLimit(soft, hard)
        return FdLimit(target, hard, raised_from=soft)
    return FdLimit(soft, hard)


def connection_budget(soft_limit: int) -> int:
    """How many connections fit under ``soft_limit`` and still leave the relay its files."""
    if soft_limit == resource.RLIM_INFINITY:
        soft_limit = UNLIMITED_TARGET
    reserve = max(MIN_RESERVE, soft_limit // RESERVE_FRACTION)
    return max(MIN_CONNECTIONS, soft_limit - reserve)


def connection_cap(configured: int, soft_limit: int) -> int:
    """``max_connections`` as served: the budget when 0, never above the budget."""
    budget = connection_budget(soft_limit)
    if configured <= 0:
        return budget
    if configured > budget:
        log.warning("max_connections = %d is above what %d open files allow; using %d",
                    configured, soft_limit, budget)
        return budget
    return configured
