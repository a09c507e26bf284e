"""shared/sealed_message.py: an inbox message is one final record at its index, and opens
only there (fixtures/sealed_messages.json, made from PyNaCl's primitives alone)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.e2e import OVERHEAD, E2EError, new_task_key
from dragoon.shared.sealed_message import open_message, seal_message, sealed_size

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "sealed_messages.json").read_text())


@pytest.mark.parametrize("vector", VECTORS, ids=[v["case"] for v in VECTORS])
def test_the_vectors_open_where_they_stand_and_nowhere_else(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["task_key"])
    if vector.get("refused"):
        with pytest.raises(E2EError, match="does not open"):
            open_message(key, task_id=vector["task"], index=vector["index"],
                         sealed=vector["sealed"])
        return
    assert open_message(key, task_id=vector["task"], index=vector["index"],
                        sealed=vector["sealed"]) == vector["text"]
    text = vector["text"].encode("utf-8")
    assert sealed_size(vector["sealed"], index=vector["index"]) == len(text) + OVERHEAD


def test_a_message_opens_only_as_its_own_task_index_and_key() -> None:
    key = new_task_key()
    sealed = seal_message(key, task_id="t-aaaaaaaaaa", index=3, text="hello")
    assert open_message(key, task_id="t-aaaaaaaaaa", index=3, sealed=sealed) == "hello"
    for task, index, other in [("t-bbbbbbbbbb", 3, key), ("t-aaaaaaaaaa", 4, key),
                               ("t-aaaaaaaaaa", 3, new_task_key())]:
        with pytest.raises(E2EError):
            open_message(other, task_id=task, index=index, sealed=sealed)


@pytest.mark.parametrize("change", ["truncated", "trailing", "not base64", "not text"])
def test_what_is_not_one_whole_record_does_not_open(change: str) -> None:
    key = new_task_key()
    raw = base64.b64decode(seal_message(key, task_id="t-aaaaaaaaaa", index=0, text="hi"))
    sealed: object = {"truncated": base64.b64encode(raw[:-1]).decode(),
                      "trailing": base64.b64encode(raw + raw).decode(),
                      "not base64": "@@@", "not text": 12}[change]
    with pytest.raises(E2EError):
        open_message(key, task_id="t-aaaaaaaaaa", index=0, sealed=sealed)
    with pytest.raises(E2EError):
        sealed_size(sealed, index=0)


def test_the_relay_checks_the_form_it_can_see_without_the_key() -> None:
    sealed = seal_message(new_task_key(), task_id="t-aaaaaaaaaa", index=5, text="x" * 10)
    assert sealed_size(sealed, index=5) == 10 + OVERHEAD
    with pytest.raises(E2EError, match="index 5, not 6"):
        sealed_size(sealed, index=6)
