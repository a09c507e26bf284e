"""Trusting a relay's private CA, and telling a TLS failure from other network failures.

The pilot (cockpit/client) and the drone (drone/client.py) both talk HTTPS to
the relay through httpx and both say ``TLS failure`` when the handshake or the
certificate check fails, so the pilot gets exit 6 and the drone's log names
the cause rather than a vague "unreachable". The rule for what counts as a TLS
failure lives here, once. Standard library only: httpx wraps ``ssl`` errors,
and the chain of causes is all we read.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from dragoon.shared.errors import DragoonError

# Words the ssl module and httpx put in the text of a handshake or verification failure
# when the ssl.SSLError itself is not in the chain (anyio re-raises some as plain OSError).
_MARKS = ("SSL", "CERTIFICATE", "certificate", "TLS")


class CaCertError(DragoonError):
    """A CA bundle file cannot be used: missing, unreadable, or not PEM certificates."""

    code = "bad_ca_cert"


def ca_context(path: str | Path) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in ``path`` (and only those).

    Only ``path``: a relay behind a private CA is checked against that CA, not
    against the system store as well, and no environment variable
    (``SSL_CERT_FILE`` …) widens or narrows what is trusted.
    """
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:  # an OSError too: caught first
        raise CaCertError(f"cannot use CA certificate {path}: not PEM certificates "
                          f"({exc.reason or exc})") from exc
    except FileNotFoundError as exc:
        raise CaCertError(f"cannot use CA certificate {path}: no such file") from exc
    except OSError as exc:
        raise CaCertError(f"cannot use CA certificate {path}: {exc.strerror or exc}") from exc


def plain_http_context() -> ssl.SSLContext:
    """The TLS context of a client whose relay URL is ``http://``: it never does TLS.

    httpx builds a context per transport (one more per proxy variable) when
    given ``verify=True``, and loading the CA bundle costs ~2 MiB and ~10 ms a
    time. A plain-HTTP client gets this one instead: nothing loaded, and still
    verifying (``CERT_REQUIRED``, host names checked), so that any TLS it were
    ever asked to do would fail closed rather than trust anyone.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a failed request failed in TLS (handshake, certificate, protocol)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            return True
        if any(mark in str(link) for mark in _MARKS):
            return True
        link = link.__cause__ or link.__context__
    return False
