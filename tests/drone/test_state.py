"""The data dir's durable state and the settings file."""

from __future__ import annotations

import os
import stat

import pytest
from dragoon.drone import config
from dragoon.drone.state import (
    ACCEPTED_MEMORY,
    AdmissionLedger,
    DataDir,
    is_safe_id,
    write_json,
)


def test_last_seq_and_accepted_ids_survive_a_reload(tmp_path):
    state = AdmissionLedger.load(tmp_path / "state.json")
    state.accept("t-one", 7)
    state.accept("t-two", 9)
    state.save_if_behind()
    again = AdmissionLedger.load(tmp_path / "state.json")
    assert again.last_seq == 9
    assert again.is_accepted("t-one") and again.is_accepted("t-two")
    assert not again.is_accepted("t-three")


def write_task_record(tasks, task_id, seq):
    """What the daemon writes, durably, at an accept (the accept's own record)."""
    (tasks / task_id).mkdir(parents=True)
    write_json(tasks / task_id / "task.json", {"id": task_id, "seq": seq, "spec": {}})


def test_an_accept_whose_task_dir_remains_counts_after_a_crash_without_state_json(tmp_path):
    """A kill -9 after the accept: state.json never heard of it, its task.json did."""
    tasks = tmp_path / "tasks"
    state = AdmissionLedger.load(tmp_path / "state.json", tasks)
    state.accept("t-old", 3)
    state.save_if_behind()
    state.accept("t-new", 5)
    write_task_record(tasks, "t-new", 5)
    (tasks / "t-torn").mkdir()  # made, then the crash, before its task.json
    again = AdmissionLedger.load(tmp_path / "state.json", tasks)
    assert again.is_accepted("t-old") and again.is_accepted("t-new")
    assert not again.is_accepted("t-torn")
    assert again.last_seq == 5


def test_state_json_catches_up_only_when_behind(tmp_path):
    state = AdmissionLedger.load(tmp_path / "state.json")
    state.accept("t-one", 1)
    assert not (tmp_path / "state.json").exists()  # the task dir is the durable record
    state.save_if_behind()
    first = os.stat(tmp_path / "state.json").st_ino
    state.save_if_behind()  # nothing new: not written again
    assert os.stat(tmp_path / "state.json").st_ino == first


def test_state_file_is_private_and_written_atomically(tmp_path):
    state = AdmissionLedger.load(tmp_path / "state.json")
    state.accept("t-one", 1)
    state.save_if_behind()
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_damaged_state_file_is_refused_rather_than_reset(tmp_path):
    (tmp_path / "state.json").write_text("{torn")
    with pytest.raises(ValueError, match="damaged"):
        AdmissionLedger.load(tmp_path / "state.json")


def test_accepted_ids_are_bounded(tmp_path):
    state = AdmissionLedger(tmp_path / "state.json")
    for i in range(ACCEPTED_MEMORY + 5):
        state.accepted.append(f"t-{i}")
    state.accept("t-last", 1)
    assert len(state.accepted) == ACCEPTED_MEMORY
    assert state.is_accepted("t-last") and not state.is_accepted("t-0")


@pytest.mark.parametrize("value,ok", [("t-3kq9z0m2ab", True), ("../x", False), ("", False),
                                      (".hidden", False), ("a/b", False), (5, False)])
def test_only_plain_ids_become_directory_names(value, ok):
    assert is_safe_id(value) is ok


def test_task_dir_refuses_unsafe_ids(tmp_path):
    with pytest.raises(ValueError):
        DataDir(tmp_path).task_dir("../../etc")


def test_settings_round_trip_through_toml(tmp_path):
    settings = config.DroneSettings(name="gpu-1", relay="https://r.example", slots=3,
                               labels=["gpu", "a100"], fetch_roots=["/data"], max_timeout=3600)
    config.save(settings, tmp_path / "drone.toml")
    assert config.load(tmp_path / "drone.toml") == settings


def test_settings_are_the_ceiling_over_what_the_relay_asks():
    settings = config.DroneSettings(name="d", relay="r", max_timeout=100, default_grace=5,
                               max_grace=30)
    assert settings.effective_timeout(1000) == 100
    assert settings.effective_timeout(None) == 100
    assert settings.effective_timeout(50) == 50
    assert settings.effective_grace(None) == 5
    assert settings.effective_grace(600) == 30
    unlimited = config.DroneSettings(name="d", relay="r")
    assert unlimited.effective_timeout(None) is None


@pytest.mark.parametrize("line,needle", [("slots = 0", "slots"), ("bogus = 1", "unknown"),
                                         ("labels = 3", "labels")])
def test_bad_settings_are_named(tmp_path, line, needle):
    (tmp_path / "drone.toml").write_text(f'name = "d"\nrelay = "r"\n{line}\n')
    with pytest.raises(config.SettingsError, match=needle):
        config.load(tmp_path / "drone.toml")


def test_notify_appends_one_line_and_needs_the_inbox(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from dragoon.drone.notify import notify

    inbox = tmp_path / "inbox"
    inbox.touch()
    monkeypatch.setenv("DRAGOON_INBOX", str(inbox))
    assert CliRunner().invoke(notify, ["epoch", "3\ndone"]).exit_code == 0
    assert inbox.read_text() == "epoch 3 done\n"
    monkeypatch.delenv("DRAGOON_INBOX")
    result = CliRunner().invoke(notify, ["x"])
    assert result.exit_code == 2 and "DRAGOON_INBOX is not set" in result.output
