"""What every pilot verb shares: connection flags, flag types, and errors as one line + code.

Verbs are thin: each builds a coroutine over ``RelayClient`` and hands it to
``run_async``, which owns the event loop and turns every failure into one line
on stderr and an exit code of ``cockpit.exit_codes``. Heavy imports (httpx,
rich, cryptography) happen inside the verb, never at import time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient, RelayError
    from dragoon.cockpit.client.config import StoredSession
    from dragoon.shared.spec import DurationField

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Fail(Exception):
    """A failure the CLI explains itself: one line and its exit code."""

    def __init__(self, message: str, code: int = X.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line (click's own shows usage, a hint and the error)."""

    def show(self, file: Any = None) -> None:
        verb = self.ctx.info_name if self.ctx is not None else "?"
        click.echo(f"dragoon: {verb}: {clean(self.format_message())} (see --help)", err=True)


@contextmanager
def one_line_usage(ctx: click.Context) -> Iterator[None]:
    """click's usage errors raised inside become one line on stderr (and exit 2)."""
    try:
        yield
    except OneLineUsageError:
        raise
    except click.UsageError as exc:
        raise OneLineUsageError(exc.format_message(), ctx) from None


class PilotCommand(click.Command):
    """A pilot verb: malformed flags and arguments are one line on stderr and exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with one_line_usage(ctx):
            return super().parse_args(ctx, args)


class TargetAndCommand(PilotCommand):
    """``submit`` and ``run``: ``[OPTIONS] DRONE -- COMMAND...``, split strictly at ``--``.

    Before the first ``--`` come options and at most one word, the DRONE; after it,
    only COMMAND words (options included: they are the command's). click alone
    would merge both sides into one list, so ``submit box-1 --labels cpu -- true``
    ran ``box-1 true``: the split is made here, before click parses the options.
    Without ``--``, the line is read as ssh reads it (options, DRONE, then COMMAND),
    but only while unambiguous: a word after DRONE that starts with ``-`` could be
    meant for dragoon, so it is a usage error asking for ``--``. The COMMAND words
    go to ``ctx.meta["command_words"]`` (``None`` without ``--``).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["command_words"] = args[cut + 1:]
            args = args[:cut]
        else:
            ctx.meta["command_words"] = None
            ctx.allow_interspersed_args = False  # after DRONE, every word is COMMAND's
        return super().parse_args(ctx, args)


def split_target(words: tuple[str, ...], command_words: list[str] | None,
                 with_labels: bool) -> tuple[str | None, list[str]]:
    """The DRONE (``None`` with ``--labels``) and the COMMAND words, by the rule above."""
    example = "e.g. dragoon run gpu-1 -- nproc"
    if command_words is None:  # no `--`: DRONE COMMAND... as ssh reads it
        before, command_words = list(words[:1]), list(words[1:])
        dashed = [w for w in command_words if w.startswith("-")]
        if dashed:
            raise OneLineUsageError(f"{dashed[0]!r} after DRONE is ambiguous: put COMMAND "
                                    f"after `--`, {example}")
    else:
        before = list(words)
    if with_labels and before:
        raise OneLineUsageError(f"DRONE ({before[0]}) and --labels: give one of them "
                                "(COMMAND goes after `--`)")
    if len(before) > 1:
        raise OneLineUsageError(f"one DRONE before `--`, not {len(before)} words "
                                f"({' '.join(before)})")
    if not with_labels and not before:
        raise OneLineUsageError(f"missing DRONE (or --labels), {example}")
    if not command_words:
        raise OneLineUsageError(f"no COMMAND: give it after `--`, {example}")
    return (None if with_labels else before[0]), command_words


@dataclass(frozen=True)
class Connection:
    relay: str | None
    key: str | None
    ca_cert: str | None


def pilot_options(command: F) -> F:
    """``--relay``, ``--key`` and ``--ca-cert``: on every pilot verb, above env and config."""
    command = click.option("--ca-cert", "ca_cert", metavar="FILE", default=None,
                           help="CA bundle that signed the relay's TLS certificate "
                                "[env DRAGOON_CA_CERT].")(command)
    command = click.option("--key", metavar="FILE", default=None,
                           help="SSH private key (or .pub of an agent key) [env DRAGOON_KEY].")(
        command)
    command = click.option("--relay", metavar="URL", default=None,
                           help="Relay URL [env DRAGOON_RELAY].")(command)
    return command


@asynccontextmanager
async def naming(subject: str | None) -> AsyncIterator[None]:
    """Say which task or drone the relay did not find: its 404 only says what kind."""
    from dragoon.cockpit.client import RelayError

    try:
        yield
    except RelayError as exc:
        if exc.code != "not_found" or not subject:
            raise
        raise Fail(f"{exc.detail}: {subject}", X.NOT_FOUND) from None


def tls_verify(ca_cert: str | None) -> Any:
    """httpx's ``verify``: the system CAs, or an SSL context trusting ``ca_cert``."""
    if ca_cert is None:
        return True
    from dragoon.shared.tls import CaCertError, ca_context

    try:
        return ca_context(ca_cert)
    except CaCertError as exc:
        raise Fail(str(exc), X.TLS) from exc


def open_session(conn: Connection, *, allow_expired: bool = False
                 ) -> tuple[RelayClient, StoredSession]:
    """A client for the logged-in session (the relay and key it was made with, unless told),
    and that session; the cockpit opens on an expired one and asks for the TOTP itself."""
    from dragoon.cockpit.client import RelayClient
    from dragoon.cockpit.client.config import SessionStore, resolve
    from dragoon.cockpit.client.identity import signer_for

    settings = resolve(relay=conn.relay, key=conn.key, ca_cert=conn.ca_cert)
    session = SessionStore().load()
    relay = settings.relay or (session.relay if session else None)
    if session is None or relay != session.relay:
        where = f" to {relay}" if relay else ""
        raise Fail(f"not logged in{where}: run `dragoon login`", X.AUTH)
    if session.expired and not allow_expired:
        raise Fail(f"session with {relay} expired: run `dragoon login`", X.AUTH)
    key = settings.key or session.key
    signer = signer_for(key, public_key=session.public_key if key is None else None)
    client = RelayClient(relay, signer=signer, token=session.token,
                         verify=tls_verify(settings.ca_cert or session.ca_cert))
    client.on_resend = _say_resending
    return client, session


def _say_resending(error: Any, delay: float) -> None:
    """The first resend of a submit whose answer was lost, on stderr: no silent wait."""
    from dragoon.cockpit.client._client import RESEND_FIRST

    if delay == RESEND_FIRST:
        print(f"dragoon: the relay's answer was lost ({error.code}); sending the same "
              "signed submit again (it runs once)", file=sys.stderr, flush=True)


def open_client(conn: Connection) -> RelayClient:
    return open_session(conn)[0]


# A 401 bad_session: revoked (a logout elsewhere), expired, or the pilot's key replaced.
SESSION_ENDED = "session ended: log in again with `dragoon login`"

_API_CODES = {
    "bad_session": (SESSION_ENDED, X.AUTH),
    "stale_timestamp": (None, X.AUTH),
    "unknown_key": ("the relay does not accept this key ({detail})", X.KEY),
    "fingerprint_mismatch": ("the session belongs to another key: run `dragoon login` "
                             "with this key", X.KEY),
    "bad_signature": ("the relay rejected the request signature ({detail})", X.KEY),
    "bad_totp": ("login refused: {detail}", X.AUTH),
    "bad_login": ("login refused: the relay does not accept this key ({detail})", X.KEY),
    "bad_challenge": ("login refused: {detail}; try again", X.AUTH),
    "locked_out": ("too many failed logins, locked out for a while ({detail})", X.AUTH),
    "not_found": (None, X.NOT_FOUND),
    "ambiguous": (None, X.USAGE),
    "unreachable": (None, X.UNREACHABLE),
    "timeout": (None, X.UNREACHABLE),
    "protocol": (None, X.UNREACHABLE),
    "tls": (None, X.TLS),
    "file_exists": (None, X.LOCAL_FILE),
    "sha256_mismatch": (None, X.LOCAL_FILE),
    "fetch_failed": (None, X.NOT_FOUND),
}


def explain(error: RelayError) -> tuple[str, int]:
    """One line and an exit code for an API failure."""
    template, code = _API_CODES.get(error.code, (None, X.FAILURE))
    if template is None:
        return error.detail or error.code, code
    return template.format(detail=error.detail), code


def fail(message: str, code: int) -> NoReturn:
    """The one way a verb ends in failure: one line on stderr, as safe text, and ``code``.

    The line may carry what the relay said (its ``detail``), a drone's words or a
    path: it goes through the rule of cockpit/safe_text.py like every other view.
    """
    click.echo(f"dragoon: {clean(message)}", err=True)
    sys.exit(code)


def run_async(make: Callable[[], Coroutine[Any, Any, T]], *,
              own_failure: int | None = None) -> T:
    """Run one verb's coroutine; every error becomes one line on stderr and an exit code.

    ``own_failure`` replaces the code of every failure of dragoon itself: ``run``
    passes 255 so that its other exit codes are always the task's.
    """
    import asyncio

    from dragoon.cockpit.client import RelayError
    from dragoon.cockpit.client.config import PilotConfigError
    from dragoon.cockpit.client.enrollments import TrustMismatch
    from dragoon.shared.e2e import E2EError
    from dragoon.shared.errors import AgentError, KeyLoadError

    def code_of(code: int) -> int:
        return own_failure if own_failure is not None else code

    def run() -> T:
        try:
            return asyncio.run(make())
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    try:
        return run()
    except Fail as exc:
        fail(exc.message, code_of(exc.code))
    except RelayError as exc:
        message, code = explain(exc)
        fail(message, code_of(code))
    except PilotConfigError as exc:
        fail(str(exc), code_of(X.USAGE))
    except E2EError as exc:  # the relay altered what the drone sealed: dragoon's own failure
        fail(str(exc), code_of(X.TAMPERED))
    except TrustMismatch as exc:  # the relay's word against this pilot's own roots
        fail(str(exc), code_of(X.FAILURE))
    except (KeyLoadError, AgentError) as exc:
        fail(f"key: {exc}", code_of(X.KEY))
    except KeyboardInterrupt:
        fail("interrupted", X.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`dragoon logs t | head`): that is not our failure.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(X.OK)
    except OSError as exc:
        fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}", code_of(X.FAILURE))
    except Exception as exc:
        if os.environ.get("DRAGOON_DEBUG"):
            raise
        fail(f"unexpected error ({type(exc).__name__}: {exc}); DRAGOON_DEBUG=1 shows where",
             code_of(X.FAILURE))


