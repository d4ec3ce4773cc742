"""Role x command matrix with real Unix users and groups made by the test (as root).

Through the control socket: ``recorderd --config`` runs in a network namespace (a veth SPAN link, as
in test_live_service), the store is root's alone (0700), and each test user runs ``recorderctl``
with ``runuser``: the service knows them only from SO_PEERCRED. In direct mode (service stopped):
root runs recorderctl on the store itself, with root put into one role group at a time (root is not
a role by itself: in no group, root is refused too). Every allowed cell must work (exit 0, an
``allowed`` audit row naming the user, uid, role and way in); every denied cell must be refused
(exit 3) and audited (a ``denied`` row). Users, groups and files are removed afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root, python_for

from recorderd import cli, ctl
from recorderd.ops import QUIET_WHEN_ALLOWED
from storage.audit import AuditLog
from storage.casework import Casework

pytestmark = pytest.mark.integration

M, S, T, A, N = "manager", "staff", "technician", "auditor", "none"
ROLES = (M, S, T, A, N)
ALL = {M, S, T, A}
CONSOLE_IP = "192.0.2.7"

# The ops the console sends (no recorderctl command of their own), run as recorderctl would run
# them: through the socket (acting for a person when argv[3] names one), else directly. Steps run in
# order in one process ("@ticket": the ticket the last play gave); the last step's reply is printed
# as recorderctl prints it, and its rc is the exit status.
RAW = textwrap.dedent("""
    import json, sys
    from recorderd import client, control, ctl, service, wire
    from storage import signing
    config = service.start("recorderctl", sys.argv[1], mode="ctl")
    steps, acting = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    path, ticket = control.socket_path(config), None
    for action, args in steps:
        args = {k: ticket if v == "@ticket" else v for k, v in args.items()}
        out = args.get("out")
        targets = [] if not out else [out, *signing.manifest_paths(out)] if action == "export" else [out]
        sinks = {t: wire.FileSink(t) for t in targets}
        try:
            reply = client.call(path, action, args, sinks, acting_for=acting)
        except client.Unreachable:
            for sink in sinks.values():
                sink.abort()
            reply = ctl.direct(config, action, args, path)
        finally:
            for sink in sinks.values():
                sink.abort()
        if action == "play" and reply.rc == 0:
            ticket = reply.data["ticket"]
    print(reply.text)
    if reply.error:
        print("recorderctl: " + reply.error, file=sys.stderr)
    sys.exit(reply.rc)
