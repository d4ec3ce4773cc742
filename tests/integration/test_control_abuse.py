"""The control socket against hostile local users (hardening issue 16, items 4, 10, 13, 20).

A real ControlServer (in this process, as root, with a real capture pipeline so ``status`` has the
service's counters) on a store only root can open; real Unix users and groups made here (prefix
``a`` + random), each client a subprocess that imports recorderd as root and then drops to the user
with setgroups/setgid/setuid: the server knows them only from SO_PEERCRED, and their roles only
from the group database. Users, groups and files are removed afterwards.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FIXTURES, ROOT, USER_TOOLS, Site, needs_root

from recorderd import control
from recorderd.config import load
from recorderd.control import MAX_PER_UID, REQUEST_DEADLINE, ControlServer
from recorderd.metrics import MetricsServer
from recorderd.service import build_pipeline
from storage.audit import AuditLog
from storage.casework import Casework

pytestmark = pytest.mark.integration

ROLE_GROUPS = ("manager", "staff", "technician", "auditor")

# Run as root up to the setuid: everything the client needs is imported first (the interpreter and
# its standard library may live where the user cannot read).
PRELUDE = f"""
import json, os, pwd, select, socket, struct, sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
import encodings.idna, logging.handlers
from recorderd import control, ctl, wire
ctl.build_parser()  # reads the package's version (importlib.metadata, email) while it can
pw = pwd.getpwnam(sys.argv[1])
os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
CONFIG, SOCK = sys.argv[2], sys.argv[3]
def frame(action, args):
    body = json.dumps({{"t": "request", "v": wire.VERSION, "action": action, "args": args}}).encode()
    return b"J" + struct.pack(">I", len(body)) + body
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    return s
"""


@dataclass
class Env:
    base: Path
    site: Site
    server: ControlServer
    tag: str
    users: dict[str, str]  # name in the test -> Unix user
    recording: str
    sha256: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def sock(self) -> str:
        return str(self.base / "control.sock")

    def start(self, who: str, code: str) -> subprocess.Popen[str]:
        self.procs.append(subprocess.Popen([sys.executable, "-c", PRELUDE + code, self.users[who],
                                            str(self.site.config), self.sock],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, cwd="/"))
        return self.procs[-1]

    def run(self, who: str, code: str, timeout: float = 60) -> str:
        proc = self.start(who, code)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return out

    def ctl(self, who: str, *argv: str, timeout: float = 60) -> tuple[int, str, str, float]:
        code = f"sys.exit(ctl.main(['--config', CONFIG, *{list(argv)!r}]))"
        began = time.monotonic()
        proc = self.start(who, code)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, time.monotonic() - began

    def audit(self) -> list:
        log = AuditLog(str(self.site.store / "audit.sqlite"))
        try:
            return [r[1] for r in log.rows()]
        finally:
            log.close()

    def copies(self, who: str) -> list[dict]:
        casework = Casework(str(self.site.store / "casework.sqlite"))
        try:
            return casework.copies(user=self.users[who])
        finally:
            casework.close()

    def uid(self, who: str) -> int:
        return pwd.getpwnam(self.users[who]).pw_uid

    def group(self, role: str) -> str:
        return f"{self.tag}-{role[:3]}"


def _sh(*cmd: str) -> None:
    for _ in range(20):  # other helpers' tests may hold the lock on /etc/passwd a moment
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"{' '.join(cmd)}: {done.stderr}")


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    needs_root("these tests create Unix users and groups and drop to them", *USER_TOOLS, "gpasswd")
    tag = f"a{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix="rdctlA-", dir="/tmp"))
    os.chmod(base, 0o755)
    members = {"manager": "manager", "staff": "staff", "leaver": "staff", "idler": None, "victim": None}
    users: dict[str, str] = {}
    groups: list[str] = []
    server = store = None
    procs: list[subprocess.Popen[str]] = []
    try:
        for role in ROLE_GROUPS:
            _sh("groupadd", f"{tag}-{role[:3]}")
            groups.append(f"{tag}-{role[:3]}")
        for who, role in members.items():
            users[who] = f"{tag}{who[:3]}"
            _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *(["-G", f"{tag}-{role[:3]}"] if role else []),
                users[who])
        site = Site(base)
        roles = ", ".join(f"{r}_group: {tag}-{r[:3]}" for r in ROLE_GROUPS)
        site.config.write_text(f"store: {{path: store}}\ndids_file: dids.yaml\ncontrol: {{socket: control.sock}}\n"
                               f"roles: {{{roles}}}\n", encoding="utf-8")
        for name in ("recorderd.yaml", "dids.yaml"):
            os.chmod(base / name, 0o644)  # the config is public; the store is not
        site.init()
        assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
        store = site.open_store()
        [row] = store.reading.recordings()
        store.holding.hold(row.id, until=4_102_444_800.0, reason="control abuse tests", ref="T-A", by="root")
        for who, user in users.items():
            box = base / f"out-{who}"
            box.mkdir(mode=0o700)
            os.chown(box, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        config = load(str(site.config))
        server = ControlServer(config, pipeline=build_pipeline(config, store))
        assert server.start()
        yield Env(base, site, server, tag, users, row.id, row.sha256, procs)
    finally:
        for proc in procs:  # a client left running by a failed test would keep its user from userdel
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if server is not None:
            server.stop()
        if store is not None:
            store.close()
        for user in users.values():
            subprocess.run(["userdel", user], capture_output=True)
        for group in groups:
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# -- item 4: roles once the whole request is here; a total deadline ----------------------------------


def test_a_user_removed_from_the_group_while_sending_is_refused(env: Env) -> None:
    out = env.base / "out-leaver" / "q.wav"
    proc = env.start("leaver", f"""
