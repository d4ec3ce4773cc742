"""Erasing expired exported copies cannot be turned against other files (issue 16, item 1).

A real staff user (made by the test, as root) exports copies through the control socket (the copies
are written by their client, as that user), then plays the tricks a hostile holder can: a FIFO that
serves the exported bytes and has a symbolic link to a root-only file swapped in while
``retention run`` reads it; the folder of a copy swapped for a link to a folder holding a root-owned
file with the same bytes; the copy replaced by root's file with the same bytes. ``retention run``
(as root, directly, the clock moved past the copies' expiry with faketime) must erase only the copy
that is still the holder's own regular file, and leave every other file byte for byte as it was.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root, needs_tool, python_for

from recorderd.config import load
from recorderd.control import ControlServer

pytestmark = pytest.mark.integration

VICTIM = b"root's own secret, mode 0600\n" * 100

# Run as the holder: replace the copy by a FIFO, serve the exported bytes to whoever opens it, and
# swap a link to the victim in before the reader reaches the end of the bytes.
ATTACK = textwrap.dedent("""
    import os, sys, signal
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    copy, victim = sys.argv[1], sys.argv[2]
    data = open(copy, "rb").read()
    os.unlink(copy)
    os.mkfifo(copy, 0o600)
    print("ready", flush=True)
    fd = os.open(copy, os.O_WRONLY)          # blocks until retention opens it
    try:
        os.write(fd, data)
    except OSError:
        pass
    os.symlink(victim, copy + ".swap")
    os.replace(copy + ".swap", copy)         # the path is now a link to the victim
    os.close(fd)                             # the reader sees the end of the exported bytes
""")


@pytest.fixture
def holder() -> Iterator[tuple[Site, str, Path, list[str]]]:
    needs_root("this test makes a Unix user and group and erases as root", *USER_TOOLS, "runuser")
    tag = f"ccp{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="rdcopies-", dir="/tmp"))
    os.chmod(base, 0o755)
    user, group = f"{tag}s", f"{tag}-sta"
    try:
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group, user], check=True, capture_output=True)
        site = Site(base, None, f"roles: {{manager_group: root, staff_group: {group}, technician_group: root, "
                                "auditor_group: root}\n")
        for name in ("recorderd.yaml", "dids.yaml"):
            os.chmod(base / name, 0o644)
        site.init()
        assert site.replay(FIXTURES / "overlapping.pcap") == 0
        outbox = base / "out"
        outbox.mkdir(mode=0o700)
        pw = pwd.getpwnam(user)
        os.chown(outbox, pw.pw_uid, pw.pw_gid)
        yield site, user, outbox, python_for(user)
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_retention_erases_only_the_holders_own_regular_copy(holder, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    faketime = needs_tool("faketime")
    site, user, outbox, python = holder
    [rec, _] = site.list(capsys)
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        for name in ("fifo", "folder", "replaced", "genuine"):
            sub = outbox / name
            subprocess.run(["runuser", "-u", user, "--", "mkdir", "-m", "0700", str(sub)], check=True)
            done = subprocess.run(["runuser", "-u", user, "--", *python, "-m", "recorderd.ctl", "--config", str(site.config),
                                   "export", rec["id"], "--out", str(sub / "copy.wav"), "--purpose", "quality"],
                                  capture_output=True, text=True, cwd="/", timeout=60)
            assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    exported = (outbox / "genuine" / "copy.wav").read_bytes()
    assert (outbox / "genuine" / "copy.wav").stat().st_uid == pwd.getpwnam(user).pw_uid

    victims = site.root / "victims"
    victims.mkdir(mode=0o700)
    victim = victims / "root-only"
    victim.write_bytes(VICTIM)
    os.chmod(victim, 0o600)
    # 2: the copy's folder swapped for a link to a folder of root's holding a file with the same bytes.
    decoy_dir = victims / "decoy"
    decoy_dir.mkdir()
    (decoy_dir / "copy.wav").write_bytes(exported)
    shutil.rmtree(outbox / "folder")
    os.symlink(decoy_dir, outbox / "folder")
    # 3: the copy replaced by root's own file with the same bytes.
    (outbox / "replaced" / "copy.wav").unlink()
    (outbox / "replaced" / "copy.wav").write_bytes(exported)
    os.chown(outbox / "replaced" / "copy.wav", 0, 0)
    # 1: the FIFO, served by the holder's own process.
    attack = subprocess.Popen(["runuser", "-u", user, "--", *python, "-c", ATTACK, str(outbox / "fifo" / "copy.wav"), str(victim)],
                              stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert attack.stdout is not None and attack.stdout.readline().strip() == "ready"
        ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "retention", "run"]
        run = subprocess.run([faketime, "+8 days", *ctl], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"},
                             timeout=60)
    finally:
        try:
            attack.wait(timeout=10)
        except subprocess.TimeoutExpired:
            attack.kill()
            attack.wait()

    assert victim.read_bytes() == VICTIM, "a root-only file was overwritten through an exported copy"
    assert (decoy_dir / "copy.wav").read_bytes() == exported
    assert (outbox / "replaced" / "copy.wav").read_bytes() == exported
    assert not (outbox / "genuine" / "copy.wav").exists()
    out = run.stdout
    assert "erased expired copy 4" in out, out + run.stderr
    assert "EXPIRED COPY 1" in out and "EXPIRED COPY 2" in out and "EXPIRED COPY 3" in out
    assert "a folder on its path (folder) is a symbolic link" in out
    assert "it belongs to uid 0, not to the copy's holder" in out
    capsys.readouterr()
    assert site.ctl("copies", "list", "--json") == 0
    states = {c["copy"]: c["state"] for c in json.loads(capsys.readouterr().out)}
    assert states[4] == "destroyed" and all(states[n] != "destroyed" for n in (1, 2, 3))
