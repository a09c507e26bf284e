"""Blobs stored by content hash (``blobs/ab/abcdef…``): artifacts and fetched files.

An upload streams into a temporary file while it is hashed and counted; only
a body whose size and SHA-256 match what the drone declared (and signed, see
relay/auth.py), within the cap, is fsynced and renamed into place. Any other
body, or one cut short, leaves no temporary file behind. Storing the same
content twice is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from dragoon.relay.errors import ApiError
from fastapi.responses import FileResponse, Response

SHA256: Final = re.compile(r"[0-9a-f]{64}")


def check_artifact_path(path: str) -> str:
    """A relative, normalised path with no ``..``: what the drone found under the task's cwd."""
    parts = path.split("/")
    if (not path or len(path) > 1024 or "\x00" in path or "\\" in path or path.startswith("/")
            or any(part in ("", ".", "..") for part in parts)):
        raise ApiError(400, "bad_path", "an artifact path is relative, without '.', '..' or '//'")
    return path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise ApiError(422, "invalid", "sha256 must be 64 lowercase hex digits")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def check_declared(self, *, size: int, cap: int, content_length: str | None) -> None:
        check_declared(size=size, cap=cap, content_length=content_length)

    def response(self, sha256: str, filename: str) -> Response:
        """The stored blob as a download; Starlette's FileResponse streams it in chunks and
        answers Range requests with 206."""
        path = self.path(sha256)
        if not path.exists():
            raise ApiError(404, "not_found", "the blob is missing from the relay's store")
        return FileResponse(path, media_type="application/octet-stream", filename=filename,
                            headers={"X-Dragoon-Sha256": sha256})

    def close(self) -> None:
        """Nothing held open between requests (the PostgreSQL store closes its pool)."""

    async def receive(
        self, chunks: AsyncIterator[bytes], *, sha256: str, size: int, cap: int
    ) -> Path:
        """Stream into a temporary file that holds exactly the declared bytes, or raise.

        The temporary file is removed on every failure: a hash or length other
        than declared, more than the cap, or the drone hanging up midway.
        """
        if size > cap:
            raise ApiError(413, "too_large", f"a file may be at most {cap} bytes")
        tmp = self.tmp / secrets.token_hex(16)
        digest = hashlib.sha256()
        received = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > size or received > cap:
                    raise ApiError(413, "too_large", f"the body is larger than the declared {size}")
                digest.update(chunk)
                _write_all(fd, chunk)
            if received != size:
                raise ApiError(400, "size_mismatch", f"declared {size} bytes, received {received}")
            if digest.hexdigest() != sha256:
                raise ApiError(400, "hash_mismatch",
                               f"the body hashes to {digest.hexdigest()}, not {sha256}")
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            self.discard(tmp)
            raise
        os.close(fd)
        return tmp

    def keep(self, tmp: Path, sha256: str) -> None:
        """Move a checked upload into place (or drop it when that content is already stored)."""
        final = self.path(sha256)
        if final.exists():
            # Touched: retention never deletes a blob touched within its grace, so content an
            # old task held and this new upload is about to refer to stays put.
            with contextlib.suppress(FileNotFoundError):
                os.utime(final)
                tmp.unlink()
                return
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self, tmp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_declared(*, size: int, cap: int, content_length: str | None) -> None:
    """Refuse an upload by what its head says, before a byte of its body is read."""
    if size > cap:
        raise ApiError(413, "too_large", f"a file may be at most {cap} bytes")
    if content_length is None or not content_length.isdigit():
        return  # chunked: counted as it streams
    length = int(content_length)
    if length > size:
        raise ApiError(413, "too_large", f"the body is larger than the declared {size}")
    if length < size:
        raise ApiError(400, "size_mismatch", f"declared {size} bytes, sending {length}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
