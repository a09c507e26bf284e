"""The drone: a daemon that long-polls the relay and runs signed tasks (docs/drone.md).

Drones run on small boxes, so start-up and memory matter: httpx's ``__init__``
imports its own command line (click, rich, pygments: ~6 MB of resident memory)
whenever those happen to be installed, and a drone never uses it. A None entry
in ``sys.modules`` makes that optional import fail the way httpx expects.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
