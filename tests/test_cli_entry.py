"""The ``dragoon`` entry point: every verb of CLI.md, and no heavy import behind the light ones.

Drones run on small boxes, so ``dragoon drone …`` must import neither FastAPI
nor Textual, and ``dragoon relay …`` not Textual (DESIGN.md). Each check runs
the real entry point in a fresh interpreter and reads its ``sys.modules`` at
exit, so an import added anywhere on the path (a part's ``__init__``, shared/,
the entry point itself) is caught.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dragoon import cli

ROOT = Path(__file__).resolve().parents[1]

# The verbs of CLI.md, in its order.
CLI_VERBS = ("relay", "drone", "login", "logout", "drones", "enroll", "submit", "run", "tasks",
             "task", "logs", "cancel", "artifacts", "artifact", "fetch", "inbox", "cockpit",
             "demo", "notify")
SUBCOMMANDS = {"relay": ("init", "add-operator", "enroll", "serve"), "drone": ("join", "run")}

# Runs the entry point as the console script would, then reports what got imported.
_PROBE = """
import json, sys
argv, report = sys.argv[1:-1], sys.argv[-1]
sys.argv = ["dragoon", *argv]
code = 0
try:
    from dragoon.cli import main
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    with open(report, "w") as out:
        json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def _run(tmp_path: Path, *argv: str) -> tuple[int, str, set[str]]:
    """Run ``dragoon ARGV`` in a fresh interpreter; its exit code, output and imported modules."""
    report = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv, str(report)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)
    data = json.loads(report.read_text())
    return data["code"], done.stdout + done.stderr, set(data["modules"])


def _top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_help_lists_every_verb_of_cli_md(tmp_path: Path) -> None:
    code, output, _modules = _run(tmp_path, "--help")
    assert code == 0, output
    listed = {line.split()[0] for line in output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed >= set(CLI_VERBS), set(CLI_VERBS) - listed


@pytest.mark.parametrize("argv", [
    ("--help",), ("drone", "--help"), ("drone", "join", "--help"), ("drone", "run", "--help"),
    ("notify", "--help"),
], ids=" ".join)
def test_light_commands_import_neither_fastapi_nor_textual(tmp_path: Path, argv: tuple[str, ...]
                                                          ) -> None:
    code, output, modules = _run(tmp_path, *argv)
    assert code in (0, 2), output  # 2: a verb that is still a stub says "not built yet"
    assert {"click", "dragoon.cli"} <= modules  # the probe does see what was imported
    verb = cli.VERBS.get(argv[0])
    if verb is not None and verb.target is not None:
        assert verb.target.partition(":")[0] in modules  # the real command ran, not a stub
    heavy = _top_level(modules) & {"fastapi", "starlette", "uvicorn", "textual"}
    assert not heavy, f"dragoon {' '.join(argv)} imported {sorted(heavy)}"


@pytest.mark.parametrize("argv", [("relay", "--help"), ("relay", "serve", "--help")],
                         ids=" ".join)
def test_relay_commands_do_not_import_textual(tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, output, modules = _run(tmp_path, *argv)
    assert code in (0, 2), output
    assert "textual" not in _top_level(modules)


@pytest.mark.parametrize("group", sorted(SUBCOMMANDS))
def test_host_groups_list_their_subcommands_once_built(tmp_path: Path, group: str) -> None:
    code, output, _modules = _run(tmp_path, group, "--help")
    assert code == 0, output
    if cli.VERBS[group].target is None:
        assert "not built yet" in output
        return
    for name in SUBCOMMANDS[group]:
        assert name in output, f"dragoon {group} --help does not list {name}"


def test_a_stub_verb_exits_2_saying_not_built_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.VERBS, "future", cli.Verb(None, "Something to come.", 99))
    result = CliRunner().invoke(cli.main, ["future", "--anything", "x"])
    assert result.exit_code == 2
    assert "dragoon future: not built yet (issue 99)" in result.output
    help_text = CliRunner().invoke(cli.main, ["--help"]).output
    assert "Something to come. (not built yet)" in help_text


def test_unknown_verb_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.main, ["no-such-verb"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_every_stub_in_the_table_exits_2(tmp_path: Path) -> None:
    # Whatever is still a stub today behaves like one through the real entry point.
    for name, verb in cli.VERBS.items():
        if verb.target is None:
            code, output, _modules = _run(tmp_path, name)
            assert code == 2 and "not built yet" in output, (name, output)
