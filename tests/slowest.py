"""Where a test run's time went, from its JUnit XML report: by folder, by file, by test.

The suite has a budget (15 minutes on 2 cores, docs/testing.md). With ``--dist
loadfile`` each worker takes whole files, so the run ends about when the workers have
spent the sum of the test times between them: that sum, and the files and tests that
make most of it, are what to look at when the suite gets slow.

    DRAGOON_TEST_REPORTS=reports bash tests/run.sh
    python tests/slowest.py reports/sqlite.xml [--top N]
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def module_of(classname: str) -> str:
    """``tests.relay.test_x`` of ``tests.relay.test_x`` or ``tests.relay.test_x.SomeClass``."""
    return ".".join(part for part in classname.split(".") if not part[:1].isupper())


def report(path: Path, top: int) -> str:
    cases = list(ET.parse(path).getroot().iter("testcase"))  # noqa: S314 - pytest wrote it
    by_file: Counter[str] = Counter()
    by_folder: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    tests: list[tuple[float, str]] = []
    for case in cases:
        seconds = float(case.get("time") or 0)
        module = module_of(case.get("classname", ""))
        by_file[module] += seconds
        by_folder[".".join(module.split(".")[:2])] += seconds
        counts[module] += 1
        tests.append((seconds, f"{module}::{case.get('name')}"))
    lines = [f"{sum(by_file.values()):.0f} test-seconds over {len(cases)} tests", "",
             "by folder:"]
    lines += [f"{seconds:8.0f} s  {folder}" for folder, seconds in by_folder.most_common()]
    lines += ["", f"the {top} slowest files:"]
    lines += [f"{seconds:8.1f} s  {counts[module]:4d} tests  {module}"
              for module, seconds in by_file.most_common(top)]
    lines += ["", f"the {top} slowest tests:"]
    lines += [f"{seconds:8.1f} s  {name}" for seconds, name in sorted(tests, reverse=True)[:top]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a JUnit XML report (pytest --junitxml)")
    parser.add_argument("--top", type=int, default=20, help="how many files and tests")
    args = parser.parse_args(argv)
    print(report(args.report, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
