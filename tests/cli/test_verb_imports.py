"""`dragoon run` pays for its own verb only: the modules of other verbs, and what only they
use, are not imported (the CLI's start-up is most of a tiny task's whole-process time)."""

from __future__ import annotations

import subprocess
import sys

import click

from dragoon import cli
from tests.support.relay import REPO

OTHER_VERBS = ("dragoon.cockpit.cli.drones", "dragoon.cockpit.cli.files",
               "dragoon.cockpit.cli.inbox", "dragoon.cockpit.cli.session",
               "dragoon.cockpit.cli.tui", "dragoon.cockpit.app", "textual", "fractions")


def test_looking_up_run_imports_no_other_verbs_module():
    probe = ("import sys, click, dragoon.cli as c;"
             "c.main.get_command(click.Context(c.main), 'run');"
             "print(','.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                check=True, cwd=REPO).stdout.strip().split(","))
    assert "dragoon.cockpit.cli.tasks" in loaded
    assert sorted(name for name in OTHER_VERBS if name in loaded) == []


def test_every_pilot_verb_is_named_by_the_module_that_defines_it():
    for name, verb in cli.VERBS.items():
        module, _, _attribute = verb.target.partition(":")
        if module.startswith("dragoon.cockpit.cli"):
            command = cli.main.get_command(click.Context(cli.main), name)
            assert command is not None and command.callback is not None, name
            assert command.callback.__module__ == module, name
