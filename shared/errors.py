"""Errors raised by the protocol layer.

Every error carries a stable machine-readable ``code`` (the codes of
PROTOCOL.md where one applies) and a one-line human ``detail``, so the edges
(relay responses, CLI messages) never need to parse exception text.
"""

from __future__ import annotations


class DragoonError(Exception):
    """Base of every error the protocol layer raises on purpose."""

    code: str = "error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.detail


class WireFormatError(DragoonError):
    """A binary SSH structure is truncated or malformed."""

    code = "malformed"


class KeyLoadError(DragoonError):
    """A key file or key line could not be used; the message names the file and why."""

    code = "bad_key"

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class SignatureError(DragoonError):
    """An SSHSIG blob did not verify, or could not be parsed."""

    code = "bad_signature"


class AgentError(DragoonError):
    """The ssh-agent is absent, refused, or answered something unexpected."""

    code = "agent_error"


class TokenFormatError(DragoonError):
    """An enrollment token is not one this version can read."""

    code = "bad_token"
