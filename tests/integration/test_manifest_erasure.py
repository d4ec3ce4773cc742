"""An expired copy erased by ``retention run`` takes its signed manifest and signature with it
(FILE.manifest.json, FILE.manifest.sig), with the care of the copy itself: never through a link,
only the holder's own regular file with one link.

A real staff user (made by the test, as root) exports three copies through the control socket (the
client writes the copy and both manifest files, as that user). Then: copy 1 is left as it was;
copy 2's manifest is swapped for a symbolic link to a root-only file and its signature hard-linked
to another file of the holder's; copy 3's manifest is a FIFO and its signature root's own file.
``retention run`` (as root, directly, the clock moved past the expiry with faketime) erases the
three copies, copy 1's manifest files, and nothing else: the victim, the linked file, the FIFO and
root's file are left byte for byte, and said on the copy's line.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root, needs_tool, python_for

from recorderd.config import load
from recorderd.control import ControlServer

pytestmark = pytest.mark.integration

VICTIM = b"root's own file, mode 0600\n" * 50


@pytest.fixture
def holder() -> Iterator[tuple[Site, str, Path, list[str]]]:
    needs_root("this test makes a Unix user and group and erases as root", *USER_TOOLS, "runuser")
    tag = f"fmn{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="rdmanifest-", dir="/tmp"))
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


def _as(user: str, *cmd: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *cmd], check=True, capture_output=True, cwd="/", timeout=60)


def test_retention_erases_an_expired_copys_manifest_and_signature_and_nothing_else(holder, capsys) -> None:  # type: ignore[no-untyped-def]
    faketime = needs_tool("faketime")
    site, user, outbox, python = holder
    [rec, _] = site.list(capsys)
    uid = pwd.getpwnam(user).pw_uid
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        for n in (1, 2, 3):
            done = subprocess.run(["runuser", "-u", user, "--", *python, "-m", "recorderd.ctl", "--config", str(site.config),
                                   "export", rec["id"], "--out", str(outbox / f"c{n}.wav"), "--purpose", "quality"],
                                  capture_output=True, text=True, cwd="/", timeout=60)
            assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    for n in (1, 2, 3):
        for suffix in ("", ".manifest.json", ".manifest.sig"):
            assert (outbox / f"c{n}.wav{suffix}").stat().st_uid == uid

    victims = site.root / "victims"
    victims.mkdir(mode=0o700)
    victim = victims / "root-only"
    victim.write_bytes(VICTIM)
    os.chmod(victim, 0o600)
    kept = outbox / "notes.txt"  # the holder's own file, hard-linked as copy 2's signature
    _as(user, "sh", "-c", f"printf 'my notes' > {kept}")
    _as(user, "rm", str(outbox / "c2.wav.manifest.json"), str(outbox / "c2.wav.manifest.sig"))
    _as(user, "ln", "-s", str(victim), str(outbox / "c2.wav.manifest.json"))
    _as(user, "ln", str(kept), str(outbox / "c2.wav.manifest.sig"))
    _as(user, "rm", str(outbox / "c3.wav.manifest.json"), str(outbox / "c3.wav.manifest.sig"))
    _as(user, "mkfifo", "-m", "0600", str(outbox / "c3.wav.manifest.json"))
    roots = outbox / "c3.wav.manifest.sig"
    roots.write_bytes(VICTIM)
    os.chmod(roots, 0o600)

    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "retention", "run"]
    run = subprocess.run([faketime, "+8 days", *ctl], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"},
                         timeout=60)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr

    for n in (1, 2, 3):
        assert not (outbox / f"c{n}.wav").exists(), out
    assert not (outbox / "c1.wav.manifest.json").exists() and not (outbox / "c1.wav.manifest.sig").exists(), out
    # Left alone, byte for byte: through the link, the linked file, the FIFO, root's file.
    assert victim.read_bytes() == VICTIM
    assert (outbox / "c2.wav.manifest.json").is_symlink()
    assert kept.read_bytes() == b"my notes" and (outbox / "c2.wav.manifest.sig").read_bytes() == b"my notes"
    assert stat.S_ISFIFO((outbox / "c3.wav.manifest.json").lstat().st_mode)
    assert roots.read_bytes() == VICTIM
    lines = {n: next(line for line in out.splitlines() if line.startswith(f"erased expired copy {n} ")) for n in (1, 2, 3)}
    assert "left" not in lines[1]
    assert "c2.wav.manifest.json left: it is a symbolic link" in lines[2]
    assert "c2.wav.manifest.sig left: it has 2 hard links" in lines[2]
    assert "c3.wav.manifest.json left: it is not a regular file" in lines[3]
    assert f"c3.wav.manifest.sig left: it belongs to uid 0, not to the copy's holder (uid {uid})" in lines[3]