s = connect()
data = frame("export", {{"id": {env.recording!r}, "out": {str(out)!r}, "purpose": "quality"}})
s.sendall(data[:12])
print("half", flush=True)
sys.stdin.readline()
s.sendall(data[12:])
seen = []
while True:
    kind, payload = wire.recv_frame(s)
    if kind == wire.DATA:
        seen.append("data")
        continue
    msg = json.loads(payload)
    seen.append(msg["t"])
    if msg["t"] == "commit":
        wire.send_json(s, {{"t": "placed", "path": msg["path"], "ok": True, "error": None}})
    if msg["t"] == "reply":
        print(json.dumps({{"seen": seen, "reply": msg}}))
        break
""")
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "half"
    _sh("gpasswd", "-d", env.users["leaver"], env.group("staff"))  # connected as staff; not staff any more
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out_text, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    answer = json.loads(out_text)
    assert answer["seen"] == ["reply"], answer  # not one byte of audio
    assert answer["reply"]["rc"] == 3 and "is in none of the recorderd role groups" in answer["reply"]["error"]
    [row] = [e for e in env.audit() if e.user == env.users["leaver"] and e.action == "export"]
    assert row.result.startswith("denied: ") and row.uid == env.uid("leaver")
    assert env.copies("leaver") == []


def test_a_trickled_request_is_cut_off_at_the_deadline(env: Env) -> None:
    before = env.server.counters["control_request_timeouts"]
    out = env.run("staff", """
s = connect()
began = time.monotonic()
for byte in frame("status", {"note": "x" * 40}):  # one byte every half second: 40 s for the whole
    if select.select([s], [], [], 0)[0]:
        break
    try:
        s.sendall(bytes([byte]))
    except (BrokenPipeError, ConnectionResetError):
        break
    time.sleep(0.5)
kind, payload = wire.recv_frame(s)
print(json.dumps({"after": time.monotonic() - began, "reply": json.loads(payload)}))
""")
    answer = json.loads(out)
    assert answer["after"] < REQUEST_DEADLINE + 2, answer
    assert answer["reply"]["rc"] == 1
    assert f"did not arrive in full within {REQUEST_DEADLINE:.0f} s" in answer["reply"]["error"]
    assert env.server.counters["control_request_timeouts"] == before + 1
    assert not [e for e in env.audit() if e.user == env.users["staff"] and e.action == "status"]  # never run


# -- item 10: one uid cannot take every slot ----------------------------------------------------------


def test_idle_connections_of_one_user_do_not_lock_out_a_manager(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="recorderd.control")
    refused_before = env.server.counters["control_refused_uid_limit"]
    idler = env.start("idler", """
conns = [connect() for _ in range(12)]
time.sleep(0.5)
busy = []
for s in conns:
    if select.select([s], [], [], 0)[0]:
        kind, payload = wire.recv_frame(s)
        busy.append(json.loads(payload))
print(json.dumps(busy), flush=True)
sys.stdin.readline()
began = time.monotonic()
cut = []
for s in conns:
    if select.select([s], [], [], 10)[0]:
        try:
            cut.append(json.loads(wire.recv_frame(s)[1])["error"])
        except wire.WireError:
            pass
