"""Artifact selection, fetch roots and the inbox reader: the drone's file-safety edges."""

from __future__ import annotations

import os

import pytest
from dragoon.drone import artifacts, fetch
from dragoon.drone.inbox import MESSAGE_CAP, READ_WINDOW, cap_message, split_messages


@pytest.fixture
def work(tmp_path):
    root = tmp_path / "work"
    (root / "out" / "deep" / "er").mkdir(parents=True)
    (root / "out" / "a.pt").write_bytes(b"a")
    (root / "out" / "deep" / "b.pt").write_bytes(b"bb")
    (root / "out" / "deep" / "er" / "c.pt").write_bytes(b"ccc")
    (root / "out" / "note.txt").write_text("n")
    (root / "top.pt").write_bytes(b"t")
    return root


def paths(selection: artifacts.ArtifactSelection) -> list[str]:
    return [m.path for m in selection.matches]


def test_double_star_matches_any_depth(work):
    got = artifacts.select(work, ["out/**/*.pt"], max_total=1 << 20)
    assert paths(got) == ["out/a.pt", "out/deep/b.pt", "out/deep/er/c.pt"]
    assert got.refused == []


def test_single_star_stays_in_one_folder(work):
    assert paths(artifacts.select(work, ["*.pt"], max_total=1 << 20)) == ["top.pt"]
    assert paths(artifacts.select(work, ["out/*"], max_total=1 << 20)) == [
        "out/a.pt", "out/note.txt"]


def test_trailing_double_star_takes_everything_below(work):
    got = paths(artifacts.select(work, ["out/**"], max_total=1 << 20))
    assert "out/deep/er/c.pt" in got and "top.pt" not in got


@pytest.mark.parametrize("pattern", ["../secret", "out/../../x", "/etc/passwd", "~/x"])
def test_patterns_leaving_the_work_dir_are_refused_and_reported(work, pattern):
    got = artifacts.select(work, [pattern], max_total=1 << 20)
    assert got.matches == []
    assert got.refused and got.refused[0][0] == pattern


def test_a_symlink_out_of_the_work_dir_is_refused(work, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    os.symlink(secret, work / "out" / "leak.pt")
    os.symlink(tmp_path, work / "out" / "up")
    got = artifacts.select(work, ["out/**"], max_total=1 << 20)
    refused = dict(got.refused)
    assert refused["out/leak.pt"] == "symlink leads out of the work dir"
    assert refused["out/up"] == "symlink leads out of the work dir"
    assert all(m.real.is_relative_to(work) for m in got.matches)


def test_a_symlink_inside_the_work_dir_is_followed(work):
    os.symlink(work / "top.pt", work / "out" / "alias.pt")
    got = artifacts.select(work, ["out/alias.pt"], max_total=1 << 20)
    assert paths(got) == ["out/alias.pt"] and got.matches[0].real == work / "top.pt"


def test_the_size_cap_refuses_what_does_not_fit(work):
    got = artifacts.select(work, ["out/**/*.pt"], max_total=3)
    assert paths(got) == ["out/a.pt", "out/deep/b.pt"]
    assert got.refused == [("out/deep/er/c.pt", "over the artifact size cap of 3 bytes")]


def test_sha256_is_computed_over_the_whole_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    import hashlib

    fd = os.open(path, os.O_RDONLY)
    try:
        assert artifacts.fd_sha256(fd, 3_000_000) == (
            hashlib.sha256(b"x" * 3_000_000).hexdigest(), 3_000_000)
        assert artifacts.fd_sha256(fd, 10) == (hashlib.sha256(b"x" * 10).hexdigest(), 10)
    finally:
        os.close(fd)


# ----- fetch -----

def test_fetch_serves_a_file_inside_the_roots(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "m.csv").write_text("1,2\n")
    opened = fetch.open_for_fetch(str(root / "m.csv"), [root.resolve()], max_bytes=100)
    try:
        assert os.read(opened.fd, 100) == b"1,2\n" and opened.size == 4
    finally:
        os.close(opened.fd)


@pytest.mark.parametrize("target", ["/etc/passwd", "{root}/../outside.txt", "{root}/link"])
def test_fetch_outside_the_roots_is_refused_with_the_reason(tmp_path, target):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("no")
    os.symlink(tmp_path / "outside.txt", root / "link")
    with pytest.raises(fetch.FetchRefused, match="outside the fetch roots"):
        fetch.open_for_fetch(target.format(root=root), [root.resolve()], max_bytes=100)


def test_fetch_refuses_folders_missing_files_and_oversize(tmp_path):
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "big").write_bytes(b"x" * 10)
    roots = [root.resolve()]
    with pytest.raises(fetch.FetchRefused, match="not a regular file"):
        fetch.open_for_fetch(str(root / "dir"), roots, max_bytes=100)
    with pytest.raises(fetch.FetchRefused, match="no such file"):
        fetch.open_for_fetch(str(root / "nope"), roots, max_bytes=100)
    with pytest.raises(fetch.FetchRefused, match="over the cap"):
        fetch.open_for_fetch(str(root / "big"), roots, max_bytes=5)


def test_default_fetch_root_is_the_work_dirs(tmp_path):
    assert fetch.resolve_roots([], tmp_path / "work") == [(tmp_path / "work").resolve()]


# ----- inbox -----

def test_each_complete_line_is_one_message():
    messages, consumed, skipping = split_messages(b"one\ntwo\npart", final=False,
                                                  skipping=False)
    assert [m for m, _ in messages] == [b"one", b"two"]
    assert consumed == 8 and not skipping


def test_a_last_line_without_newline_is_a_message_once_the_task_ended():
    messages, consumed, _ = split_messages(b"one\ntail", final=True, skipping=False)
    assert [m for m, _ in messages] == [b"one", b"tail"] and consumed == 8


def test_a_line_longer_than_the_window_is_cut_and_its_rest_skipped():
    data = b"y" * READ_WINDOW
    messages, consumed, skipping = split_messages(data, final=False, skipping=False)
    assert len(messages) == 1 and consumed == READ_WINDOW and skipping
    rest, consumed2, skipping2 = split_messages(b"yyy\nnext\n", final=False, skipping=True)
    assert [m for m, _ in rest] == [b"next"] and consumed2 == 9 and not skipping2


def test_messages_are_capped_at_4_kib_and_say_so():
    text = cap_message(b"z" * 10_000)
    assert len(text.encode()) <= MESSAGE_CAP
    assert "truncated: 10000 bytes" in text
    assert cap_message("épée".encode()) == "épée"
