"""Artifacts: after a task exits, the files matching its spec's globs go to the relay.

Patterns are relative to the task's work dir; ``**`` matches any number of
folders. Nothing outside the work dir is ever sent: a pattern with ``..`` or
an absolute path is refused, and so is a match that is (or sits behind) a
symlink leading out of the work dir. Every refusal is reported with its
reason. Each file is sealed once into a spool in the task dir (shared/sealed_files.py)
and the spool is streamed from disk with its SHA-256 computed ahead, so the relay can
check what it stored; the total stays within a size cap.

Only regular files are artifacts. A match that is a FIFO, socket or device
(or a symlink to one) is skipped with ``not a regular file: KIND``, reported
to the pilot like every other refusal, and the task's outcome is untouched:
its exit status says how it ran, artifacts are what it left behind. The file
is opened again at upload without following it blindly (``open_match``), so
one swapped for a FIFO or a symlink out of the work dir after the selection
is refused then; all reading happens off the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from dragoon.drone import safefile

READ_BLOCK: Final = 256 * 1024
MAX_MATCHES: Final = 10_000


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob over ``/``-separated relative paths: ``*``, ``?``, ``[...]``, and ``**``."""
    out: list[str] = []
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        piece = ""
        i = 0
        while i < len(part):
            ch = part[i]
            if ch == "*":
                piece += "[^/]*"
            elif ch == "?":
                piece += "[^/]"
            elif ch == "[":
                end = part.find("]", i + 1)
                if end < 0:
                    piece += re.escape(ch)
                else:
                    body = part[i + 1 : end].replace("\\", "\\\\")
                    if body.startswith("!"):
                        body = "^" + body[1:]
                    piece += f"[{body}]"
                    i = end
            else:
                piece += re.escape(ch)
            i += 1
        out.append(piece + ("" if last else "/"))
    return re.compile("".join(out))


def pattern_problem(pattern: str) -> str | None:
    """Why a pattern is refused outright, or None."""
    if not pattern.strip():
        return "empty pattern"
    if pattern.startswith("/") or pattern.startswith("~"):
        return "absolute paths are refused; patterns are relative to the work dir"
    if ".." in PurePosixPath(pattern).parts:
        return "'..' is refused; patterns stay inside the work dir"
    return None


class ArtifactRefused(Exception):
    """A selected artifact cannot be uploaded (any more); the text is the reason."""


@dataclass
class Match:
    path: str  # relative, posix
    real: Path
    size: int


@dataclass
class ArtifactSelection:
    matches: list[Match] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path or pattern, reason)
    unmatched: list[str] = field(default_factory=list)  # patterns no file matched


def _inside(real: Path, root: Path) -> bool:
    return real == root or root in real.parents


def select(work_dir: Path, patterns: list[str], *, max_total: int) -> ArtifactSelection:
    """The files to upload and the refusals, deterministic (sorted) and capped."""
    selection = ArtifactSelection()
    regexes: list[re.Pattern[str]] = []
    wanted: list[tuple[str, re.Pattern[str]]] = []
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            selection.refused.append((pattern, problem))
        else:
            regex = pattern_regex(pattern.strip().removeprefix("./"))
            regexes.append(regex)
            wanted.append((pattern, regex))
    if not regexes or not work_dir.is_dir():
        selection.unmatched = [pattern for pattern, _ in wanted]
        return selection
    root = work_dir.resolve()
    candidates: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        names = list(filenames)
        # A symlink to a folder is listed in dirnames; it is a candidate, not descended.
        names += [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        candidates.extend(prefix + name for name in names)
        if len(candidates) > MAX_MATCHES * 10:
            break
    # A pattern that matched no file at all (refused matches count as matched: each has its
    # own reason) is said to the pilot: a typo in --artifact must not look like success.
    selection.unmatched = [pattern for pattern, regex in wanted
                           if not any(regex.fullmatch(rel) for rel in candidates)]
    total = 0
    for rel in sorted(candidates):
        if not any(rx.fullmatch(rel) for rx in regexes):
            continue
        full = root / rel
        try:
            real = full.resolve()
        except RuntimeError:  # a symlink loop (Python before 3.13)
            selection.refused.append((rel, "symlink loop"))
            continue
        except OSError as exc:
            selection.refused.append((rel, exc.strerror or str(exc)))
            continue
        if not _inside(real, root):
            selection.refused.append((rel, "symlink leads out of the work dir"))
            continue
        try:
            found = real.stat()  # a stat, never an open: a FIFO here cannot make it wait
        except OSError as exc:
            selection.refused.append((rel, "symlink loop" if exc.errno == errno.ELOOP
                                      else "dangling symlink or vanished file"))
            continue
        if not stat.S_ISREG(found.st_mode):
            selection.refused.append((rel, f"not a regular file: {safefile.kind(found.st_mode)}"))
            continue
        size = found.st_size
        if total + size > max_total:
            selection.refused.append((rel, f"over the artifact size cap of {max_total} bytes"))
            continue
        if len(selection.matches) >= MAX_MATCHES:
            selection.refused.append((rel, f"more than {MAX_MATCHES} artifacts"))
            continue
        total += size
        selection.matches.append(Match(rel, real, size))
    return selection


def open_match(work_dir: Path, real: Path) -> tuple[int, int]:
    """An fd on a selected artifact and its size, checked again as it is opened.

    Between selection and upload (a relay outage, a drone restart) the file
    may have been replaced: it must still be a regular file inside the work
    dir, and it is opened without waiting whatever it became.
    """
    root = work_dir.resolve()

    def within(found: Path) -> None:
        if not _inside(found, root):
            raise ArtifactRefused("symlink leads out of the work dir")

    try:
        fd, found = safefile.open_regular(real, follow=True, check_path=within)
    except FileNotFoundError as exc:
        raise ArtifactRefused("vanished before its upload") from exc
    except OSError as exc:  # NotRegular included
        raise ArtifactRefused(str(exc) if isinstance(exc, safefile.NotRegular)
                              else exc.strerror or str(exc)) from exc
    return fd, found.st_size


def fd_sha256(fd: int, size: int) -> tuple[str, int]:
    """SHA-256 and length of the first ``size`` bytes of an open file, read by offset."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        block = os.pread(fd, min(1 << 20, size - offset), offset)
        if not block:
            break
        digest.update(block)
        offset += len(block)
    return digest.hexdigest(), offset


async def stream_fd(fd: int, size: int) -> AsyncIterator[bytes]:
    """The first ``size`` bytes in blocks: an upload never holds a file in memory."""
    offset = 0
    while offset < size:
        block = await safefile.in_thread(os.pread, fd, min(READ_BLOCK, size - offset), offset)
        if not block:
            return
        offset += len(block)
        yield block
