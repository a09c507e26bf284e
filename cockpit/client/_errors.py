"""The one exception type of the API client.

Whatever went wrong between the pilot and the relay — the relay refused the
request, or never answered, or a download did not hash right — surfaces as an
``RelayError`` with a stable ``code``, so the CLI and the cockpit map codes to
messages and never parse exception text.
"""

from __future__ import annotations

from typing import Any

# Codes the client itself uses when the relay gave no answer of its own.
UNREACHABLE = "unreachable"
TLS = "tls"
TIMEOUT = "timeout"
PROTOCOL = "protocol"
SHA256_MISMATCH = "sha256_mismatch"
FILE_EXISTS = "file_exists"
FETCH_FAILED = "fetch_failed"
# A task prefix the pilot typed: no task has it (the relay's own 404 code), or several do.
NOT_FOUND = "not_found"
AMBIGUOUS = "ambiguous"
# The relay's code for a session that is gone (revoked, expired, the key replaced).
BAD_SESSION = "bad_session"


class RelayError(Exception):
    """A request to the relay failed.

    ``status`` is the HTTP status when the relay answered, ``None`` when it did
    not (connection refused, TLS failure, time-out); ``code`` is the relay's
    ``error`` field, or one of the client's codes above.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.body = body or {}

    def __str__(self) -> str:
        return self.detail

    def __repr__(self) -> str:
        return f"RelayError(code={self.code!r}, status={self.status!r}, detail={self.detail!r})"

    @property
    def session_ended(self) -> bool:
        """The relay no longer knows this session: only a new login helps, never a retry."""
        return self.code == BAD_SESSION

    @property
    def retryable(self) -> bool:
        """Worth trying again later: the relay is restarting, or the network dropped.

        A 500 counts too: a relay that is shutting down may fail the requests it
        was holding. ``Backoff`` gives up on a run of them sooner than on the
        others, so a relay bug does not look like a hang.
        """
        if self.status is None:
            return self.code in (UNREACHABLE, TIMEOUT, PROTOCOL)
        return self.status in (500, 502, 503, 504)
