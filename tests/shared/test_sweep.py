"""shared/sweep.py: the one parser of a sweep, its points, commands and trial env."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from dragoon.shared.sweep import (
    MAX_TRIALS,
    SweepError,
    parse_grid_flag,
    parse_sweep,
    sweep_fields_from_toml,
)

JOB = "j-abcdefghij"


def sweep(**fields: Any) -> Any:
    fields.setdefault("labels", ["gpu"])
    return parse_sweep(fields)


def refused(field: str, **fields: Any) -> str:
    """The one line a bad sweep is refused with; it must start with the field's name."""
    with pytest.raises(SweepError) as caught:
        sweep(**fields)
    line = str(caught.value)
    assert "\n" not in line
    assert caught.value.field == field, line
    assert line.startswith(f"{field}: ")
    return line


# -- points --------------------------------------------------------------------------------


def test_the_grid_runs_like_nested_loops_the_last_parameter_fastest() -> None:
    got = sweep(command="x", grid=["lr=1e-3,1e-4", "bs=32,64,128"]).points()
    assert got == [{"lr": "1e-3", "bs": "32"}, {"lr": "1e-3", "bs": "64"},
                   {"lr": "1e-3", "bs": "128"}, {"lr": "1e-4", "bs": "32"},
                   {"lr": "1e-4", "bs": "64"}, {"lr": "1e-4", "bs": "128"}]


def test_the_order_given_is_kept_not_sorted() -> None:
    got = sweep(command="x", grid={"z": ["b", "a"], "a": ["2", "1"]}).points()
    assert [tuple(p.values()) for p in got] == [("b", "2"), ("b", "1"), ("a", "2"), ("a", "1")]
    assert list(got[0]) == ["z", "a"]


def test_random_with_a_seed_is_the_same_sample_every_time_distinct_and_in_grid_order() -> None:
    fields = {"command": "x", "grid": ["a=" + ",".join(map(str, range(20))),
                                       "b=" + ",".join(map(str, range(20)))],
              "random": 30, "seed": 7}
    first = sweep(**fields).points()
    again = sweep(**fields).points()
    other = sweep(**{**fields, "seed": 8}).points()
    assert first == again
    assert first != other
    keys = [(int(p["a"]), int(p["b"])) for p in first]
    assert len(set(keys)) == 30
    assert keys == sorted(keys)


def test_random_without_a_seed_draws_one_and_keeps_it() -> None:
    made = parse_sweep({"command": "x", "grid": ["a=1,2,3,4"], "random": 2, "labels": ["g"]},
                       fresh_seed=99)
    assert made.seed == 99
    assert made.points() == sweep(command="x", grid=["a=1,2,3,4"], random=2, seed=99).points()
    drawn = sweep(command="x", grid=["a=1,2,3,4"], random=2)
    assert isinstance(drawn.seed, int)


def test_random_may_sample_a_grid_far_larger_than_the_trial_cap() -> None:
    values = ",".join(str(n) for n in range(100))
    made = sweep(command="x", grid=[f"a={values}", f"b={values}", f"c={values}"],
                 random=5, seed=1)
    assert made.grid_size == 1_000_000
    assert len({tuple(p.values()) for p in made.points()}) == 5


def test_random_larger_than_the_grid_is_refused() -> None:
    line = refused("random", command="x", grid=["a=1,2", "b=3,4"], random=5, seed=1)
    assert "5 is more than the grid's 4 points" in line
    assert len(sweep(command="x", grid=["a=1,2", "b=3,4"], random=4, seed=1).points()) == 4


def test_a_grid_over_the_cap_without_random_is_refused() -> None:
    values = ",".join(str(n) for n in range(101))
    assert str(MAX_TRIALS) in refused("grid", command="x", grid=[f"a={values}", f"b={values}"])


# -- commands and shell quoting -------------------------------------------------------------

HOSTILE = ["; rm -rf /", "a'b", 'a"b', "line1\nline2", "$(touch /tmp/pwned)", "`id`",
           "$HOME", "*", "-n", " lead and trail ", "\\", "{lr}", "a b\tc", "é🙂"]


def argv_of(command: str) -> list[str]:
    """What bash gives the program: run the command for real, with printf of each arg."""
    out = subprocess.run(["bash", "-c", command], capture_output=True, check=True, timeout=10)
    return out.stdout.decode("utf-8").split("\0")[:-1]


def test_a_hostile_value_reaches_the_program_as_one_argument_unchanged(tmp_path: Any) -> None:
    made = sweep(command="printf '%s\\0' {v} {v}x", grid={"v": HOSTILE})
    for point in made.points():
        command = made.command_for(point)
        assert argv_of(command) == [point["v"], point["v"] + "x"], command
    assert not (tmp_path / "pwned").exists()


