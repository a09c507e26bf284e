"""Acknowledged spool bytes give their disk back while the task runs on (sparse, same offsets)."""

from __future__ import annotations

import os

from dragoon.drone.release import BLOCK, MARGIN, STEP, Releaser, punch


def test_punching_frees_the_acknowledged_prefix_and_keeps_offsets(tmp_path):
    spool = tmp_path / "stdout"
    data = os.urandom(8 * BLOCK + 123)
    spool.write_bytes(data)
    before = spool.stat().st_blocks
    assert punch(spool, 5 * BLOCK + 77)
    after = spool.stat()
    assert after.st_size == len(data)
    assert after.st_blocks < before
    with open(spool, "rb") as handle:
        assert os.pread(handle.fileno(), 16, 0) == bytes(16)
        assert os.pread(handle.fileno(), 3 * BLOCK + 123, 5 * BLOCK) == data[5 * BLOCK:]


def test_nothing_below_a_whole_block_is_punched(tmp_path):
    spool = tmp_path / "stdout"
    spool.write_bytes(b"x" * 1000)
    assert not punch(spool, 999)
    assert spool.read_bytes() == b"x" * 1000


def test_the_releaser_keeps_a_margin_and_punches_in_steps(tmp_path):
    spool = tmp_path / "stdout"
    with open(spool, "wb") as handle:
        handle.write(b"y" * (MARGIN + STEP + 2 * BLOCK))
    releaser = Releaser(spool)
    releaser.acknowledged(MARGIN + STEP - BLOCK)  # not a full step past the margin yet
    assert releaser.released == 0
    releaser.acknowledged(MARGIN + STEP + BLOCK)
    assert releaser.released == STEP + BLOCK
    with open(spool, "rb") as handle:
        assert os.pread(handle.fileno(), 4, STEP + BLOCK - 4) == bytes(4)
        assert os.pread(handle.fileno(), 4, STEP + BLOCK) == b"yyyy"
