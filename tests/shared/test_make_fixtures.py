"""fixtures/make_fixtures.py never regenerates the vectors by accident."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "make_fixtures.py"


def test_make_fixtures_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    existing = tmp_path / "signatures.json"
    existing.write_text("[]\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "refusing to overwrite signatures.json" in done.stderr
    assert "--force" in done.stderr
    assert existing.read_text() == "[]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signatures.json"]


def test_committed_fixtures_are_all_present() -> None:
    names = {p.name for p in SCRIPT.parent.glob("*.json")}
    assert names >= {"fingerprints.json", "signatures.json", "canonical_requests.json",
                     "canonical_tasks.json"}


def test_fixtures_hold_no_private_key() -> None:
    for path in SCRIPT.parent.glob("*.json"):
        assert "PRIVATE KEY" not in path.read_text(encoding="utf-8"), path
