"""The ``dragoon`` entry point: every verb of CLI.md, and no heavy import behind the light ones.

Drones run on small boxes, so ``dragoon drone …`` must import neither FastAPI
nor Textual, and ``dragoon relay …`` not Textual (DESIGN.md). Each check runs
the real entry point in a fresh interpreter and reads its ``sys.modules`` at
exit, so an import added anywhere on the path (a part's ``__init__``, shared/,
the entry point itself) is caught.

A drone box installs no extras, so a verb whose extra is missing must say which
to install in one line; the probe hides modules (``PROBE_HIDE``) the way a lean
install lacks them. tests/test_drone_only_install.py checks the same on a real
lean install.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dragoon import cli

ROOT = Path(__file__).resolve().parents[1]

# The verbs of CLI.md, in its order.
CLI_VERBS = ("relay", "drone", "login", "logout", "drones", "enroll", "submit", "run", "tasks",
             "task", "logs", "cancel", "artifacts", "artifact", "fetch", "inbox", "cockpit",
             "demo", "notify", "sweep", "jobs", "job")
SUBCOMMANDS = {"relay": ("init", "add-operator", "enroll", "serve"), "drone": ("join", "run")}

# Runs the entry point as the console script would, then reports what got imported.
_PROBE = """
import json, os, sys
argv, report = sys.argv[1:-1], sys.argv[-1]
for hidden in filter(None, os.environ.get("PROBE_HIDE", "").split(",")):
    sys.modules[hidden] = None  # as if not installed: import fails, find_spec finds nothing
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


def _run(tmp_path: Path, *argv: str, hide: tuple[str, ...] = ()) -> tuple[int, str, set[str]]:
    """Run ``dragoon ARGV`` in a fresh interpreter; its exit code, output and imported modules.
    ``hide``: top-level modules that act as if they were not installed."""
    report = tmp_path / "modules.json"
    env = {**os.environ, "PROBE_HIDE": ",".join(hide)}
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv, str(report)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60, env=env)
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
    assert code == 0, output
    assert {"click", "dragoon.cli"} <= modules  # the probe does see what was imported
    verb = cli.VERBS.get(argv[0])
    if verb is not None:
        assert verb.target.partition(":")[0] in modules  # the real command ran
    heavy = _top_level(modules) & {"fastapi", "starlette", "uvicorn", "textual"}
    assert not heavy, f"dragoon {' '.join(argv)} imported {sorted(heavy)}"


@pytest.mark.parametrize("argv", [("relay", "--help"), ("relay", "serve", "--help")],
                         ids=" ".join)
