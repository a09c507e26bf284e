"""Not a router: the one answer for a stored blob (an artifact, a fetched file), with Range.

``routes/tasks.py`` (artifacts) and ``routes/fetches.py`` (fetched files) both
answer with it; the store (files or PostgreSQL, relay/stores.py) makes the response.
"""

from __future__ import annotations

from typing import Protocol

from fastapi.responses import Response


class ServesBlobs(Protocol):
    def response(self, sha256: str, filename: str) -> Response: ...


def blob_response(store: ServesBlobs, filename: str, sha256: str) -> Response:
    """The blob as a download that answers Range requests with 206; 404 when it is gone."""
    return store.response(sha256, filename)
