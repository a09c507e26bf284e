"""Hostile files at the drone's edges: FIFOs, devices, sockets, symlinks to them, planted names.

Every file operation the drone makes on a path that a task or a pilot can
influence must return at once: a FIFO with no writer, a device, a socket or a
symlink to one of them is refused with its kind, never opened for reading in
a way that waits. Each call here runs under a guard that fails the test (and
unblocks the call) if it hangs, instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.drone import artifacts, fetch, inbox, release, safefile, state

GUARD = 10.0  # seconds a call may take before it counts as hung


def guarded(call: Callable[[], Any], *, unblock: Path | None = None) -> Any:
    """``call()``'s value (or its exception, raised here); a call still blocked fails the test.

    A hung ``open`` of a FIFO is released by opening the FIFO read-write, which
    never blocks on Linux, so the stuck thread does not outlive the test.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(GUARD)
    if worker.is_alive():
        if unblock is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(unblock, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail(f"the call blocked for {GUARD} s (it must refuse at once)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def fifo(root: Path) -> Path:
    path = root / "pipe"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    # Socket paths are limited to ~108 bytes: bind in a short cwd-relative name.
    path = tmp_path / "root" / "sock"
    path.parent.mkdir(exist_ok=True)
    here = os.getcwd()
    sock = socket.socket(socket.AF_UNIX)
    try:
        os.chdir(path.parent)
        sock.bind(path.name)
    finally:
        os.chdir(here)
    try:
        yield path
    finally:
        sock.close()


# ----- safefile: the one opener every path a task or pilot names goes through -----

def test_kinds_are_named_for_the_pilot(root: Path, fifo: Path, unix_socket: Path):
    assert safefile.kind(os.lstat(fifo).st_mode) == "FIFO"
    assert safefile.kind(os.lstat(unix_socket).st_mode) == "socket"
    assert safefile.kind(os.lstat("/dev/null").st_mode) == "character device"
    assert safefile.kind(os.lstat(root).st_mode) == "directory"
    os.symlink(fifo, root / "link")
    assert safefile.kind(os.lstat(root / "link").st_mode) == "symlink"


def test_open_regular_refuses_a_fifo_without_waiting_for_a_writer(fifo: Path):
    with pytest.raises(safefile.NotRegular, match="not a regular file: FIFO"):
        guarded(lambda: safefile.open_regular(fifo), unblock=fifo)


def test_open_regular_refuses_a_symlink_unless_asked_to_follow(root: Path, fifo: Path):
    (root / "real").write_bytes(b"data")
    os.symlink(root / "real", root / "alias")
    with pytest.raises(safefile.NotRegular, match="not a regular file: symlink"):
        safefile.open_regular(root / "alias")
    fd, st = safefile.open_regular(root / "alias", follow=True)
    try:
        assert os.read(fd, 10) == b"data" and st.st_size == 4
    finally:
        os.close(fd)
    os.symlink(fifo, root / "to-pipe")
    with pytest.raises(safefile.NotRegular, match="FIFO"):
        guarded(lambda: safefile.open_regular(root / "to-pipe", follow=True), unblock=fifo)


def test_open_regular_for_writing_refuses_a_fifo_too(fifo: Path):
    with pytest.raises(safefile.NotRegular, match="FIFO"):
        guarded(lambda: safefile.open_regular(fifo, os.O_WRONLY), unblock=fifo)


# ----- fetch -----

def test_fetching_a_fifo_is_refused_at_once_with_its_kind(root: Path, fifo: Path):
    with pytest.raises(fetch.FetchRefused, match="not a regular file: FIFO"):
        guarded(lambda: fetch.open_for_fetch(str(fifo), [root.resolve()], max_bytes=100),
                unblock=fifo)


def test_fetching_a_symlink_to_a_fifo_is_refused(root: Path, fifo: Path):
    os.symlink(fifo, root / "innocent.csv")
    with pytest.raises(fetch.FetchRefused, match="not a regular file: FIFO"):
        guarded(lambda: fetch.open_for_fetch(str(root / "innocent.csv"), [root.resolve()],
                                             max_bytes=100), unblock=fifo)


def test_fetching_a_socket_a_device_or_a_folder_says_which(root: Path, unix_socket: Path):
    roots = [root.resolve()]
    with pytest.raises(fetch.FetchRefused, match="not a regular file: socket"):
        guarded(lambda: fetch.open_for_fetch(str(unix_socket), roots, max_bytes=100))
    with pytest.raises(fetch.FetchRefused, match="not a regular file: directory"):
        guarded(lambda: fetch.open_for_fetch(str(root), roots, max_bytes=100))
    # A fetch root that holds devices (an operator who set "/"): /dev/zero is never read.
    for device in ("/dev/zero", "/dev/null", "/dev/tty"):
        with pytest.raises(fetch.FetchRefused, match="not a regular file: character device"):
            guarded(lambda device=device: fetch.open_for_fetch(device, [Path("/dev")],
                                                               max_bytes=100))


# ----- artifacts -----

def test_artifact_globs_matching_a_fifo_a_socket_or_a_link_to_them_refuse_with_the_kind(
        root: Path, fifo: Path, unix_socket: Path):
    (root / "model.pt").write_bytes(b"m")
    os.symlink(fifo, root / "pipe-link")
    got = guarded(lambda: artifacts.select(root, ["*"], max_total=1 << 20))
    assert [m.path for m in got.matches] == ["model.pt"]
    assert dict(got.refused) == {
        "pipe": "not a regular file: FIFO",
        "pipe-link": "not a regular file: FIFO",
        "sock": "not a regular file: socket",
    }


def test_an_artifact_swapped_for_a_fifo_after_selection_is_refused_at_upload(root: Path):
    (root / "model.pt").write_bytes(b"m")
    got = artifacts.select(root, ["*.pt"], max_total=1 << 20)
    assert [m.path for m in got.matches] == ["model.pt"]
    os.unlink(root / "model.pt")
    os.mkfifo(root / "model.pt")
    with pytest.raises(artifacts.ArtifactRefused, match="not a regular file: FIFO"):
        guarded(lambda: artifacts.open_match(root, got.matches[0].real),
                unblock=root / "model.pt")


def test_an_artifact_swapped_for_a_link_out_of_the_work_dir_is_refused_at_upload(
        root: Path, tmp_path: Path):
    (root / "model.pt").write_bytes(b"m")
    (tmp_path / "secret").write_bytes(b"s")
    got = artifacts.select(root, ["*.pt"], max_total=1 << 20)
    os.unlink(root / "model.pt")
    os.symlink(tmp_path / "secret", root / "model.pt")
    with pytest.raises(artifacts.ArtifactRefused, match="symlink leads out of the work dir"):
        artifacts.open_match(root, got.matches[0].real)


def test_an_artifact_is_opened_read_only_with_its_size(root: Path):
    (root / "model.pt").write_bytes(b"model")
    fd, size = artifacts.open_match(root, root / "model.pt")
    try:
        assert size == 5 and os.pread(fd, 10, 0) == b"model"
    finally:
        os.close(fd)


def test_streaming_an_artifact_reads_off_the_event_loop(root: Path):
    blob = os.urandom(artifacts.READ_BLOCK * 3 + 17)
    (root / "blob").write_bytes(blob)
    fd = os.open(root / "blob", os.O_RDONLY)
    reader_threads: set[int] = set()

    async def collect() -> bytes:
        loop_thread = threading.get_ident()
        real_pread = os.pread

        def spying_pread(*args: Any) -> bytes:
            reader_threads.add(threading.get_ident())
            return real_pread(*args)

        os.pread = spying_pread  # type: ignore[assignment]
        try:
            parts = [part async for part in artifacts.stream_fd(fd, len(blob))]
        finally:
            os.pread = real_pread  # type: ignore[assignment]
        assert loop_thread not in reader_threads
        return b"".join(parts)

    try:
        assert asyncio.run(collect()) == blob
    finally:
        os.close(fd)


# ----- the drone's own records in the task dir (which the task can write to) -----

def test_read_json_of_a_planted_fifo_is_none_at_once(root: Path, fifo: Path):
    assert guarded(lambda: state.read_json(fifo), unblock=fifo) is None


def test_read_json_of_a_planted_symlink_is_none(root: Path):
    (root / "elsewhere.json").write_text('{"exit_code": 0}')
    os.symlink(root / "elsewhere.json", root / "exit.json")
    assert state.read_json(root / "exit.json") is None
    assert state.read_json(root / "elsewhere.json") == {"exit_code": 0}


def test_write_atomic_over_a_planted_fifo_or_symlink_at_its_temp_name(root: Path, tmp_path: Path):
    target = root / "result.json"
    os.mkfifo(root / ".result.json.tmp")
    guarded(lambda: state.write_json(target, {"a": 1}), unblock=root / ".result.json.tmp")
    assert state.read_json(target) == {"a": 1}
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, root / ".result.json.tmp")
    state.write_json(target, {"a": 2})
    assert victim.read_text() == "keep me"
    assert state.read_json(target) == {"a": 2}
    assert os.stat(target).st_mode & 0o777 == 0o600


# ----- the inbox -----

def test_reading_an_inbox_replaced_by_a_fifo_is_refused_at_once(root: Path, fifo: Path):
    with pytest.raises(safefile.NotRegular, match="FIFO"):
        guarded(lambda: inbox.read_window(fifo, 0), unblock=fifo)


def test_reading_an_inbox_replaced_by_a_symlink_to_dev_zero_is_refused(root: Path):
    os.symlink("/dev/zero", root / "inbox")
    with pytest.raises(safefile.NotRegular, match="symlink"):
        guarded(lambda: inbox.read_window(root / "inbox", 0))


def test_reading_an_inbox_stops_at_its_cap(root: Path):
    path = root / "inbox"
    with open(path, "wb") as handle:
        handle.truncate(inbox.MAX_INBOX_BYTES + (10 << 30))  # sparse: 10 GiB past the cap
    data, size = inbox.read_window(path, inbox.MAX_INBOX_BYTES - 10)
    assert len(data) == 10 and size == inbox.MAX_INBOX_BYTES + (10 << 30)
    assert inbox.read_window(path, inbox.MAX_INBOX_BYTES) == (b"", size)


# ----- the spool -----

def test_punching_a_spool_replaced_by_a_fifo_returns_at_once(root: Path, fifo: Path):
    assert guarded(lambda: release.punch(fifo, 200 << 20), unblock=fifo) is False


def test_a_nul_in_an_inbox_line_still_makes_a_message_the_relay_takes():
    # The relay refuses text with NUL (422); a line holding one must not be retried forever.
    assert inbox.cap_message(b"a\x00b") == "a\ufffdb"
    assert "\x00" not in inbox.cap_message(b"\x00" * 10_000)


def test_a_symlink_loop_is_refused_by_fetch_and_by_artifacts(root: Path):
    os.symlink(root / "a", root / "b")
    os.symlink(root / "b", root / "a")
    (root / "fine.pt").write_bytes(b"f")
    # "symlink loop" from resolve(), or (Python 3.13, which resolves loops to themselves)
    # "not a regular file: symlink" from the open: refused either way, never raised raw.
    with pytest.raises(fetch.FetchRefused, match="symlink"):
        fetch.open_for_fetch(str(root / "a"), [root.resolve()], max_bytes=100)
    got = artifacts.select(root, ["*"], max_total=1 << 20)
    assert [m.path for m in got.matches] == ["fine.pt"]
    assert dict(got.refused) == {"a": "symlink loop", "b": "symlink loop"}
