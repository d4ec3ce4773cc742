"""Spool files made ahead (storage/spool_files.py): a call's three files are files made without a
name (O_TMPFILE) by a thread of their own and named in the spool as the call starts, so the capture
thread never waits for the file system's inode allocation; on real directories, a real ext4 and
FAT on loop devices, real processes killed, real replays."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site, needs_root, needs_tool, small_tmpfs

from storage.spool_files import SpoolFiles


def ready(files: SpoolFiles, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(files._ready) < n:
        assert time.monotonic() < deadline, "the files were not made"
        time.sleep(0.005)


def test_a_new_spool_file_is_one_made_ahead_given_its_name(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    files = SpoolFiles(str(spool), ready=4).start()
    try:
        ready(files, 4)
        assert os.listdir(spool) == []  # made, and no name anywhere yet
        made = {os.fstat(fd).st_ino for fd, _, _ in files._ready}
        fd = files.create(str(spool / "r1.wav"), os.O_WRONLY)
        try:
            here = os.lstat(spool / "r1.wav")
            assert os.fstat(fd).st_ino == here.st_ino and here.st_ino in made  # one of those made ahead
            assert stat.S_IMODE(here.st_mode) == 0o600 and here.st_nlink == 1 and here.st_uid == os.geteuid()
            assert os.listdir(spool) == ["r1.wav"] and files.taken == 1 and files.made_here == 0
            os.write(fd, b"sealed bytes")
            assert (spool / "r1.wav").read_bytes() == b"sealed bytes"
        finally:
            os.close(fd)
    finally:
        files.close()
    assert os.listdir(spool) == ["r1.wav"]  # those still ready are gone with their descriptors
    assert not (tmp_path / "spool-new").exists()


def test_a_name_already_there_is_refused_as_o_excl_would(tmp_path: Path) -> None:
    """An existing file and a symbolic link (dangling, or to a file elsewhere) at the name: refused
    with FileExistsError; the file is untouched, nothing is created through the link."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "taken.wav").write_bytes(b"first")
    (spool / "dangling.wav").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "victim").write_bytes(b"victim")
    (spool / "link.wav").symlink_to(tmp_path / "victim")
    files = SpoolFiles(str(spool), ready=8).start()
    try:
        ready(files, 8)
        for name in ("taken.wav", "dangling.wav", "link.wav"):
            with pytest.raises(FileExistsError):
                files.create(str(spool / name), os.O_WRONLY)
        assert (spool / "taken.wav").read_bytes() == b"first" and not (tmp_path / "elsewhere").exists()
        assert (tmp_path / "victim").read_bytes() == b"victim"
        assert sorted(os.listdir(spool)) == ["dangling.wav", "link.wav", "taken.wav"] and files.taken == 0
    finally:
        files.close()


@contextlib.contextmanager
def loop_mounted(tmp_path: Path, *mkfs: str, size: str = "8M") -> Iterator[Path]:
    """A real file system made by ``mkfs`` on a loop device, mounted at tmp_path/mnt (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root")
    needs_tool("losetup")
    needs_tool(mkfs[0])
    image, root = tmp_path / "fs.img", tmp_path / "mnt"
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    root.mkdir()
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(root)], check=True)
        try:
            yield root
        finally:
            subprocess.run(["umount", str(root)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_without_proc_the_files_are_made_where_needed(tmp_path: Path) -> None:
    """A process that sees no /proc (a mount namespace with an empty tmpfs over it, as a service
    sandboxed without it would): an unnamed file could never be given its name, so none is made;
    it says so once, and every call's file is made in the spool where it is needed."""
    needs_root("a mount namespace needs root", "unshare")
    spool = tmp_path / "spool"
    spool.mkdir()
    script = (
        "import logging, os, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)\n"
        "from storage.spool_files import SpoolFiles\n"
        f"f = SpoolFiles({str(spool)!r}, ready=4).start()\n"
        f"fds = [f.create({str(spool)!r} + f'/r{{i}}.wav', os.O_WRONLY) for i in range(3)]\n"
        "[os.write(fd, b'x') for fd in fds]\n"
        "print('thread', f._thread is not None, 'taken', f.taken, 'made_here', f.made_here)\n"
        "f.close()\n")
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          f'mount -t tmpfs none /proc && exec "{sys.executable}" -c "$0"', script],
                         cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "thread False taken 0 made_here 3"
    assert sum("spool files are made as calls start" in line for line in lines) == 1
    assert sorted(os.listdir(spool)) == ["r0.wav", "r1.wav", "r2.wav"]
    assert all((spool / f"r{i}.wav").read_bytes() == b"x" for i in range(3))


