"""Sizes and durations as relay.toml and the admin commands take them (relay/units.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dragoon.relay.config import ConfigError, RelayConfig
from dragoon.relay.units import format_size, optional_duration, optional_size, parse_size


@pytest.mark.parametrize(("text", "size"), [
    ("4096", 4096), (4096, 4096), ("512K", 512 << 10), ("512k", 512 << 10), ("50G", 50 << 30),
    ("50GiB", 50 << 30), ("1.5T", 3 << 39), (" 2M ", 2 << 20), ("0", 0), ("50GB", 50 * 10**9),
])
def test_sizes_read_as_df_prints_them_and_gb_is_decimal(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1", "5X", "1,5G", "50 gigs", -1, True])
def test_a_bad_size_says_what_a_size_looks_like(text: str | int) -> None:
    with pytest.raises(ValueError, match="is not a size like"):
        parse_size(text)


def test_none_turns_a_quota_or_the_retention_off() -> None:
    assert optional_size("none") is None and optional_size("off") is None
    assert optional_size("10K") == 10240
    assert optional_duration("none") is None
    assert optional_duration("30d") == 30 * 86400 and optional_duration(90) == 90.0


def test_sizes_read_as_a_person_writes_them() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 8000, 50 << 30)] == [
        "0 B", "1023 B", "1.0 KiB", "7.8 KiB", "50.0 GiB"]


def test_config_defaults_keep_a_month_and_set_no_quota(tmp_path: Path) -> None:
    config = RelayConfig.load(tmp_path)
    assert config.retention_seconds == 30 * 86400
    assert config.drone_quota_bytes is None and config.storage_quota_bytes is None


def test_config_reads_sizes_and_durations_from_relay_toml(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(
        'retention = "7d"\ndrone_quota = "50G"\nstorage_quota = 1073741824\n')
    config = RelayConfig.load(tmp_path)
    assert config.retention_seconds == 7 * 86400
    assert (config.drone_quota_bytes, config.storage_quota_bytes) == (50 << 30, 1 << 30)


@pytest.mark.parametrize(("line", "message"), [
    ('drone_quota = "lots"', "relay.toml: drone_quota: 'lots' is not a size like "),
    ('retention = "soon"', "relay.toml: retention: 'soon' is not a duration like "),
    ("retention = [", "relay.toml: Invalid value"),  # after the file's full path
])
def test_a_bad_setting_is_a_config_error_with_its_name(
    tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "relay.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        RelayConfig.load(tmp_path)