def test_relay_commands_do_not_import_textual(tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, output, modules = _run(tmp_path, *argv)
    assert code == 0, output
    assert "dragoon.relay.cli" in modules
    assert "textual" not in _top_level(modules)


@pytest.mark.parametrize("group", sorted(SUBCOMMANDS))
def test_host_groups_list_their_subcommands(tmp_path: Path, group: str) -> None:
    code, output, _modules = _run(tmp_path, group, "--help")
    assert code == 0, output
    for name in SUBCOMMANDS[group]:
        assert name in output, f"dragoon {group} --help does not list {name}"


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_every_verb_in_the_table_imports_and_has_help(name: str) -> None:
    module_name, _, attribute = cli.VERBS[name].target.partition(":")
    command = cli.main.get_command(click.Context(cli.main), name)
    assert command is getattr(importlib.import_module(module_name), attribute)
    result = CliRunner().invoke(cli.main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {name} ")  # its own help, not the group's


def test_unknown_verb_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.main, ["no-such-verb"])
    assert result.exit_code == 2
    assert result.output == "dragoon: no verb 'no-such-verb'; see dragoon --help\n"


def test_a_mistyped_verb_names_the_closest_ones() -> None:
    result = CliRunner().invoke(cli.main, ["taks"])
    assert result.exit_code == 2
    assert result.output == "dragoon: no verb 'taks'; did you mean tasks or task?\n"


# ----------------------------------------------------------------- extras


def _distributions(requirements: list[str]) -> set[str]:
    """Import names of a pyproject extra's requirements, with ``dragoon[a,b]`` expanded."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    names: set[str] = set()
    for requirement in requirements:
        self_reference = re.fullmatch(r"dragoon\[([a-z,]+)\]", requirement)
        if self_reference:
            for extra in self_reference.group(1).split(","):
                names |= _distributions(extras[extra])
        else:
            names.add(re.split(r"[<>=!~;\[ ]", requirement)[0].lower().replace("-", "_"))
    return names


def test_the_table_of_extras_is_pyprojects() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra, modules in cli.EXTRAS.items():
        assert _distributions(extras[extra]) == set(modules), extra
    everything = {module for modules in cli.EXTRAS.values() for module in modules}
    assert _distributions(extras["all"]) == everything
    assert _distributions(extras["test"]) >= everything  # tests/run.sh installs [test]
    assert {extra for verb in cli.VERBS.values() for extra in verb.extras} == set(cli.EXTRAS)


def test_the_default_install_is_a_drones() -> None:
    default = _distributions(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"])
    assert default.isdisjoint({"textual", "rich", "fastapi", "uvicorn", "starlette", "pyotp"})
    for name in ("drone", "notify"):
        assert cli.VERBS[name].extras == ()


RELAY_LINE = "dragoon relay: needs the relay extra: pip install 'dragoon[relay]'"


@pytest.mark.parametrize(("argv", "hide", "line"), [
    (("relay", "serve", "--data", "x"), ("fastapi",), RELAY_LINE),
    (("relay", "serve", "--help"), ("uvicorn",), RELAY_LINE),
    (("relay", "init", "--data", "x"), ("prometheus_client",), RELAY_LINE),
    (("submit", "box", "--", "true"), ("textual",),
     "dragoon submit: needs the cockpit extra: pip install 'dragoon[cockpit]'"),
    (("cockpit",), ("rich",),
     "dragoon cockpit: needs the cockpit extra: pip install 'dragoon[cockpit]'"),
    (("demo", "--headless"), ("textual",),
     "dragoon demo: needs the cockpit extra: pip install 'dragoon[cockpit]'"),
    (("demo",), ("fastapi", "textual"),
     "dragoon demo: needs the relay and cockpit extras: pip install 'dragoon[all]'"),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else None)
def test_a_verb_whose_extra_is_missing_says_which_in_one_line(
        tmp_path: Path, argv: tuple[str, ...], hide: tuple[str, ...], line: str) -> None:
    code, output, modules = _run(tmp_path, *argv, hide=hide)
    assert code == 2
    assert output == line + "\n"  # one line, no traceback
    verb = cli.VERBS[argv[0]]
    assert verb.target.partition(":")[0] not in modules  # the part was not even imported


def test_a_missing_extra_leaves_the_drone_verbs_alone(tmp_path: Path) -> None:
    hide = ("fastapi", "uvicorn", "textual", "rich")
    code, output, _modules = _run(tmp_path, "drone", "run", "--help", hide=hide)
    assert code == 0 and "--data" in output, output
    code, output, _modules = _run(tmp_path, "--help", hide=hide)
    assert code == 0, output
    rows = " ".join(output.split("Commands:")[1].split())  # undo the wrapping
    assert "serve. (needs dragoon[relay])" in rows
    assert "List tasks. (needs dragoon[cockpit])" in rows
    assert "run the daemon. notify" in rows  # the drone lacks nothing


def test_a_half_installed_extra_is_reported_like_a_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # rich is found, so the check before the import passes; a module of it does not load.
    (tmp_path / "half_installed_verb.py").write_text(
        "import click\nimport rich.no_such_module_here\ncommand = click.command()(print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.VERBS, "half", cli.Verb("half_installed_verb:command", "Half.",
                                                    ("cockpit",)))
    result = CliRunner().invoke(cli.main, ["half", "--anything"])
    assert result.exit_code == 2
    assert result.output == ("dragoon half: needs the cockpit extra: "
                             "pip install 'dragoon[cockpit]'\n")


def test_a_missing_module_outside_the_verbs_extras_is_a_bug_not_a_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A drone verb that imported textual would break the lean install: let it show.
    (tmp_path / "drone_verb_with_a_bug.py").write_text("import textual.no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.VERBS, "buggy", cli.Verb("drone_verb_with_a_bug:command", "Bug."))
    result = CliRunner().invoke(cli.main, ["buggy"])
    assert isinstance(result.exception, ModuleNotFoundError)
