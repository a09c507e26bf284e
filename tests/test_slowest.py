"""tests/slowest.py adds a report's test times up by folder and by file, slowest first."""

from __future__ import annotations

from pathlib import Path

from tests.slowest import report

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.relay.test_a" name="test_one" time="2.5"/>
<testcase classname="tests.relay.test_a.TestGroup" name="test_two" time="1.5"/>
<testcase classname="tests.cli.test_b" name="test_three" time="7.0"/>
<testcase classname="tests.test_top" name="test_four" time="0.25"/>
</testsuite></testsuites>
"""


def test_times_add_up_by_folder_and_file_with_the_slowest_first(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text(REPORT)
    lines = report(path, top=2).splitlines()
    assert lines[0] == "11 test-seconds over 4 tests"
    folders = lines[lines.index("by folder:") + 1:lines.index("by folder:") + 4]
    assert [line.split() for line in folders] == [
        ["7", "s", "tests.cli"], ["4", "s", "tests.relay"], ["0", "s", "tests.test_top"]]
    files = lines[lines.index("the 2 slowest files:") + 1:][:2]
    assert files[0].split() == ["7.0", "s", "1", "tests", "tests.cli.test_b"]
    assert files[1].split() == ["4.0", "s", "2", "tests", "tests.relay.test_a"]  # the class's too
    slowest = lines[lines.index("the 2 slowest tests:") + 1:]
    assert [line.split()[-1] for line in slowest] == [
        "tests.cli.test_b::test_three", "tests.relay.test_a::test_one"]
