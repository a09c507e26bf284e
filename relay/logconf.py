"""One-line ``key=value`` log records on stderr, for journald and grep.

Records name pilots, drones and task ids, never a token, secret or TOTP code:
callers pass only such identifiers, and values are quoted so a name cannot
forge a second record.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("dragoon.relay")


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s %(message)s"))
    root = logging.getLogger("dragoon")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(action: str, **fields: object) -> None:
    """Log one event as ``event=ACTION k=v …`` at info level."""
    if not log.isEnabledFor(logging.INFO):
        return
    parts = [f"event={action}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\n\r\t'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace(
                "\n", "\\n").replace("\r", "\\r") + '"'
        parts.append(f"{key}={text}")
    log.info(" ".join(parts))
