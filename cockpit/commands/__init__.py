"""The pilot verbs of CLI.md as click commands, named in dragoon/cli.py's VERBS table.

Importing this package costs click and nothing more: each verb imports the
API client (httpx), rich and the key code only when it runs.
"""

from dragoon.cockpit.commands.drones import drain, drones, enroll
from dragoon.cockpit.commands.files import artifact, artifacts, fetch
from dragoon.cockpit.commands.inbox import inbox
from dragoon.cockpit.commands.session import login, logout
from dragoon.cockpit.commands.tasks import cancel, logs, run, submit, task, tasks

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
