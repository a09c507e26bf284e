"""Fetch: a pilot asks for one file; it is served only from under the drone's fetch roots.

The check is made on the real path (symlinks resolved) and again on the file
actually opened (through /proc/self/fd), so a symlink swapped in between the
check and the open cannot lead outside the roots. Only a regular file is
served: a FIFO, device, socket or folder (or a symlink to one) is refused
with its kind, found without opening it (``drone/safefile.py``), so a FIFO
with no writer cannot make the drone wait.

The path came sealed (shared/sealed_files.py ``open_fetch``), and a refusal goes back
sealed too (``seal_error``): the relay reads neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dragoon.drone import safefile


class FetchRefused(Exception):
    """The path may not be served; the text is the reason the pilot sees."""


@dataclass
class Opened:
    fd: int
    real: Path
    size: int


def _inside(real: Path, roots: list[Path]) -> bool:
    return any(real == root or root in real.parents for root in roots)


def resolve_roots(roots: list[str], default: Path) -> list[Path]:
    chosen = [Path(r).expanduser() for r in roots] if roots else [default]
    return [root.resolve() for root in chosen]


def open_for_fetch(path: str, roots: list[Path], *, max_bytes: int) -> Opened:
    """An open fd on the requested file, or FetchRefused with the reason."""
    if not path or "\x00" in path:
        raise FetchRefused("empty or invalid path")
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        real = candidate.resolve()
    except RuntimeError as exc:  # a symlink loop (Python before 3.13)
        raise FetchRefused("symlink loop") from exc
    except OSError as exc:
        raise FetchRefused(f"{exc.strerror or exc}") from exc
    if not _inside(real, roots):
        raise FetchRefused(f"outside the fetch roots ({', '.join(map(str, roots))})")

    def within_roots(opened: Path) -> None:
        if not _inside(opened, roots):
            raise FetchRefused("outside the fetch roots")

    try:
        fd, st = safefile.open_regular(real, check_path=within_roots)
    except FileNotFoundError as exc:
        raise FetchRefused("no such file") from exc
    except safefile.NotRegular as exc:
        raise FetchRefused(str(exc)) from exc
    except OSError as exc:
        raise FetchRefused(f"{exc.strerror or exc}") from exc
    opened = safefile.fd_path(fd) or real
    if st.st_size > max_bytes:
        os.close(fd)
        raise FetchRefused(f"{st.st_size} bytes, over the cap of {max_bytes}")
    return Opened(fd, opened, st.st_size)
