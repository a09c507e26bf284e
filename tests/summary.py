"""One summary line for tests/run.sh's pytest runs, from their JUnit XML reports.

tests/run.sh runs the whole suite on SQLite and tests/relay a second time on
PostgreSQL, as two pytest processes; each prints its own ``N passed`` line, and CI
reads the last line of the output. This prints that last line for both together, in
pytest's words (``N passed, M failed, K skipped, E errors``, failed always shown), and
exits non-zero when any run failed, errored, or left no report (it crashed or was
interrupted before it wrote one), so the counts cannot hide a run that never finished.

    python tests/summary.py LABEL=REPORT.xml [LABEL=REPORT.xml ...]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0

    def add(self, other: Counts) -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors += other.errors

    def line(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        if self.errors:
            text += f", {self.errors} errors"
        return text


def read_report(path: Path) -> Counts:
    """The counts of one pytest --junitxml report (a testsuites root or one testsuite)."""
    root = ET.parse(path).getroot()  # noqa: S314 - pytest wrote it, in this run
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = Counts()
    for suite in suites:
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0))
        errors = int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts.add(Counts(passed=tests - failed - errors - skipped, failed=failed,
                          skipped=skipped, errors=errors))
    return counts


def main(argv: list[str]) -> int:
    total = Counts()
    parts: list[str] = []
    ok = True
    for arg in argv:
        label, _, report = arg.partition("=")
        path = Path(report)
        if not path.is_file() or path.stat().st_size == 0:
            parts.append(f"{label}: no report (the run did not finish)")
            ok = False
            continue
        try:
            counts = read_report(path)
        except ET.ParseError as exc:
            parts.append(f"{label}: unreadable report ({exc})")
            ok = False
            continue
        ok = ok and not counts.failed and not counts.errors
        total.add(counts)
        parts.append(f"{label}: {counts.line()}")
    print("tests/run.sh: " + "; ".join(parts) + "; all runs together:")
    print(f"total: {total.line()}")  # CI reads this last line: one word, a colon, the counts
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
