"""No file the project ships keeps a merge's conflict markers (docs/storage.md once held a
whole second copy of itself between them, past every other check)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_tracked_file_holds_conflict_markers() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=False)
    if listed.returncode != 0:  # not a git checkout (an sdist): nothing to list
        return
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.suffix in (".bundle", ".svg", ".png"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if line.startswith(MARKERS) or line == "======="]
    assert not found, found