print(json.dumps({"after": time.monotonic() - began, "cut": cut}), flush=True)
""")
    assert idler.stdout is not None and idler.stdin is not None
    busy = json.loads(idler.stdout.readline())
    rc, out, err, took = env.ctl("manager", "status", "--json")
    idler.stdin.write("go\n")
    idler.stdin.flush()
    rest, idle_err = idler.communicate(timeout=30)
    assert idler.returncode == 0, idle_err
    assert rc == 0 and took < 10, (rc, err, took)
    counters = json.loads(out)["service"]["counters"]
    assert counters["control_refused_uid_limit"] == refused_before + 12 - MAX_PER_UID
    assert len(busy) == 12 - MAX_PER_UID
    assert all(b["rc"] == control.BUSY and "you have 4 requests in progress already" in b["error"] for b in busy)
    held = json.loads(rest)  # the connections it kept were cut at the deadline, each with an answer
    assert held["after"] < REQUEST_DEADLINE + 2 and len(held["cut"]) == MAX_PER_UID
    assert all("did not arrive in full" in text for text in held["cut"])
    lines = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert lines == [f"control socket: refused a connection from uid {env.uid('idler')}: "
                     "it has 4 requests in progress already"]
    assert env.users["idler"] not in " ".join(r.getMessage() for r in caplog.records)  # the uid, not who it is
    # The service publishes its counters (these among them) to the metrics endpoint as they are.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = MetricsServer(f"127.0.0.1:{port}")
    metrics.start()
    try:
        metrics.publish(env.server.counters, 0, SimpleNamespace(free_bytes=1))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.stop()
    assert f"recorderd_control_refused_uid_limit_total {refused_before + 12 - MAX_PER_UID}" in body
    assert f"recorderd_control_request_timeouts_total {env.server.counters['control_request_timeouts']}" in body


# -- item 20: a crowd gets answers or "busy", never a broken pipe -----------------------------------------


def test_two_hundred_parallel_clients_each_get_an_answer_or_busy(env: Env) -> None:
    crowd = """
go = threading.Barrier(50)
results = []
def one():
    go.wait()
    reply = ctl.perform(config, "status", {})
    results.append([reply.rc, reply.error])
config = ctl.service.start("recorderctl", CONFIG)
threads = [threading.Thread(target=one) for _ in range(50)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""
    procs = [env.start(who, crowd) for who in ("staff", "manager", "staff", "manager")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results += json.loads(out)
    assert len(results) == 200
    odd = [r for r in results if not (r[0] == 0 or (r[0] == control.BUSY and "busy" in r[1]))]
    assert odd == [], odd[:5]
    assert any(r[0] == 0 for r in results) and any(r[0] == control.BUSY for r in results)


# -- item 13: a copy that cannot be put in place is not made ----------------------------------------------


def test_a_copy_that_cannot_replace_another_users_file_is_not_registered(env: Env) -> None:
    drop = env.base / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)  # like /tmp: anyone may create, nobody may replace another's file
    theirs = drop / "report.wav"
    theirs.write_bytes(b"the victim's own file")
    victim = pwd.getpwnam(env.users["victim"])
    os.chown(theirs, victim.pw_uid, victim.pw_gid)
    rc, out, err, _ = env.ctl("staff", "export", env.recording, "--out", str(theirs), "--purpose", "quality")
    assert rc == 1, (rc, out, err)
    assert f"the copy could not be put at {theirs}: Operation not permitted" in err
    assert "cannot reach" not in err and "exported" not in out
    assert theirs.read_bytes() == b"the victim's own file" and theirs.stat().st_uid == victim.pw_uid
    assert sorted(p.name for p in drop.iterdir()) == ["report.wav"]  # no staging file left
    [row] = [e for e in env.audit() if e.user == env.users["staff"] and e.action == "export"]
    assert row.result == f"failed: the copy could not be put at {theirs}: Operation not permitted"
    assert "copy" not in row.detail
    assert env.copies("staff") == []
    # The same export to a place of the user's own works, and only that one is registered.
    mine = env.base / "out-staff" / "q.wav"
    rc, out, err, _ = env.ctl("staff", "export", env.recording, "--out", str(mine), "--purpose", "quality")
    assert rc == 0, err
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == env.sha256
    assert [c["out"] for c in env.copies("staff")] == [str(mine)]
