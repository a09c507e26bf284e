"""The pilot verbs of CLI.md as click commands, named in dragoon/cli.py's VERBS table.

Importing this package costs click and nothing more: each verb imports the
API client (httpx), rich and the key code only when it runs.
"""

from dragoon.cockpit.cli.drones import drain, drones, enroll
from dragoon.cockpit.cli.files import artifact, artifacts, fetch
from dragoon.cockpit.cli.inbox import inbox
from dragoon.cockpit.cli.session import login, logout
from dragoon.cockpit.cli.tasks import cancel, logs, run, submit, task, tasks

__all__ = [
    "artifact",
    "artifacts",
    "cancel",
    "drain",
    "drones",
    "enroll",
    "fetch",
    "inbox",
    "login",
    "logout",
    "logs",
    "run",
    "submit",
    "task",
    "tasks",
]
