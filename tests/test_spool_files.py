"""Spool files made ahead (storage/spool_files.py): a call's three files are empty files made by a
thread of their own and given their names in the spool as the call starts, so the capture thread
never waits for the file system's inode allocation; on real directories, a real tmpfs, real replays."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool, small_tmpfs

from storage.spool_files import SpoolFiles


def ready(files: SpoolFiles, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(files._ready) < n:
        assert time.monotonic() < deadline, "the files were not made"
        time.sleep(0.005)


def test_a_new_spool_file_is_one_made_ahead_given_its_name(tmp_path: Path) -> None:
    spool, pool = tmp_path / "spool", tmp_path / "spool-new"
    spool.mkdir()
    files = SpoolFiles(str(pool), ready=4).start()
    try:
        ready(files, 4)
        made = {os.stat(pool / name).st_ino for name in os.listdir(pool)}
        fd = files.create(str(spool / "r1.wav"), os.O_WRONLY)
        try:
            here = os.lstat(spool / "r1.wav")
            assert os.fstat(fd).st_ino == here.st_ino and here.st_ino in made  # one of those made ahead
            assert stat.S_IMODE(here.st_mode) == 0o600 and here.st_nlink == 1  # its ready name gone
            assert len(os.listdir(pool)) == 3 and files.taken == 1 and files.made_here == 0
            os.write(fd, b"sealed bytes")
            assert (spool / "r1.wav").read_bytes() == b"sealed bytes"
        finally:
            os.close(fd)
    finally:
        files.close()
    assert len(os.listdir(pool)) >= 3  # those still ready stay for the next start, empty
    assert all(os.stat(pool / n).st_size == 0 for n in os.listdir(pool))
    assert stat.S_IMODE(os.stat(pool).st_mode) == 0o700


def test_a_name_already_there_is_refused_as_o_excl_would(tmp_path: Path) -> None:
    """An existing file and a symbolic link (dangling, or to a file elsewhere) at the name: refused
    with FileExistsError; the file is untouched, nothing is created through the link."""
    spool, pool = tmp_path / "spool", tmp_path / "spool-new"
    spool.mkdir()
    (spool / "taken.wav").write_bytes(b"first")
    (spool / "dangling.wav").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "victim").write_bytes(b"victim")
    (spool / "link.wav").symlink_to(tmp_path / "victim")
    files = SpoolFiles(str(pool), ready=8).start()
    try:
        ready(files, 8)
        for name in ("taken.wav", "dangling.wav", "link.wav"):
            with pytest.raises(FileExistsError):
                files.create(str(spool / name), os.O_WRONLY)
        assert (spool / "taken.wav").read_bytes() == b"first" and not (tmp_path / "elsewhere").exists()
        assert (tmp_path / "victim").read_bytes() == b"victim"
        assert len(os.listdir(pool)) <= 8 and files.taken == 0  # the files tried are not left behind
    finally:
        files.close()


def test_a_spool_on_another_file_system_makes_its_files_where_needed(tmp_path: Path) -> None:
    """The spool a mount of its own (a real tmpfs): giving a file made on the store's file system a
    name there fails (EXDEV), so that file and every one after it is made in the spool itself."""
    pool = tmp_path / "spool-new"
    with small_tmpfs(tmp_path / "spool", "1m") as spool:
        files = SpoolFiles(str(pool), ready=4).start()
        try:
            ready(files, 4)
            fds = [files.create(str(spool / f"r{i}.wav"), os.O_WRONLY) for i in range(3)]
            for fd in fds:
                os.write(fd, b"x")
                os.close(fd)
            assert sorted(os.listdir(spool)) == ["r0.wav", "r1.wav", "r2.wav"]
            assert files.taken == 0 and files.made_here == 3
            assert os.stat(spool / "r0.wav").st_dev != os.stat(pool).st_dev
        finally:
            files.close()
        assert os.listdir(pool) == []


def test_a_file_system_out_of_inodes_is_said_once_and_the_ready_files_still_serve(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Store and spool on a real ext4 (a loop device) made with a handful of inodes: the thread
    makes what it can, says once that it cannot make more (not once per call that wakes it), the
    files it made are still given out (a name needs no inode), and then a call's own file fails."""
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root")
    needs_tool("losetup")
    needs_tool("mkfs.ext4")
    image, root = tmp_path / "few-inodes.img", tmp_path / "store"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-N", "16", str(image)], check=True)
    root.mkdir()
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(root)], check=True)
        try:
            (root / "spool").mkdir()
            files = SpoolFiles(str(root / "spool-new"), ready=64).start()
            try:
                deadline = time.monotonic() + 10
                while not files._failing:
                    assert time.monotonic() < deadline, "the file system never ran out of inodes"
                    time.sleep(0.005)
                made = len(files._ready)
                assert 0 < made < 64
                for i in range(made):
                    os.close(files.create(str(root / "spool" / f"r{i}.wav"), os.O_WRONLY))
                    time.sleep(0.01)  # each take wakes the thread, which fails again
                assert files.taken == made and len(os.listdir(root / "spool")) == made
                with pytest.raises(OSError) as refused:  # none ready, none can be made: the call's own error
                    files.create(str(root / "spool" / "more.wav"), os.O_WRONLY)
                assert refused.value.errno == errno.ENOSPC
            finally:
                files.close()
        finally:
            subprocess.run(["umount", str(root)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    said = [r for r in caplog.records if getattr(r, "EVENT", "") == "spool-files-failed"]
    assert len(said) == 1


def test_start_takes_the_empty_files_left_ready_and_removes_anything_else(tmp_path: Path) -> None:
    """What an earlier run left in spool-new/: its empty 0600 files are taken again (and given out as
    spool files); a file with bytes in it, one readable by others, one with a second name and a
    symbolic link are removed, nothing is followed through the link, and a folder is left alone."""
    pool, spool = tmp_path / "spool-new", tmp_path / "spool"
    pool.mkdir()
    spool.mkdir()
    for i in range(3):
        os.close(os.open(pool / f"empty{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    (pool / "readable").write_bytes(b"")
    os.chmod(pool / "readable", 0o644)
    (pool / "full").write_bytes(b"not empty")
    (pool / "twice").write_bytes(b"")
    os.link(pool / "twice", tmp_path / "other-name")
    (tmp_path / "target").write_bytes(b"")
    (pool / "link").symlink_to(tmp_path / "target")
    (pool / "folder").mkdir()
    left = {os.stat(pool / f"empty{i}").st_ino for i in range(3)}
    files = SpoolFiles(str(pool), ready=2).start()
    try:
        names = set(os.listdir(pool))
        assert not names & {"full", "readable", "twice", "link"} and "folder" in names
        assert (tmp_path / "target").exists() and (tmp_path / "other-name").read_bytes() == b""
        given = set()
        for i in range(3):
            fd = files.create(str(spool / f"r{i}.wav"), os.O_WRONLY)
            given.add(os.fstat(fd).st_ino)
            os.close(fd)
        assert given == left  # the files left ready, taken first
    finally:
        files.close()


def test_a_folder_in_spool_new_is_left_alone_and_the_start_goes_on(tmp_path: Path) -> None:
    """A folder with a file in it (a technician's): the start neither fails nor empties it."""
    pool = tmp_path / "spool-new"
    (pool / "junk").mkdir(parents=True)
    (pool / "junk" / "note").write_bytes(b"x")
    files = SpoolFiles(str(pool), ready=2).start()
    try:
        ready(files, 2)
        assert (pool / "junk" / "note").read_bytes() == b"x"
    finally:
        files.close()


def test_a_file_made_ahead_that_is_gone_is_made_where_needed(tmp_path: Path) -> None:
    """The ready files removed from under it (a clean-up of what look like empty files): each call
    still gets its file, made where it is needed, instead of failing."""
    pool, spool = tmp_path / "spool-new", tmp_path / "spool"
    spool.mkdir()
    files = SpoolFiles(str(pool), ready=4).start()
    try:
        ready(files, 4)
        files._stopping = True  # no more made meanwhile: the four gone are the ones it holds
        for name in os.listdir(pool):
            os.unlink(pool / name)
        for i in range(4):
            fd = files.create(str(spool / f"r{i}.call.json"), os.O_WRONLY)
            os.close(fd)
        assert sorted(os.listdir(spool)) == [f"r{i}.call.json" for i in range(4)]
        assert files.taken == 0 and files.made_here == 4
    finally:
        files.close()


def test_a_second_process_on_the_store_makes_its_own_files(tmp_path: Path) -> None:
    """Two makers on one spool-new/ (recorderd replay beside the service): the second finds it
    locked, takes none of the first's files and makes its own where needed; the first's files all
    still serve it."""
    pool, spool = tmp_path / "spool-new", tmp_path / "spool"
    spool.mkdir()
    first = SpoolFiles(str(pool), ready=4).start()
    try:
        ready(first, 4)
        second = SpoolFiles(str(pool), ready=4).start()
        try:
            assert second._ready == [] and second._thread is None
            os.close(second.create(str(spool / "b.wav"), os.O_WRONLY))
            assert second.made_here == 1 and second.taken == 0
            for i in range(4):
                os.close(first.create(str(spool / f"a{i}.wav"), os.O_WRONLY))
            assert first.taken == 4
        finally:
            second.close()
    finally:
        first.close()
    again = SpoolFiles(str(pool), ready=4).start()  # the lock let go with the first
    try:
        assert again._thread is not None
    finally:
        again.close()


def test_a_replay_takes_its_spool_files_made_ahead_and_leaves_none(site: Site, capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``recorderd replay`` of the demo day: every spool file a call opened was one made ahead (none
    ready: made where needed), every recording kept and verified, the spool empty afterwards and
    spool-new/ holding only empty files."""
    seen: list[SpoolFiles] = []
    real_close = SpoolFiles.close

    def close(self: SpoolFiles) -> None:
        seen.append(self)
        real_close(self)

    monkeypatch.setattr(SpoolFiles, "close", close)
    assert site.replay(FIXTURES / "demo-day.pcap") == 0
    rows = site.list(capsys)
    [files] = seen
    assert rows and files.taken + files.made_here >= 2 * len(rows) and files.taken > 0
    assert site.spool_files() == []
    assert all(p.stat().st_size == 0 for p in (site.store / "spool-new").iterdir())  # ready ones, empty
    assert site.ctl("verify") == 0


def test_decommission_removes_files_made_ahead(site: Site, tmp_path: Path) -> None:
    """What a crash (empty files) or a technician (a folder, a link) left in spool-new/: decommission
    removes it all, follows no link, and certifies the store gone."""
    pool = site.store / "spool-new"
    pool.mkdir(mode=0o700, exist_ok=True)
    (pool / "0123456789abcdef").write_bytes(b"")
    (pool / "folder").mkdir()
    (pool / "folder" / "note").write_bytes(b"x")
    (tmp_path / "outside").write_bytes(b"kept")
    (pool / "link").symlink_to(tmp_path / "outside")
    assert site.ctl("decommission", "--confirm", "--certificate", str(tmp_path / "cert")) == 0
    assert os.listdir(pool) == [] and (tmp_path / "outside").read_bytes() == b"kept"
    assert json.loads((tmp_path / "cert.json").read_text(encoding="utf-8"))["verification"].startswith("passed")
