"""The ``dragoon`` entry point: a table of verbs, each loaded lazily from the part that owns it.

This module is the one meeting point of relay/, drone/ and cockpit/ (see
docs/architecture.md). It names their commands as ``module:attribute``
strings and imports a part only when its verb runs, so ``dragoon --help`` and
``dragoon drone …`` never pay for FastAPI or Textual.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Verb:
    target: str | None  # "package.module:click_command", None while not built yet
    summary: str
    issue: int | None = None  # the issue that builds it, while it is a stub


PILOT = "dragoon.cockpit.cli"
VERBS: dict[str, Verb] = {
    "relay": Verb("dragoon.relay.cli:relay", "Relay host: init, add-operator, enroll, serve."),
    "drone": Verb("dragoon.drone.cli:drone", "Drone host: join a relay, run the daemon."),
    "notify": Verb("dragoon.drone.notify:notify", "Inside a task: send TEXT to the pilot's inbox."),
    "login": Verb(f"{PILOT}:login", "Log in to the relay with your SSH key and a TOTP code."),
    "logout": Verb(f"{PILOT}:logout", "Revoke the session token."),
    "drones": Verb(f"{PILOT}:drones", "List drones: state, labels, load, running tasks."),
    "drain": Verb(f"{PILOT}:drain", "Drain a drone: it finishes its work, takes no more."),
    "enroll": Verb(f"{PILOT}:enroll", "Mint a one-time join token for a new drone."),
    "submit": Verb(f"{PILOT}:submit", "Queue a command on a drone; prints the task id."),
    "run": Verb(f"{PILOT}:run", "Submit, stream the output, exit with the task's code."),
    "tasks": Verb(f"{PILOT}:tasks", "List tasks."),
    "task": Verb(f"{PILOT}:task", "Show one task."),
    "logs": Verb(f"{PILOT}:logs", "Print (or follow) a task's output."),
    "cancel": Verb(f"{PILOT}:cancel", "Cancel a task: SIGTERM, grace, SIGKILL."),
    "artifacts": Verb(f"{PILOT}:artifacts", "List a task's artifacts."),
    "artifact": Verb(f"{PILOT}:artifact", "Download one artifact."),
    "fetch": Verb(f"{PILOT}:fetch", "Download a file from a drone."),
    "inbox": Verb(f"{PILOT}:inbox", "Read (or follow) messages from tasks."),
    "cockpit": Verb(f"{PILOT}.tui:cockpit", "The full-screen terminal cockpit."),
    "demo": Verb(f"{PILOT}.demo:demo",
                 "Relay + drone on loopback in a temp dir, then the cockpit."),
}


def _not_built(name: str, verb: Verb) -> click.Command:
    @click.command(
        name=name,
        help=f"{verb.summary}\n\nNot built yet (issue {verb.issue}).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=True,
    )
    def stub() -> None:
        click.echo(f"dragoon {name}: not built yet (issue {verb.issue})", err=True)
        sys.exit(2)

    return stub


class LazyVerbs(click.Group):
    """A group whose commands are imported only when invoked (or their own help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        verb = VERBS.get(cmd_name)
        if verb is None:
            return None
        if verb.target is None:
            return _not_built(cmd_name, verb)
        module_name, _, attribute = verb.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists the summaries from the table, so it imports no part at all.
        rows = [(name, verb.summary + ("" if verb.target else " (not built yet)"))
                for name, verb in VERBS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyVerbs, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dragoon", prog_name="dragoon")
def main() -> None:
    """dragoon: run long jobs on remote machines through a public relay.

    Pilots drive drones (the remote boxes) through the relay; every request is
    signed with the pilot's SSH key. See README.md and docs/.
    """
