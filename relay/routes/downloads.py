"""Not a router: the one answer for a stored blob (an artifact, a fetched file), with Range.

``routes/tasks.py`` (artifacts) and ``routes/fetches.py`` (fetched files) both
answer with it.
"""

from __future__ import annotations

from pathlib import Path

from dragoon.relay.errors import ApiError
from fastapi.responses import FileResponse


def blob_response(blob_path: Path, filename: str, sha256: str) -> FileResponse:
    """Starlette's FileResponse streams in chunks and answers Range requests with 206."""
    if not blob_path.exists():
        raise ApiError(404, "not_found", "the blob is missing from the relay's store")
    return FileResponse(
        blob_path, media_type="application/octet-stream", filename=filename,
        headers={"X-Dragoon-Sha256": sha256},
    )
