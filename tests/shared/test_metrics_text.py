"""shared/metrics_text.py: the ``NAME=NUMBER`` tokens of a message are its metrics."""

from __future__ import annotations

import math

import pytest
from dragoon.shared.metrics_text import (
    MetricError,
    metric_text,
    metrics_message,
    parse_metric_flag,
    parse_metrics,
)


def test_the_tokens_of_the_form_are_the_metrics_the_rest_is_text() -> None:
    got = parse_metrics("epoch 3 done: loss=0.31 acc=9e-1 val/loss=-2 step:lr=1E-3 x=y =3")
    assert got == {"loss": 0.31, "acc": 0.9, "val/loss": -2.0, "step:lr": 0.001}


def test_a_later_token_wins() -> None:
    assert parse_metrics("loss=1 loss=0.5") == {"loss": 0.5}


def test_nan_and_inf_are_numbers() -> None:
    got = parse_metrics("a=nan b=inf c=-inf d=Infinity")
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf
    assert got["d"] == math.inf


@pytest.mark.parametrize("text", ["loss=0.31,", "loss=0x10", "loss=1_000", "loss= 3",
                                  "1loss=3", "loss=", "loss==3", "loss=3=4",
                                  "loss=\uff11"])
def test_tokens_outside_the_form_are_not_metrics(text: str) -> None:
    assert parse_metrics(text) == {}


def test_a_name_is_at_most_64_characters() -> None:
    assert parse_metrics("a" * 64 + "=1") == {"a" * 64: 1.0}
    assert parse_metrics("a" * 65 + "=1") == {}


def test_the_flag_keeps_the_number_as_written() -> None:
    assert parse_metric_flag("loss=1e-3") == ("loss", "1e-3")


@pytest.mark.parametrize("bad", ["loss", "loss=", "loss=fast", "9x=1", "a b=1", "=1"])
def test_a_bad_flag_is_one_line(bad: str) -> None:
    with pytest.raises(MetricError) as caught:
        parse_metric_flag(bad)
    assert "\n" not in str(caught.value)


def test_the_message_reads_back_as_its_metrics() -> None:
    text = metrics_message([("loss", "0.31"), ("acc", "0.9")], "epoch 3")
    assert text == "loss=0.31 acc=0.9 epoch 3"
    assert parse_metrics(text) == {"loss": 0.31, "acc": 0.9}
    assert metrics_message([("a", "1")]) == "a=1"


def test_a_cell_shows_a_metric_short() -> None:
    assert [metric_text(v) for v in (0.31, 1e-7, math.nan, -math.inf, 123456789.0)] == [
        "0.31", "1e-07", "nan", "-inf", "1.23457e+08"]