def test_a_file_system_out_of_inodes_is_said_once_and_the_ready_files_still_serve(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The spool on a real ext4 (a loop device) made with a handful of inodes: the thread makes
    what it can, says once that it cannot make more (not once per call that wakes it), the files it
    made are still given out (a name needs no inode), and then a call's own file fails."""
    with loop_mounted(tmp_path, "mkfs.ext4", "-q", "-N", "16") as root:
        (root / "spool").mkdir()
        files = SpoolFiles(str(root / "spool"), ready=64).start()
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
    said = [r for r in caplog.records if getattr(r, "EVENT", "") == "spool-files-failed"]
    assert len(said) == 1


def test_a_killed_process_leaves_no_file_it_made_ahead(tmp_path: Path) -> None:
    """A process holding files made ahead is killed (SIGKILL: no clean-up of its own): the spool (a
    file system of its own, a real tmpfs, so its inode count is this test's alone) holds only the
    file it had named, and every inode it held ready is free again."""
    with small_tmpfs(tmp_path / "spool", "1m") as spool:
        free = os.statvfs(spool).f_ffree
        child = subprocess.Popen(
            [sys.executable, "-c", (
                "import os, sys, time\n"
                "from storage.spool_files import SpoolFiles\n"
                f"f = SpoolFiles({str(spool)!r}, ready=32).start()\n"
                "while len(f._ready) < 32: time.sleep(0.005)\n"
                f"os.close(f.create({str(spool / 'named.wav')!r}, os.O_WRONLY))\n"
                "print(len(f._ready), flush=True)\n"
                "time.sleep(60)\n")],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            held = int(child.stdout.readline())
            assert held >= 16 and os.listdir(spool) == ["named.wav"]
            assert os.statvfs(spool).f_ffree <= free - 1 - held  # the files held are real inodes, unnamed
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert os.listdir(spool) == ["named.wav"]
        assert os.statvfs(spool).f_ffree == free - 1  # only the named one is left


def test_start_clears_an_earlier_releases_spool_new(tmp_path: Path) -> None:
    """What the first edition left in spool-new/ (empty named files made ahead), with a link and a
    technician's folder: the files and the link removed (nothing followed through the link), the
    folder left with what is in it, and no file of it ever given out as a spool file."""
    pool, spool = tmp_path / "spool-new", tmp_path / "spool"
    pool.mkdir()
    spool.mkdir()
    for i in range(3):
        os.close(os.open(pool / f"empty{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    (tmp_path / "target").write_bytes(b"kept")
    (pool / "link").symlink_to(tmp_path / "target")
    (pool / "folder").mkdir()
    (pool / "folder" / "note").write_bytes(b"x")
    files = SpoolFiles(str(spool), ready=2, old_pool=str(pool)).start()
    try:
        assert os.listdir(pool) == ["folder"] and (pool / "folder" / "note").read_bytes() == b"x"
        assert (tmp_path / "target").read_bytes() == b"kept"
        os.close(files.create(str(spool / "r.wav"), os.O_WRONLY))
        assert files.taken == 1 and files.made_here == 0  # a file made ahead now (the old ones' inodes may be reused)
    finally:
        files.close()
    empty = tmp_path / "empty-pool"
    empty.mkdir()
    (empty / "0123456789abcdef").write_bytes(b"")
    SpoolFiles(str(spool), ready=2, old_pool=str(empty)).start().close()
    assert not empty.exists()  # emptied, then removed


def test_two_processes_on_one_spool_each_make_their_own_ahead(tmp_path: Path) -> None:
    """recorderd replay beside the service: a second process makes files ahead in the same spool
    and names them while this one does too; each names only the files it made itself."""
    spool = tmp_path / "spool"
    spool.mkdir()
    # 8 made ahead and 4 taken: never below half, so no file is made ahead again while the test
    # names its four (a refill could be named in their place, and not be in the set taken first)
    first = SpoolFiles(str(spool), ready=8).start()
    try:
        ready(first, 8)
        mine = {ino for _, _, ino in first._ready}
        other = subprocess.run(
            [sys.executable, "-c", (
                "import os, time\n"
                "from storage.spool_files import SpoolFiles\n"
                f"f = SpoolFiles({str(spool)!r}, ready=8).start()\n"
                "while len(f._ready) < 8: time.sleep(0.005)\n"
                "made = {ino for _, _, ino in f._ready}\n"
                f"named = [os.fstat(f.create({str(spool)!r} + f'/b{{i}}.wav', os.O_WRONLY)).st_ino for i in range(4)]\n"
                "print(f.taken, f.made_here, set(named) <= made)\n")],
            cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert other.stdout.split() == ["4", "0", "True"], other.stderr
        for i in range(4):
            os.close(first.create(str(spool / f"a{i}.wav"), os.O_WRONLY))
        assert first.taken == 4 and first.made_here == 0
        assert {os.stat(spool / f"a{i}.wav").st_ino for i in range(4)} <= mine
        assert not {os.stat(spool / f"b{i}.wav").st_ino for i in range(4)} & mine
    finally:
        first.close()


def held_in(spool: Path) -> list[str]:
    """This process's descriptors open on an unnamed file of ``spool`` (readlink: 'SPOOL/#INO (deleted)')."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{spool}/#"):
            out.append(target)
    return out


def test_closing_lets_go_of_every_file_made_ahead(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    files = SpoolFiles(str(spool), ready=8).start()
    ready(files, 8)
    os.close(files.create(str(spool / "r.wav"), os.O_WRONLY))
    assert len(held_in(spool)) == 7 == len(files._ready)  # (made up again once fewer than half are left)
    files.close()
    assert held_in(spool) == [] and os.listdir(spool) == ["r.wav"] and files._dir_fd == -1


def test_a_descriptor_that_is_not_the_file_made_any_more_names_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A ready descriptor's number now open on another file (what a double close elsewhere in the
    process would do): that file is not given a name in the spool; the call gets a file made where
    it is needed, and no more are made ahead (said once)."""
    caplog.set_level("INFO")
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "index.sqlite").write_bytes(b"precious")
    files = SpoolFiles(str(spool), ready=4).start()
    try:
        ready(files, 4)
        files._stopping = True  # (no more made meanwhile)
        other = os.open(tmp_path / "index.sqlite", os.O_RDWR)
        for fd, _, _ in list(files._ready):
            os.dup2(other, fd)  # each ready number now the index's descriptor
        os.close(other)
        fd = files.create(str(spool / "r.wav"), os.O_WRONLY)
        os.write(fd, b"sealed")
        os.close(fd)
        assert os.stat(tmp_path / "index.sqlite").st_nlink == 1  # not named in the spool
        assert (tmp_path / "index.sqlite").read_bytes() == b"precious"
        assert (spool / "r.wav").read_bytes() == b"sealed" and files.made_here == 1 and files.taken == 0
        assert files._ready == [] and not files._linkable
    finally:
        files.close()
    assert sum(getattr(r, "EVENT", "") == "spool-files-direct" for r in caplog.records) == 1


def test_a_replay_takes_its_spool_files_made_ahead_and_leaves_none(site: Site, capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``recorderd replay`` of the demo day: every spool file a call opened was one made ahead (none
    ready: made where needed), every recording kept and verified, the spool empty afterwards and no
    spool-new/ folder."""
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
    assert not (site.store / "spool-new").exists()
    assert site.ctl("verify") == 0


def test_decommission_removes_what_an_earlier_release_left_in_spool_new(site: Site, tmp_path: Path) -> None:
    """What the first edition's files made ahead (empty files) or a technician (a folder, a link)
    left in spool-new/: decommission removes it all, follows no link, and certifies the store gone."""
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
