"""The ``dragoon`` entry point: a table of verbs, each loaded lazily from the part that owns it.

This module is the one meeting point of relay/, drone/ and cockpit/ (see
docs/architecture.md). It names their commands as ``module:attribute``
strings and imports a part only when its verb runs, so ``dragoon --help`` and
``dragoon drone …`` never pay for FastAPI or Textual.

The default install is a drone box's; the relay and the pilot's side come with
pip extras (pyproject.toml). A verb whose extra is missing says which one to
install, in one line, instead of a traceback from deep inside its part.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import cache

import click

# What each pip extra installs, by the top-level modules its distributions
# provide; pyproject.toml's [project.optional-dependencies] is the other half of
# this table, and tests/test_cli_entry.py keeps the two equal. The default
# install (no extra) is a drone box's: click, httpx, pynacl, cryptography, bcrypt, psutil.
EXTRAS: dict[str, tuple[str, ...]] = {
    "relay": ("fastapi", "pydantic", "starlette", "uvicorn", "pyotp", "qrcode",
              "prometheus_client"),
    "cockpit": ("textual", "rich"),
}


@dataclass(frozen=True)
class Verb:
    target: str  # "package.module:click_command"
    summary: str
    extras: tuple[str, ...] = ()  # the extras of EXTRAS it needs beyond the default install


RELAY, COCKPIT = ("relay",), ("cockpit",)
PILOT = "dragoon.cockpit.cli"  # each verb by its own module: `run` loads no other verb's
VERBS: dict[str, Verb] = {
    "relay": Verb("dragoon.relay.cli:relay", "Relay host: init, add-operator, enroll, serve.",
                  RELAY),
    "drone": Verb("dragoon.drone.cli:drone", "Drone host: join a relay, run the daemon."),
    "notify": Verb("dragoon.drone.notify:notify",
                   "Inside a task: send TEXT (or --metric NAME=NUMBER) to the pilot's inbox."),
    "login": Verb(f"{PILOT}.session:login",
                  "Log in to the relay with your SSH key and a TOTP code.", COCKPIT),
    "logout": Verb(f"{PILOT}.session:logout", "Revoke the session token.", COCKPIT),
    "drones": Verb(f"{PILOT}.drones:drones", "List drones: state, labels, load, running tasks.",
                   COCKPIT),
    "drain": Verb(f"{PILOT}.drones:drain", "Drain a drone: it finishes its work, takes no more.",
                  COCKPIT),
    "enroll": Verb(f"{PILOT}.drones:enroll", "Mint a one-time join token for a new drone.",
                   COCKPIT),
    "submit": Verb(f"{PILOT}.tasks:submit", "Queue a command on a drone; prints the task id.",
                   COCKPIT),
    "run": Verb(f"{PILOT}.tasks:run", "Submit, stream the output, exit with the task's code.",
                COCKPIT),
    "tasks": Verb(f"{PILOT}.tasks:tasks", "List tasks.", COCKPIT),
    "task": Verb(f"{PILOT}.tasks:task", "Show one task.", COCKPIT),
    "logs": Verb(f"{PILOT}.tasks:logs", "Print (or follow) a task's output.", COCKPIT),
    "cancel": Verb(f"{PILOT}.tasks:cancel", "Cancel a task: SIGTERM, grace, SIGKILL.", COCKPIT),
    "sweep": Verb(f"{PILOT}.sweep:sweep", "One task per point of a parameter grid, as a job.",
                  COCKPIT),
    "jobs": Verb(f"{PILOT}.jobs:jobs", "List jobs (fan-outs and sweeps).", COCKPIT),
    "job": Verb(f"{PILOT}.jobs:job", "Show a job's trials; cancel it, retry its failed ones.",
                COCKPIT),
    "artifacts": Verb(f"{PILOT}.files:artifacts", "List a task's artifacts.", COCKPIT),
    "artifact": Verb(f"{PILOT}.files:artifact", "Download one artifact.", COCKPIT),
    "fetch": Verb(f"{PILOT}.files:fetch", "Download a file from a drone.", COCKPIT),
    "inbox": Verb(f"{PILOT}.inbox:inbox", "Read (or follow) messages from tasks.", COCKPIT),
    "cockpit": Verb(f"{PILOT}.tui:cockpit", "The full-screen terminal cockpit.", COCKPIT),
    "demo": Verb(f"{PILOT}.demo:demo",
                 "Relay + drone on loopback in a temp dir, then the cockpit.", RELAY + COCKPIT),
}


@cache
def _installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be found; looked up on sys.path, never imported,
    so that asking costs a drone nothing."""
    return all(importlib.util.find_spec(module) is not None for module in EXTRAS[extra])


def missing_extras(verb: Verb) -> tuple[str, ...]:
    return tuple(extra for extra in verb.extras if not _installed(extra))


def install_hint(missing: tuple[str, ...]) -> str:
    """``needs the relay extra: pip install 'dragoon[relay]'``, for the extras a verb lacks."""
    names = " and ".join(missing)
    spec = "all" if set(missing) == set(EXTRAS) else ",".join(missing)
    plural = "s" if len(missing) > 1 else ""
    return f"needs the {names} extra{plural}: pip install 'dragoon[{spec}]'"


def _lacking(name: str, missing: tuple[str, ...]) -> click.Command:
    """Stands in for a verb whose extra is not installed: whatever the arguments (--help too),
    it says which extra to install, in one line, and exits 2."""

    @click.command(name=name, add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def lacking() -> None:
        click.echo(f"dragoon {name}: {install_hint(missing)}", err=True)
        sys.exit(2)

    return lacking


class _UnknownVerb(click.UsageError):
    """One line for a verb that does not exist (exit 2), not click's usage block."""

    def show(self, file: object = None) -> None:
        click.echo(f"dragoon: {self.format_message()}", err=True)


class LazyVerbs(click.Group):
    """A group whose commands are imported only when invoked (or their own help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        verb = VERBS.get(cmd_name)
        if verb is None:
            return None
        # Checked before the import: a part imports its heavy modules inside its commands
        # (``relay serve`` imports uvicorn when it runs), too late to fail in one line.
        missing = missing_extras(verb)
        if missing:
            return _lacking(cmd_name, missing)
        module_name, _, attribute = verb.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A module of the extra that is found but does not load: a half-installed extra.
            top = (exc.name or "").partition(".")[0]
            lacking = tuple(extra for extra in verb.extras if top in EXTRAS[extra])
            if not lacking:
                raise
            return _lacking(cmd_name, lacking)
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        """A mistyped verb is one line naming the closest verbs (``runn``: did you mean run?)."""
        name = args[0] if args else ""
        if args and not name.startswith("-") and name not in VERBS:
            import difflib

            close = difflib.get_close_matches(name, list(VERBS), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see dragoon --help"
            raise _UnknownVerb(f"no verb {name!r}{hint}", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists the summaries from the table, so it imports no part at all.
        rows = []
        for name, verb in VERBS.items():
            missing = missing_extras(verb)
            note = f" (needs dragoon[{','.join(missing)}])" if missing else ""
            rows.append((name, verb.summary + note))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyVerbs, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dragoon", prog_name="dragoon")
def main() -> None:
    """dragoon: run long jobs on remote machines through a public relay.

    Pilots drive drones (the remote boxes) through the relay; every request is
    signed with the pilot's SSH key. See README.md and docs/.
    """