""")


@dataclass
class Env:
    base: Path
    site: Site
    tag: str
    users: dict[str, str]  # role -> user name
    python: list[str]
    recording: str = ""
    sha256: str = ""
    seen: int = 0  # audit rows already looked at
    mode: str = "socket"  # | "direct" | "console" (the console's user acting for the role's)
    state: dict[str, str] = field(default_factory=dict)
    console: str = ""  # the console's Unix user (config console.user)
    second: str = ""  # a second manager

    def group(self, role: str) -> str:
        return f"{self.tag}-{role[:3]}"

    def outbox(self, role: str) -> Path:
        return self.base / ("out-console" if self.mode == "console" else f"out-{role}")

    def run(self, role: str, *args: str) -> tuple[int, str, str]:
        if self.mode == "socket":
            cmd = ["runuser", "-u", self.users[role], "--", *self.python, "-m", "recorderd.ctl", "--config",
                   str(self.site.config), *args]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=120)
            return done.returncode, done.stdout, done.stderr
        return _in_process(self.site, args)

    def raw(self, role: str, steps: list) -> tuple[int, str, str]:
        """The console's ops: as the role's user through the socket, as the console acting for
        them, or as root directly (no service)."""
        acting = {"user": self.users[role], "ip": CONSOLE_IP} if self.mode == "console" else None
        cmd = [*self.python, "-c", RAW, str(self.site.config), json.dumps(steps), json.dumps(acting)]
        if self.mode != "direct":
            cmd = ["runuser", "-u", self.console if self.mode == "console" else self.users[role], "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=120)
        return done.returncode, done.stdout, done.stderr

    def person(self, role: str) -> tuple[str, int]:
        """Who the service takes the caller of a cell for."""
        user = "root" if self.mode == "direct" else self.users[role]
        return user, pwd.getpwnam(user).pw_uid

    def new_rows(self) -> list:
        audit = AuditLog(str(self.site.store / "audit.sqlite"))
        try:
            rows = [r for r in audit.rows() if r[0] > self.seen]
        finally:
            audit.close()
        self.seen = rows[-1][0] if rows else self.seen
        return [r[1] for r in rows]


_capture: pytest.CaptureFixture[str] | None = None


def _in_process(site: Site, args: tuple[str, ...]) -> tuple[int, str, str]:
    assert _capture is not None
    _capture.readouterr()
    rc = ctl.main(["--config", str(site.config), *args])
    out = _capture.readouterr()
    return rc, out.out, out.err


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    needs_root("the role matrix creates Unix users and groups and a network namespace", *USER_TOOLS, "gpasswd",
               "runuser", "ip")
    tag = f"rdt{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="rdroles-", dir="/tmp"))
    os.chmod(base, 0o755)
    users: dict[str, str] = {}
    groups: list[str] = []
    try:
        for role in (M, S, T, A):
            group = f"{tag}-{role[:3]}"
            _sh("groupadd", group)
            groups.append(group)
        for role in ROLES:
            user = f"{tag}{role[0]}"
            extra = ["-G", f"{tag}-{role[:3]}"] if role != N else []
            _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, user)
            users[role] = user
        console = f"{tag}c"  # the console's own user: in no role group
        _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", console)
        users["console"] = console
        _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", f"{tag}-man", f"{tag}x")
        users["second manager"] = f"{tag}x"  # decides the export requests the cells download
        roles = ", ".join(f"{r}_group: {tag}-{r[:3]}" for r in (M, S, T, A))
        settings = ("capture: {interfaces: [span-rx], trunk_networks: [203.0.113.0/24, \"2001:db8:5::/48\"], "
                    "ring_mb: 8, block_timeout_ms: 20}\n"
                    f"roles: {{{roles}}}\nconsole: {{user: {console}}}\n")
        site = Site(base, None, settings)
        for name in ("recorderd.yaml", "dids.yaml"):
            os.chmod(base / name, 0o644)  # the config is public; the store is not
        assert site.ctl("init") == 0
        assert cli.main(["replay", str(FIXTURES / "demo-day.pcap"), "--config", str(site.config)]) == 0
        assert stat.S_IMODE(site.store.stat().st_mode) == 0o700
        for role, user in users.items():
            box = base / f"out-{role}"
            box.mkdir(mode=0o700)
            pw = pwd.getpwnam(user)
            os.chown(box, pw.pw_uid, pw.pw_gid)
        env = Env(base, site, tag, {r: users[r] for r in ROLES}, python_for(users[M]), console=console,
                  second=users["second manager"])
        store = site.open_store()
        try:  # the fixture's calls may be past their retention already: keep them for the test
            for row in store.reading.recordings():
                store.holding.hold(row.id, until=4_102_444_800.0, reason="role matrix", ref="T-0", by="root")
            row = next(r for r in store.reading.recordings() if r.did_label == "サンキューコールかわさき")
            env.recording, env.sha256 = row.id, row.sha256
        finally:
            store.close()
        yield env
    finally:
        for user in users.values():
            subprocess.run(["userdel", user], capture_output=True)
        for group in groups:
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# -- the cells ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    label: str
    action: str  # as audited
    allowed: frozenset[str]
    argv: Callable[[Env, str], list]  # recorderctl's arguments, or (raw) the steps of RAW
    raw: bool = False
    no_role: bool = False  # refused for a reason of its own, not for the role


def _setup(env: Env, args: list[str], pattern: str) -> str:
    rc, out, err = env.run(M, *args)
    assert rc == 0, err
    found = re.search(pattern, out)
    assert found, out
    return found.group(1)


def _release(env: Env, role: str) -> list[str]:
    hold = _setup(env, ["hold", env.recording, "--until", "2099-12-31", "--reason", "matrix", "--ref", "R-1"],
                  r"hold (\d+) on") if role == M else "1"
    return ["release", env.recording, "--hold", hold, "--reason", "matrix done"]


def _complaint_close(env: Env, role: str) -> list[str]:
    allowed = role in (M, S)
    number = (_setup(env, ["complaint", "new", "--summary", "for closing"], r"complaint (\d+) recorded")
              if allowed else "1")
    return ["complaint", "close", number, "--outcome", "explained"]


def _incident_report(env: Env, role: str) -> list[str]:
    number = (_setup(env, ["incident", "new", "--kind", "other", "--summary", "matrix"], r"incident (\d+) opened")
              if role == M else "1")
    return ["incident", "report", number]


def _out(env: Env, role: str, name: str) -> str:
    return str(env.outbox(role) / (f"console-{role}-{name}" if env.mode == "console" else f"{env.mode}-{name}"))


CELLS = [
    Cell("status", "status", frozenset(ALL), lambda e, r: ["status", "--json"]),
    Cell("notice", "notice", frozenset(ALL), lambda e, r: ["notice"]),
    Cell("list", "list", frozenset({M, S, T}), lambda e, r: ["list", "--json"]),
    Cell("search by DID", "search", frozenset({M, S, T}), lambda e, r: ["search", "--did", "044-200-3939", "--json"]),
    Cell("search by caller", "search", frozenset({M, S}), lambda e, r: ["search", "--caller-ends", "2222"]),
    Cell("export", "export", frozenset({M, S}),
         lambda e, r: ["export", e.recording, "--out", _out(e, r, "q.wav"), "--purpose", "quality"]),
    Cell("export, other purpose, approved", "export", frozenset({M, S}),
         lambda e, r: ["export", e.recording, "--out", _out(e, r, "t.wav"), "--purpose", "training",
                       "--approved-by", e.users[M], "--approval-ref", "AP-7"]),
    Cell("export, other purpose, no approval", "export", frozenset(),
         lambda e, r: ["export", e.recording, "--out", _out(e, r, "n.wav"), "--purpose", "training"]),
    Cell("copies list", "copies-list", frozenset({M, S}), lambda e, r: ["copies", "list", "--json"]),
    Cell("hold", "hold", frozenset({M}),
         lambda e, r: ["hold", e.recording, "--until", "2099-12-31", "--reason", "x", "--ref", "H-1"]),
    Cell("release", "release", frozenset({M}), _release),
    Cell("provide", "provide", frozenset({M}),
         lambda e, r: ["provide", e.recording, "--to", "Kawasaki police", "--basis", "law",
                       "--out", _out(e, r, "p.wav")]),
    Cell("provide without basis", "provide", frozenset(),
         lambda e, r: ["provide", e.recording, "--to", "a newspaper", "--out", _out(e, r, "x.wav")]),
    Cell("disclosure open", "disclosure-open", frozenset({M}),
         lambda e, r: ["disclosure", "open", "--requester-type", "self", "--ref", "D-1"]),
    Cell("disclosure list", "disclosure-list", frozenset({M}), lambda e, r: ["disclosure", "list"]),
    Cell("incident new", "incident-new", frozenset({M}),
         lambda e, r: ["incident", "new", "--kind", "loss", "--summary", "a USB stick"]),
    Cell("incident list", "incident-list", frozenset({M}), lambda e, r: ["incident", "list"]),
    Cell("incident report", "incident-report", frozenset({M}), _incident_report),
    Cell("complaint new", "complaint-new", frozenset({M, S}), lambda e, r: ["complaint", "new", "--summary", "rude"]),
    Cell("complaint list", "complaint-list", frozenset({M, S}), lambda e, r: ["complaint", "list"]),
    Cell("complaint close", "complaint-close", frozenset({M, S}), _complaint_close),
    Cell("report", "report", frozenset({M, T, A}),
         lambda e, r: ["report", "--from", "2026-09-01", "--to", "2026-12-31", "--json"]),
    Cell("audit show", "audit-show", frozenset({M, A}), lambda e, r: ["audit", "show", "--limit", "5"]),
    Cell("audit verify", "audit-verify", frozenset({M, A}), lambda e, r: ["audit", "verify"]),
    Cell("audit export", "audit-export", frozenset({M, A}),
         lambda e, r: ["audit", "export", "--out", _out(e, r, "audit.jsonl")]),
    Cell("verify", "verify", frozenset({M, T, A}), lambda e, r: ["verify"]),
    Cell("retention run", "retention-run", frozenset({M, T}), lambda e, r: ["retention", "run"]),
    Cell("retention confirm-clock", "retention-confirm-clock", frozenset({M}),
         lambda e, r: ["retention", "confirm-clock"]),
]


def _request(env: Env, role: str, *, approved: bool) -> str:
    """An export request by the cell's caller (approved: by a second manager), or, for a manager
    to decide, by the staff user; written to the casework file as export-request and
    export-decide write it (their own cells check those)."""
    user, uid = env.person(role) if approved else (env.users[S], pwd.getpwnam(env.users[S]).pw_uid)
    casework = Casework(str(env.site.store / "casework.sqlite"))
    try:
        n = casework.add_export_request(env.recording, "training", "role matrix", user, uid, time.time())
        if approved:
            assert casework.decide_export_request(n, True, "role matrix", env.second, pwd.getpwnam(env.second).pw_uid,
                                                  time.time())
    finally:
        casework.close()
    return str(n)


def _decide(env: Env, role: str) -> list:
    n = _request(env, role, approved=False) if role == M else "1"
    if env.mode == "console":
        return [["export-decide", {"request": int(n), "approve": True, "reason": "matrix"}]]
    return ["export-decide", "--request", n, "--approve", "--reason", "matrix"]


def _by_request(env: Env, role: str) -> list:
    n = _request(env, role, approved=True) if role in (M, S) else "1"
    if env.mode == "console":
        return [["export", {"request": int(n), "out": _out(env, role, "r.wav")}]]
    return ["export", "--request", n, "--out", _out(env, role, "r.wav")]


def _verify_export(env: Env, role: str) -> list[str]:
    """The manager's copy (made by the export cell) and its manifest, handed to the role's user."""
    src, dst = env.outbox(M) / f"{env.mode}-q.wav", env.outbox(role) / f"{env.mode}-v.wav"
    uid = pwd.getpwnam(env.users[role]).pw_uid
    for suffix in ("", ".manifest.json", ".manifest.sig"):
        shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
        os.chown(f"{dst}{suffix}", uid, -1)
    return ["verify-export", str(dst)]


def _play(env: Env, then: tuple[str, dict] | None = None, purpose: str = "quality") -> list:
    steps: list = [["play", {"id": env.recording, "purpose": purpose}]]
    return steps + [list(then)] if then else steps


def _raw(cli: Cell, steps: Callable[[Env, str], list]) -> Cell:
    return Cell(cli.label, cli.action, cli.allowed, steps, raw=True)


NEW_CELLS = [  # the actions added for the console, as recorderctl runs them
    Cell("pubkey", "pubkey", frozenset(ALL), lambda e, r: ["pubkey"]),
    Cell("verify-export (asks for the key)", "pubkey", frozenset(ALL), _verify_export),
    Cell("show", "show", frozenset({M, S}), lambda e, r: ["show", e.recording, "--json"]),
    Cell("find", "find", frozenset({M, S, T}), lambda e, r: ["find", "--page-size", "5", "--json"]),
    Cell("find by caller", "find", frozenset({M, S}), lambda e, r: ["find", "--caller-ends", "2222"]),
    Cell("export-request", "export-request", frozenset({M, S}),
         lambda e, r: ["export-request", e.recording, "--purpose", "training", "--reason", "matrix"]),
    Cell("export-requests", "export-requests", frozenset({M, S}), lambda e, r: ["export-requests", "--json"]),
    Cell("export-decide", "export-decide", frozenset({M}), _decide),
    Cell("export --request", "export", frozenset({M, S}), _by_request),
]
CONSOLE_OPS = [  # the console's own ops: no recorderctl command
    Cell("play", "play", frozenset({M, S}), lambda e, r: _play(e), raw=True),
    Cell("play, no purpose of Art. 5(3)", "play", frozenset(), lambda e, r: _play(e, purpose="training"), raw=True),
    Cell("play-check", "play-check", frozenset({M, S}), lambda e, r: _play(e, ("play-check", {"ticket": "@ticket"})),
         raw=True),
    Cell("play-audio", "play-audio", frozenset({M, S}),
         lambda e, r: _play(e, ("play-audio", {"ticket": "@ticket", "offset": 0, "length": 4096,
                                               "out": _out(e, r, "audio")})), raw=True),
    Cell("waveform", "waveform", frozenset({M, S}),
         lambda e, r: _play(e, ("waveform", {"ticket": "@ticket", "points": 100})), raw=True),
]
SIGN_IN = [  # the console's sign-in accounting: refused to anyone but the console
    Cell("console-signin", "console-signin", frozenset(), lambda e, r: [["console-signin", {"result": "ok"}]], raw=True,
         no_role=True),
    Cell("console-signout", "console-signout", frozenset(), lambda e, r: [["console-signout", {}]], raw=True,
         no_role=True),
]
# play-audio and waveform answer only the console (recorderctl would write an unregistered copy):
# through the socket they are refused to everyone, the manager and staff for that reason.
PLAYER = ("play-audio", "waveform")
SOCKET_OPS = [Cell(c.label, c.action, frozenset(), c.argv, raw=True) if c.action in PLAYER else c for c in CONSOLE_OPS]
CELLS += NEW_CELLS + SOCKET_OPS + SIGN_IN
# Through the console (its user acting for the role's): the same cells, as the console sends them;
# sign-in is allowed for a person in a role, sign-out for anyone.
CONSOLE_CELLS = [
    _raw(NEW_CELLS[0], lambda e, r: [["pubkey", {}]]),
    _raw(NEW_CELLS[2], lambda e, r: [["show", {"id": e.recording}]]),
    _raw(NEW_CELLS[3], lambda e, r: [["find", {"page_size": 5}]]),
    _raw(NEW_CELLS[4], lambda e, r: [["find", {"caller_ends": "2222"}]]),
    _raw(NEW_CELLS[5],
         lambda e, r: [["export-request", {"id": e.recording, "purpose": "training", "reason": "matrix"}]]),
    _raw(NEW_CELLS[6], lambda e, r: [["export-requests", {}]]),
    _raw(NEW_CELLS[7], _decide),
    _raw(NEW_CELLS[8], _by_request),
    *CONSOLE_OPS,
    Cell("console-signin", "console-signin", frozenset(ALL), lambda e, r: [["console-signin", {"result": "ok"}]],
         raw=True),
    Cell("console-signout", "console-signout", frozenset(ROLES), lambda e, r: [["console-signout", {}]], raw=True),
]


def _check(env: Env, role: str, cell: Cell, allowed: bool) -> None:
    argv = cell.argv(env, role)
    env.new_rows()  # rows of the setup are not this cell's
    rc, out, err = env.raw(role, argv) if cell.raw else env.run(role, *argv)
    user, uid = env.person(role)
    new = [e for e in env.new_rows() if e.user == user]
    rows = [e for e in new if e.action == cell.action]
    where = f"{env.mode}: {role} / {cell.label}: rc {rc}\n{out}\n{err}"
    if allowed and cell.action in QUIET_WHEN_ALLOWED:  # a use of a ticket: the play was audited, this is not
        assert rc == 0 and not rows, where
        rows = [e for e in new if e.action == "play"]
        if cell.action == "play-audio":
            audio = Path(_out(env, role, "audio")).read_bytes()
            assert len(audio) == 4096 and audio[:4] == b"RIFF", where
    assert rows, f"not audited: {where}"
    outcome = rows[-1]
    assert outcome.uid == uid and outcome.detail["via"] == env.mode, where
    if env.mode == "console":
        assert outcome.detail.get("client_ip") == CONSOLE_IP, where
    if allowed:
        assert rc == 0 and outcome.result == "allowed", where
        assert outcome.detail["role"] == (role if role != N else "none"), where
    else:
        assert rc == 3, where
        assert outcome.result.startswith("denied: ") and "recorderctl: " in err, where
        if cell.no_role:
            assert "is the web console's" in err, where
        elif role == N:
            assert "is in none of the recorderd role groups" in err, where
        elif cell.action in PLAYER and role in (M, S):
            assert "is the web console's player" in err, where


def _matrix(env: Env) -> None:
    env.seen = 0
    for role in ROLES:
        for cell in CELLS:
            _check(env, role, cell, role in cell.allowed)


def test_matrix_through_the_control_socket(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    global _capture
    _capture = capsys
    import integration.test_live_service as live  # its Span and Service helpers (not its tests)

    span = live.Span()
    try:
        env.mode = "socket"
        service = live.Service(span, env.site, tmp_path)
        try:
            sock = env.base / "control.sock"
            for _ in range(50):
                if sock.exists():
                    break
                time.sleep(0.1)
            assert stat.S_ISSOCK(sock.stat().st_mode)
            _matrix(env)
            env.mode = "console"  # the console's user acting for each role's
            for role in ROLES:
                for cell in CONSOLE_CELLS:
                    _check(env, role, cell, role in cell.allowed)
            env.mode = "socket"
            # A copy made through the service: written by the client as the user, 0600, byte-identical.
            copy = env.outbox(S) / "socket-q.wav"
            st = copy.stat()
            assert st.st_uid == pwd.getpwnam(env.users[S]).pw_uid and stat.S_IMODE(st.st_mode) == 0o600
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == env.sha256
            # Decommission goes only directly, with the service stopped: refused to everyone here.
            for role in ROLES:
                rc, _, err = env.run(role, "decommission", "--confirm", "--certificate", _out(env, role, "cert"))
                assert rc == 3 and "works on the store directly" in err, (role, err)
            # A technician sees no caller number.
            rc, out, _ = env.run(T, "list", "--json")
            listed = json.loads(out)
            assert listed and all(re.fullmatch(r"[*+\-]*\d{2}", r["caller"]) for r in listed)
            assert all(r["call_id"] == "(hidden)" for r in listed)
            # Through the service, the report has its capture counters (snapshotted by the service's books thread).
            rc, out, err = env.run(T, "report", "--from", "2026-01-01", "--to", "2099-12-31", "--json")
            report = json.loads(out)
            assert rc == 0 and report["capture"] is not None and "kernel_drops" in report["capture"], err
            rc, out, _ = env.run(A, "status", "--json")
            assert json.loads(out)["service"]["running"] is True
        finally:
            assert service.stop() == 0
    finally:
        span.close()
    assert not (env.base / "control.sock").exists()
    rc, _, err = env.run(S, "list")  # no service, and the store is not theirs to open
    assert rc == 4 and "recorderd is not running" in err and "cannot open the store" in err, err


def test_matrix_directly_as_root_in_one_group_at_a_time(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    global _capture
    _capture = capsys
    env.mode = "direct"
    env.seen = 0
    env.new_rows()
    for role in ROLES:
        if role != N:
            _sh("gpasswd", "-a", "root", env.group(role))
        try:
            for cell in CELLS:
                _check(env, role, cell, role in cell.allowed)
            rc, _, err = env.run(role, "init")  # init needs no role, only the right to create the store
            assert rc == 0, err
            if role != T:
                rc, _, err = env.run(role, "decommission", "--confirm", "--certificate", _out(env, role, "cert"))
                assert rc == 3 and (role == N or "decommission is for technicians" in err), err
        finally:
            if role != N:
                _sh("gpasswd", "-d", "root", env.group(role))
    _sh("gpasswd", "-a", "root", env.group(T))
    try:
        rc, out, err = env.run(T, "decommission", "--confirm", "--certificate", _out(env, T, "cert"))
    finally:
        _sh("gpasswd", "-d", "root", env.group(T))
    assert rc == 0, err
    assert "Recordings erased" in out and not (env.site.store / "index.sqlite").exists()
    rows = [e for e in env.new_rows() if e.action == "decommission"]
    assert rows[-1].result == "allowed" and rows[-1].detail["role"] == T