# -- flag types ------------------------------------------------------------------------------
# Thin wrappers over shared/spec.py, the parsers the cockpit's dialogs and the relay use too:
# a refusal is a usage error (exit 2) carrying the shared reason, before any request is sent.
# shared is imported inside convert, so `--help` never loads it (or the crypto it brings).


class _SharedRule(click.ParamType):
    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # already parsed: a default, or a value click converts twice
        from dragoon.shared.spec import SpecError

        try:
            return self.parse(value)
        except SpecError as exc:
            self.fail(exc.problem, param, ctx)


class Duration(_SharedRule):
    """``90``, ``90s``, ``15m``, ``3h``, ``1d``, ``1h30m``: whole seconds, in the field's range.

    ``field`` is the rule's name in shared/spec.py: ``timeout`` and ``ttl`` refuse
    zero, ``grace`` allows it; each has its own ceiling.
    """

    name = "DURATION"

    def __init__(self, field: DurationField = "timeout") -> None:
        self.field: DurationField = field

    def parse(self, text: str) -> int:
        from dragoon.shared.spec import parse_duration

        return parse_duration(text, field=self.field)


class Labels(_SharedRule):
    """``a,b`` or ``a, b``: labels, duplicates dropped; ``at_least_one`` for a task's target."""

    name = "LABELS"

    def __init__(self, *, at_least_one: bool = False) -> None:
        self.at_least_one = at_least_one

    def parse(self, text: str) -> list[str]:
        from dragoon.shared.spec import parse_labels

        return parse_labels(text, at_least_one=self.at_least_one)


class DroneName(_SharedRule):
    """A drone's name: the rule the relay holds drone names to."""

    name = "NAME"

    def parse(self, text: str) -> str:
        from dragoon.shared.spec import parse_drone_name

        return parse_drone_name(text)


class TaskArg(_SharedRule):
    """A task id, or a prefix of one (``t-4jg``, ``4jg``): checked here, resolved by
    ``RelayClient.resolve_task`` once the verb has a client."""

    name = "TASK"

    def parse(self, text: str) -> str:
        from dragoon.shared.spec import parse_task_ref

        return parse_task_ref(text).text


class EnvPair(_SharedRule):
    """``K=V`` with a shell-valid name."""

    name = "K=V"

    def parse(self, text: str) -> tuple[str, str]:
        from dragoon.shared.spec import parse_env_entry

        return parse_env_entry(text)