def test_no_substitution_runs_a_command_hidden_in_a_value(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    made = sweep(command="printf '%s\\0' {v}", grid={"v": [f"$(touch {marker})",
                                                           f"`touch {marker}`",
                                                           f"x; touch {marker}"]})
    for point in made.points():
        assert argv_of(made.command_for(point)) == [point["v"]]
    assert not marker.exists()


def test_doubled_braces_are_literal_braces() -> None:
    made = sweep(command="echo {{lr}} ${{HOME:+set}} {lr} }}", grid=["lr=1"])
    assert made.command_for({"lr": "1"}) == "echo {lr} ${HOME:+set} 1 }"
    assert argv_of("printf '%s\\0' " + made.command_for({"lr": "1"})[5:]) == [
        "{lr}", "set", "1", "}"]


def test_an_unknown_placeholder_is_refused_by_name() -> None:
    line = refused("command", command="python t.py --lr {lr} --bs {bs}", grid=["lr=1"])
    assert "'{bs}'" in line and "lr" in line


@pytest.mark.parametrize("command", ["echo {", "echo }", "echo {lr", "echo ${HOME}",
                                     "echo {a,b}", "echo { lr }"])
def test_a_brace_that_is_not_a_placeholder_is_refused(command: str) -> None:
    refused("command", command=command, grid=["lr=1"])


def test_a_parameter_the_command_does_not_use_is_fine_it_is_in_the_env() -> None:
    made = sweep(command="python t.py", grid=["lr=1,2"])
    assert made.command_for({"lr": "1"}) == "python t.py"
    assert made.env_for({"lr": "1"}, JOB, 0)["DRAGOON_PARAM_LR"] == "1"


def test_a_safe_value_is_not_quoted() -> None:
    made = sweep(command="t --lr {lr}", grid=["lr=1e-3"])
    assert made.command_for({"lr": "1e-3"}) == "t --lr 1e-3"


# -- the trial's env and spec ---------------------------------------------------------------


def test_each_trial_env_carries_the_job_the_trial_and_its_point() -> None:
    made = sweep(command="x", grid=["lr=1e-3", "batch_size=32"], env={"A": "b"})
    env = made.env_for({"lr": "1e-3", "batch_size": "32"}, JOB, 3)
    assert env == {"A": "b", "DRAGOON_JOB": JOB, "DRAGOON_TRIAL": "3",
                   "DRAGOON_PARAMS": '{"batch_size":"32","lr":"1e-3"}',
                   "DRAGOON_PARAM_LR": "1e-3", "DRAGOON_PARAM_BATCH_SIZE": "32"}
    assert json.loads(env["DRAGOON_PARAMS"]) == {"lr": "1e-3", "batch_size": "32"}


def test_the_spec_of_a_trial_is_a_whole_checked_spec() -> None:
    made = sweep(command="t {lr}", grid=["lr=1"], timeout="1h", grace=0, cwd="/w",
                 artifacts=["out/*"], name="lr sweep")
    spec = made.spec_for({"lr": "1"}, JOB, 2)
    assert spec["command"] == "t 1"
    assert spec["timeout"] == 3600 and spec["grace"] == 0 and spec["cwd"] == "/w"
    assert spec["artifacts"] == ["out/*"] and spec["name"] == "lr sweep #2"


def test_a_value_that_makes_the_command_too_long_is_refused_naming_the_trial() -> None:
    made = sweep(command="echo {v}", grid={"v": ["x", "y" * 200_000]})
    made.spec_for({"v": "x"}, JOB, 0)
    with pytest.raises(SweepError, match="command: trial 1: is"):
        made.spec_for({"v": "y" * 200_000}, JOB, 1)


# -- the grid's refusals ---------------------------------------------------------------------


def test_a_name_given_twice_is_refused() -> None:
    assert "lr is given twice" in refused("grid", command="x", grid=["lr=1", "lr=2"])


def test_names_equal_after_upper_are_refused() -> None:
    line = refused("grid", command="x", grid={"lr": ["1"], "LR": ["2"]})
    assert "DRAGOON_PARAM_LR" in line


@pytest.mark.parametrize("grid", [["lr="], ["lr=1,,2"], ["lr=1,"], {"lr": [""]}, {"lr": []}])
def test_an_empty_value_or_no_values_is_refused(grid: Any) -> None:
    refused("grid", command="x", grid=grid)


@pytest.mark.parametrize("grid", [["1lr=1"], ["l-r=1"], ["=1"], ["lr"], {"a": [[1]]},
                                  {"a": "1"}, ["a=1,1"], [], {}, 5, {"a": ["x\0"]}])
def test_a_bad_grid_is_refused(grid: Any) -> None:
    refused("grid", command="x", grid=grid)


def test_the_flag_splits_at_the_first_equals_then_on_commas() -> None:
    assert parse_grid_flag("opt=a=b,c") == ("opt", ["a=b", "c"])


# -- the TOML file ------------------------------------------------------------------------------

EVERY_FIELD = """
command = "python train.py --lr {lr} --bs {bs} --aug {aug}"
name = "lr sweep"
random = 3
seed = 42
labels = ["gpu", "a100"]
max_parallel = 2
retries = 1
retry_on = [1, 137]
stop_on_failure = true
timeout = "3h"
grace = 5
cwd = "/srv/work"
artifacts = ["out/*.pt"]

[env]
WANDB_MODE = "offline"

[grid]
lr = ["1e-3", 1e-4, 0.5]
bs = [32, 64]
aug = [true, false]
"""


def test_a_file_with_every_field_is_read_as_the_flags_are() -> None:
    made = parse_sweep(sweep_fields_from_toml(EVERY_FIELD))
    assert made.grid == {"lr": ("1e-3", "0.0001", "0.5"), "bs": ("32", "64"),
                         "aug": ("true", "false")}
    assert (made.name, made.random, made.seed, made.labels) == ("lr sweep", 3, 42,
                                                               ("gpu", "a100"))
    assert (made.max_parallel, made.retries, made.retry_on, made.stop_on_failure) == (
        2, 1, (1, 137), True)
    assert (made.timeout, made.grace, made.cwd, made.artifacts) == (
        10800, 5, "/srv/work", ("out/*.pt",))
    assert made.env == {"WANDB_MODE": "offline"}
    assert len(made.points()) == 3


def test_the_drone_field_targets_one_drone() -> None:
    made = parse_sweep({"command": "x", "grid": ["a=1"], "drone": "box-1"})
    assert made.drone == "box-1" and made.labels == ()


BAD_FIELDS = [
    ("command", 'command = 3'),
    ("command", 'command = "  "'),
    ("grid", 'grid = ["lr"]'),
    ("random", 'random = 0'),
    ("random", 'random = "3"'),
    ("seed", 'seed = -1'),
    ("seed", 'seed = 1.5'),
    ("labels", 'labels = ["bad label"]'),
    ("labels", 'labels = []'),
    ("drone", 'drone = "bad name!"'),
    ("max_parallel", 'max_parallel = 0'),
    ("retries", 'retries = 99'),
    ("retry_on", 'retry_on = [0]'),
    ("retry_on", 'retry_on = "x"'),
    ("stop_on_failure", 'stop_on_failure = "yes"'),
    ("name", 'name = "two\\nlines"'),
    ("timeout", 'timeout = "soon"'),
    ("timeout", 'timeout = 0'),
    ("grace", 'grace = "forever"'),
    ("env", 'env = {"1BAD" = "x"}'),
    ("env", 'env = {"A" = 1}'),
    ("env", 'env = {"DRAGOON_PARAM_LR" = "x"}'),
    ("cwd", 'cwd = ""'),
    ("artifacts", 'artifacts = ["/etc/*"]'),
    ("sweep", 'gird = 1'),
]


@pytest.mark.parametrize(("field", "line"), BAD_FIELDS)
def test_a_bad_field_in_the_file_is_one_line_naming_it(field: str, line: str) -> None:
    base = {"command": '"x {lr}"', "grid": '{lr = ["1", "2"]}', "labels": '["gpu"]',
            "seed": "1", "random": "1"}
    key = line.split("=")[0].strip()
    base.pop(key, None)
    if key == "drone":
        del base["labels"]
    if key == "seed":
        base.pop("random", None)
        line = line + "\nrandom = 1"
    if key == "random":
        base.pop("seed")
        line = line + "\nseed = 1"
    text = "\n".join(f"{k} = {v}" for k, v in base.items()) + "\n" + line + "\n"
    with pytest.raises(SweepError) as caught:
        parse_sweep(sweep_fields_from_toml(text))
    message = str(caught.value)
    assert caught.value.field == field, message
    assert message.startswith(field + ": ") and "\n" not in message


def test_seed_without_random_is_refused() -> None:
    refused("seed", command="x", grid=["a=1"], seed=1)


def test_no_target_or_two_targets_are_refused() -> None:
    with pytest.raises(SweepError, match=r"^labels: give labels"):
        parse_sweep({"command": "x", "grid": ["a=1"]})
    with pytest.raises(SweepError, match=r"^drone: give a drone"):
        parse_sweep({"command": "x", "grid": ["a=1"], "drone": "b", "labels": ["g"]})


def test_a_file_that_is_not_toml_is_one_line() -> None:
    with pytest.raises(SweepError) as caught:
        sweep_fields_from_toml("grid = [", source="s.toml")
    assert str(caught.value).startswith("file: s.toml is not TOML") and "\n" not in str(
        caught.value)
