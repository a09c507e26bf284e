"""The pure parts of fan-out and job views: choosing drones, prefixing, grouping, the trials."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from dragoon.cockpit import trials as T
from dragoon.cockpit.cli._common import Fail
from dragoon.cockpit.cli._fanout_run import LineWriter, group_text, groups, summary_rows
from dragoon.cockpit.cli.fanout import DroneSelection, choose

NOW = 10_000.0
FLEET: list[Any] = [
    {"name": "gpu-2", "state": "online", "labels": ["gpu"]},
    {"name": "gpu-1", "state": "online", "labels": ["gpu", "a100"]},
    {"name": "gpu-3", "state": "offline", "labels": ["gpu"], "last_seen": NOW - 7200},
    {"name": "gpu-4", "state": "online", "draining": True, "labels": ["gpu"]},
    {"name": "cpu-1", "state": "online", "labels": ["cpu"]},
]


def test_each_takes_the_online_drones_with_the_labels_sorted_and_names_the_others() -> None:
    chosen, skipped = choose(FLEET, DroneSelection(labels=("gpu",)), include_offline=False, now=NOW)
    assert chosen == ["gpu-1", "gpu-2"]
    assert skipped == [("gpu-3", "offline 2h00m"), ("gpu-4", "draining")]


def test_include_offline_queues_for_them_too() -> None:
    chosen, skipped = choose(FLEET, DroneSelection(labels=("gpu",)), include_offline=True, now=NOW)
    assert chosen == ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]
    assert [name for name, _ in skipped] == ["gpu-3", "gpu-4"]


def test_all_and_a_list_of_names() -> None:
    assert choose(FLEET, DroneSelection(every=True), include_offline=False)[0] == [
        "cpu-1", "gpu-1", "gpu-2"]
    assert choose(FLEET, DroneSelection(names=("gpu-2", "cpu-1")), include_offline=False)[0] == [
        "cpu-1", "gpu-2"]


def test_an_unknown_name_or_labels_no_drone_has_is_exit_4() -> None:
    with pytest.raises(Fail) as caught:
        choose(FLEET, DroneSelection(names=("gpu-1", "nope")), include_offline=False)
    assert caught.value.code == 4 and "nope" in caught.value.message
    with pytest.raises(Fail) as caught:
        choose(FLEET, DroneSelection(labels=("tpu",)), include_offline=False)
    assert caught.value.code == 4 and "tpu" in caught.value.message


def test_a_line_writer_prefixes_whole_lines_and_cleans_them() -> None:
    out = io.BytesIO()
    writer = LineWriter(out, "box-1: ")
    writer.write(b"one\ntw")
    assert out.getvalue() == b"box-1: one\n"
    writer.write(b"o\n\x1b[2Jthree")
    writer.end()
    assert out.getvalue().decode() == "box-1: one\nbox-1: two\nbox-1: \u241b[2Jthree\n"


def test_identical_outputs_are_one_group_in_first_seen_order() -> None:
    outputs = [("a", b"x\n"), ("b", b"y\n"), ("c", b"x\n")]
    assert groups(outputs) == [(["a", "c"], b"x\n"), (["b"], b"y\n")]
    text = group_text(outputs)
    assert text == ("----------------\na,c\n----------------\nx\n"
                    "----------------\nb\n----------------\ny\n")


def test_the_summary_lists_only_the_tasks_that_did_not_exit_0() -> None:
    ended = [("a", {"state": "succeeded", "exit_code": 0}),
             ("b", {"state": "failed", "exit_code": 3}),
             ("c", {"state": "failed", "signal": 9}),
             ("d", {"state": "lost", "error": "drone gone"})]
    assert summary_rows(ended) == [["b", "failed", "3", "-"], ["c", "failed", "sig 9", "-"],
                                   ["d", "lost", "-", "drone gone"]]


def _task(trial: int, attempt: int, state: str, params: dict[str, str], **more: Any) -> Any:
    return {"id": f"t-{trial}{attempt}", "trial": trial, "attempt": attempt, "state": state,
            "drone": "box", "spec": {"env": {"DRAGOON_PARAMS": json.dumps(params)}},
            "started_at": 100.0, "finished_at": 160.0, **more}


TASKS = [
    _task(0, 0, "succeeded", {"lr": "1e-3", "bs": "32"}, exit_code=0),
    _task(1, 0, "failed", {"lr": "1e-4", "bs": "32"}, exit_code=1),
    _task(1, 1, "succeeded", {"lr": "1e-4", "bs": "32"}, exit_code=0),
    _task(2, 0, "failed", {"lr": "1e-2", "bs": "64"}, exit_code=3),
]
MESSAGES = {"t-00": "loss=0.5 done", "t-11": "loss=0.25 acc=0.9", "t-20": "loss=nan"}


def test_a_trial_row_is_its_latest_attempt_with_params_and_metrics() -> None:
    rows = T.trial_rows(TASKS, MESSAGES, now=NOW)
    assert [(r["trial"], r["attempt"], r["state"]) for r in rows] == [
        (0, 0, "succeeded"), (1, 1, "succeeded"), (2, 0, "failed")]
    assert rows[1]["params"] == {"lr": "1e-4", "bs": "32"}
    assert rows[1]["metrics"] == {"loss": 0.25, "acc": 0.9}
    assert rows[0]["duration"] == 60.0
    assert T.row_columns(rows) == (["lr", "bs"], ["loss", "acc"])


def test_sorting_by_a_param_or_a_metric_is_numeric_and_blanks_go_last() -> None:
    rows = T.trial_rows(TASKS, MESSAGES, now=NOW)
    params, metrics = T.row_columns(rows)
    assert [r["trial"] for r in T.sort_table(rows, "lr", params, metrics)] == [1, 0, 2]
    assert [r["trial"] for r in T.sort_table(rows, "loss", params, metrics)] == [1, 0, 2]
    assert [r["trial"] for r in T.sort_table(rows, "-loss", params, metrics)] == [0, 1, 2]
    assert [r["trial"] for r in T.sort_table(rows, "acc", params, metrics)] == [1, 0, 2]
    with pytest.raises(KeyError):
        T.sort_table(rows, "nope", params, metrics)


def test_csv_and_json_carry_params_and_metrics() -> None:
    rows = T.trial_rows(TASKS, MESSAGES, now=NOW)
    lines = T.as_csv(rows).splitlines()
    assert lines[0] == ("trial,lr,bs,drone,state,exit_code,signal,duration,attempt,loss,acc,"
                        "message,task")
    assert lines[2].startswith("1,1e-4,32,box,succeeded,0,,60.0,1,0.25,0.9,")
    safe = T.json_safe(rows)
    assert safe[2]["metrics"] == {"loss": "nan"}
    json.dumps(safe, allow_nan=False)
    assert math.isnan(rows[2]["metrics"]["loss"])


def test_the_table_has_a_column_per_param_and_metric() -> None:
    headers, cells = T.table(T.trial_rows(TASKS, MESSAGES, now=NOW))
    assert headers == ["TRIAL", "LR", "BS", "DRONE", "STATE", "EXIT", "TIME", "TRY", "loss",
                       "acc", "MESSAGE"]
    assert cells[2][:6] == ["2", "1e-2", "64", "box", "failed", "3"]
    assert cells[2][8:10] == ["nan", "-"]


def test_the_cli_rows_are_the_cockpits_rows_as_dicts() -> None:
    sealed = {"id": "t-30", "trial": 3, "attempt": 0, "state": "queued", "sealed": "no key"}
    tasks = [*TASKS, sealed]
    shown = T.rows(tasks, {k: {"task": k, "id": 1, "text": v} for k, v in MESSAGES.items()})
    listed = T.trial_rows(tasks, MESSAGES, now=NOW)
    assert [(r.trial, r.params or {}, r.message) for r in shown] == [
        (r["trial"], r["params"], r["message"]) for r in listed]
    assert [r.metrics for r in shown][:2] == [r["metrics"] for r in listed][:2]
    assert shown[3].params is None and listed[3]["params"] == {}
    assert listed[3]["duration"] is None  # never started


class _Keys:
    """The pilot's key store, recording what the submit path asks of it."""

    def __init__(self) -> None:
        self.remembered: dict[str, bytes] = {}
        self.opened: list[str] = []

    def remember(self, task_id: str, key: bytes) -> None:
        self.remembered[task_id] = key

    def open(self, task: dict[str, Any]) -> dict[str, Any]:
        self.opened.append(task["id"])
        return {**task, "sealed": "checked the slow way"}


def test_a_submitted_trial_back_with_its_own_order_is_known_and_any_other_is_checked() -> None:
    from types import SimpleNamespace

    from dragoon.cockpit.client.jobs import SealedTrial, _remember

    keys = _Keys()
    client: Any = SimpleNamespace(keys=keys)
    sealed = {0: SealedTrial(b"k0", {"command": "train --lr 0.1"}, "order-0"),
              1: SealedTrial(b"k1", {"command": "train --lr 0.2"}, "order-1")}
    # The relay answers trial 0 with its own order, and trial 1 with trial 0's (a swap).
    shown = _remember(client, [{"id": "t-a", "trial": 0, "order": "order-0", "spec": {}},
                               {"id": "t-b", "trial": 1, "order": "order-0", "spec": {}}],
                      sealed)
    assert shown[0]["spec"] == {"command": "train --lr 0.1"}
    assert keys.opened == ["t-b"]  # the swapped one is opened and checked, not believed
    assert shown[1]["sealed"] == "checked the slow way"
    assert keys.remembered == {"t-a": b"k0", "t-b": b"k1"}
