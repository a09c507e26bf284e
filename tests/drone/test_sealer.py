"""The drone's sealed spool (drone/sealer.py): plaintext in, records out, exactly once across
a restart; what the pilot opens is the wrapper's bytes, whole, with one final record."""

from __future__ import annotations

import json
from pathlib import Path

from dragoon.drone.sealer import RECORD, SealedSpool
from dragoon.shared import e2e

KEY = bytes(range(32))
TASK = "t-aaaaaaaaaa"


def spool(folder: Path) -> SealedSpool:
    return SealedSpool(task_key=KEY, task_id=TASK, stream="stdout", plain=folder / "stdout")


def opened(folder: Path) -> tuple[bytes, bool]:
    reader = e2e.RecordReader(KEY, task_id=TASK, kind="out", name="stdout")
    data = reader.feed((folder / "stdout.rec").read_bytes())
    assert reader.partial == 0
    return data, reader.finished


def test_plaintext_is_sealed_as_it_comes_and_ended_once(tmp_path: Path) -> None:
    plain = tmp_path / "stdout"
    plain.write_bytes(b"one\n")
    sealer = spool(tmp_path)
    assert sealer.seal_new(exited=False)
    assert not sealer.seal_new(exited=False)  # nothing new: no empty record
    with plain.open("ab") as out:
        out.write(b"two\n")
    assert sealer.seal_new(exited=True)
    assert not sealer.seal_new(exited=True)  # the final record is sealed once
    assert opened(tmp_path) == (b"one\ntwo\n", True)
    assert sealer.size == (tmp_path / "stdout.rec").stat().st_size


def test_a_big_write_is_cut_into_records_a_reader_takes_whole(tmp_path: Path) -> None:
    data = bytes(range(256)) * (RECORD // 256 * 2 + 3)
    (tmp_path / "stdout").write_bytes(data)
    sealer = spool(tmp_path)
    sealer.seal_new(exited=True)
    assert opened(tmp_path) == (data, True)
    assert sealer.size == len(data) + 3 * e2e.OVERHEAD  # 2 full records, a ragged third


def test_a_restart_resumes_where_the_sealed_spool_ends_and_cuts_a_torn_record(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "stdout"
    plain.write_bytes(b"first\n")
    first = spool(tmp_path)
    first.seal_new(exited=False)
    whole = first.size
    first.close()
    # The drone died half way through writing the next record.
    with plain.open("ab") as out:
        out.write(b"second\n")
    torn = e2e.RecordWriter(KEY, task_id=TASK, kind="out", name="stdout",
                            at=e2e.Position(1, 6)).seal(b"second\n")
    with (tmp_path / "stdout.rec").open("ab") as out:
        out.write(torn[:30])
    (tmp_path / "stdout.rec.json").unlink(missing_ok=True)  # walk from the start
    again = spool(tmp_path)
    assert again.size == whole and again.sealed_plain == 6 and not again.finished
    assert (tmp_path / "stdout.rec").stat().st_size == whole  # the torn tail is gone
    again.seal_new(exited=True)
    assert opened(tmp_path) == (b"first\nsecond\n", True)


def test_a_restart_after_the_final_record_seals_nothing_more(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"done\n")
    first = spool(tmp_path)
    first.seal_new(exited=True)
    first.close()
    before = (tmp_path / "stdout.rec").read_bytes()
    for checkpoint in (True, False):  # from its checkpoint, and walking every header
        if not checkpoint:
            (tmp_path / "stdout.rec.json").unlink()
        again = spool(tmp_path)
        assert again.finished and not again.seal_new(exited=True)
        again.close()
    assert (tmp_path / "stdout.rec").read_bytes() == before


def test_the_checkpoint_names_a_record_boundary(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"x" * 1000)
    sealer = spool(tmp_path)
    sealer.seal_new(exited=False)
    sealer.checkpoint()
    mark = json.loads((tmp_path / "stdout.rec.json").read_text())
    assert mark == {"size": 1000 + e2e.OVERHEAD, "index": 1, "offset": 1000, "final": False}


def test_a_spool_the_task_replaced_by_a_fifo_is_an_empty_stream_still_ended(
    tmp_path: Path,
) -> None:
    import os

    os.mkfifo(tmp_path / "stdout")
    sealer = spool(tmp_path)
    sealer.seal_new(exited=True)
    assert opened(tmp_path) == (b"", True)


def test_the_sealed_spool_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep")
    (tmp_path / "stdout").write_bytes(b"out")
    (tmp_path / "stdout.rec").symlink_to(elsewhere)
    sealer = spool(tmp_path)
    sealer.seal_new(exited=True)
    assert elsewhere.read_bytes() == b"keep"
    assert not (tmp_path / "stdout.rec").is_symlink()
    assert opened(tmp_path) == (b"out", True)


def test_a_huge_spool_is_sealed_a_step_at_a_time_not_all_at_once(tmp_path: Path) -> None:
    """A task that wrote far ahead of the relay (gigabytes, here 10 MiB) costs the drone a
    step of sealing per call, never a copy of the whole spool in memory or on disk: the
    shipper calls again as the relay acknowledges (drone/shipper.py SEAL_AHEAD)."""
    from dragoon.drone.sealer import SEAL_STEP

    data = bytes(range(256)) * (10 * (1 << 20) // 256)
    (tmp_path / "stdout").write_bytes(data)
    sealer = spool(tmp_path)
    assert sealer.seal_new(exited=True)
    assert sealer.sealed_plain == SEAL_STEP and not sealer.finished
    assert sealer.seal_new(exited=True, limit=100)  # a small room: a small step
    assert sealer.sealed_plain == SEAL_STEP + 100
    steps = 0
    while sealer.seal_new(exited=True):
        steps += 1
    assert steps == -(-(len(data) - SEAL_STEP - 100) // SEAL_STEP)  # each call one step
    assert sealer.finished and opened(tmp_path) == (data, True)
