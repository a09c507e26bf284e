"""``dragoon sweep --dry-run`` and the doors of the job verbs: no relay needed, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.relay import REPO


def dragoon(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGOON_")}
    env.update({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
                "XDG_CONFIG_HOME": str(tmp_path / "config")})
    return subprocess.run([sys.executable, "-m", "dragoon", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def test_a_dry_run_prints_every_point_and_its_quoted_command(tmp_path: Path) -> None:
    done = dragoon(tmp_path, "sweep", "--grid", "lr=1e-3,1e-4", "--grid", "tag=a b,$(id)",
                   "--labels", "gpu", "--dry-run", "--json", "--",
                   "python", "train.py", "--lr", "{lr}", "--tag", "{tag}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"trial": 0, "params": {"lr": "1e-3", "tag": "a b"},
         "command": "python train.py --lr 1e-3 --tag 'a b'"},
        {"trial": 1, "params": {"lr": "1e-3", "tag": "$(id)"},
         "command": "python train.py --lr 1e-3 --tag '$(id)'"},
        {"trial": 2, "params": {"lr": "1e-4", "tag": "a b"},
         "command": "python train.py --lr 1e-4 --tag 'a b'"},
        {"trial": 3, "params": {"lr": "1e-4", "tag": "$(id)"},
         "command": "python train.py --lr 1e-4 --tag '$(id)'"},
    ]


def test_a_dry_run_table_and_a_random_sample_with_its_seed(tmp_path: Path) -> None:
    done = dragoon(tmp_path, "sweep", "--grid", "a=1,2,3", "--grid", "b=x,y", "--random", "2",
                   "--seed", "5", "box-1", "--dry-run", "--", "echo", "{a}{b}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TRIAL", "a", "b", "COMMAND"]
    assert len(lines) == 3
    assert "2 sampled of 6 with seed 5" in done.stderr and "drone box-1" in done.stderr
    again = dragoon(tmp_path, "sweep", "--grid", "a=1,2,3", "--grid", "b=x,y", "--random",
                    "2", "--seed", "5", "box-1", "--dry-run", "--", "echo", "{a}{b}")
    assert again.stdout == done.stdout


def test_a_file_gives_the_fields_and_flags_override_them(tmp_path: Path) -> None:
    file = tmp_path / "sweep.toml"
    file.write_text('command = "run {lr}"\nlabels = ["gpu"]\n[grid]\nlr = ["1", "2"]\n')
    done = dragoon(tmp_path, "sweep", "--file", str(file), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert [t["command"] for t in json.loads(done.stdout)] == ["run 1", "run 2"]
    over = dragoon(tmp_path, "sweep", "--file", str(file), "--grid", "lr=9", "--dry-run",
                   "--json", "--", "go", "{lr}")
    assert [t["command"] for t in json.loads(over.stdout)] == ["go 9"]


@pytest.mark.parametrize(("args", "says"), [
    (["--grid", "lr=1", "--labels", "gpu", "--", "echo", "{x}"], "unknown placeholder '{x}'"),
    (["--grid", "lr=1", "--grid", "LR=2", "--labels", "g", "--", "e"], "DRAGOON_PARAM_LR"),
    (["--grid", "lr=", "--labels", "g", "--", "e"], "a value is empty"),
    (["--grid", "lr=1", "--", "e"], "labels: give labels"),
    (["--grid", "lr=1,2", "--random", "3", "--labels", "g", "--", "e"], "random: 3 is more"),
    (["--grid", "lr=1", "--labels", "g", "--timeout", "soon", "--", "e"], "timeout:"),
    (["--grid", "lr=1", "--labels", "g", "--retry-on", "0", "--", "e"], "retry_on:"),
    (["--file", "/nonexistent/s.toml", "--", "e"], "--file /nonexistent/s.toml"),
])
def test_a_bad_sweep_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    done = dragoon(tmp_path, "sweep", *args, "--dry-run")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon: sweep: "), done.stderr
    assert says in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "says"), [
    (["run", "--json", "box", "--", "true"], "--json is for a fan-out"),
    (["run", "--group", "box", "--", "true"], "--group is for a fan-out"),
    (["submit", "--include-offline", "box", "--", "true"], "--include-offline is for a"),
    (["run", "--each", "gpu", "--all", "--", "true"], "--each and --all"),
    (["run", "--each", "gpu", "--labels", "gpu", "--", "true"], "give one of them"),
    (["run", "a,,b", "--", "true"], "in the drone list"),
    (["run", "--each", "gpu", "--group", "--json", "--", "true"], "--group and --json"),
    (["run", "-i", "a,b", "--", "true"], "-i and --cancel-on-interrupt"),
    (["submit", "--each", "gpu", "--start-within", "30s", "--", "true"], "--start-within"),
    (["job", "show", "x!"], "is not a job id"),
    (["job", "retry", "abc"], "--failed"),
    (["notify", "--metric", "loss=fast"], "--metric"),
])
def test_a_bad_job_line_is_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                               says: str) -> None:
    done = dragoon(tmp_path, *args)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
