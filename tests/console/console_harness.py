"""The console as its users get it: real Unix users with passwords in each role, the shipped PAM
service, the daemon (``recorderd --config``, in a network namespace of its own, on a store holding
the demo day), the console (``python -m console``) running as its own user with a self-signed
certificate, and headless Chromium through Selenium. Used by tests/console/conftest.py.

Everything made here is named with the prefix ``w3`` and removed at the end.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "pcap_fixtures"
BIN = Path(sys.executable).parent
PAM_FILE = Path("/etc/pam.d/recorderd-console")
SHIPPED_PAM = [ROOT / "systemd" / "recorderd-console.pam", ROOT / "debian" / "recorderd.recorderd-console.pam"]
FALLBACK_PAM = "@include common-auth\n@include common-account\n"
TRUNK = '["203.0.113.0/24", "2001:db8:5::/48"]'  # the fixtures' carrier side (generator.TRUNK)

CONSOLE_USER = "w3console"
# role -> (user name, its role group or None); "manager2" is the second manager (four eyes), "lock" a
# staff member whose name the lockout test locks, "none" a user of the box in no role group.
PEOPLE = {
    "manager": ("w3manager", "w3-manager"),
    "manager2": ("w3manager2", "w3-manager"),
    "staff": ("w3staff", "w3-staff"),
    "technician": ("w3tech", "w3-technician"),
    "auditor": ("w3auditor", "w3-auditor"),
    "lock": ("w3lock", "w3-staff"),
    "none": ("w3nobody", None),
}
GROUPS = ("w3-manager", "w3-staff", "w3-technician", "w3-auditor")
LOCKOUT_FAILURES = 3


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_people() -> None:
    """Whatever a run (this one, or one killed before its clean-up) left: users, then groups."""
    for user in [u for u, _ in PEOPLE.values()] + [CONSOLE_USER]:
        subprocess.run(["userdel", "-f", user], capture_output=True)
    for group in GROUPS + (CONSOLE_USER,):
        subprocess.run(["groupdel", group], capture_output=True)


@dataclass
class People:
    passwords: dict[str, str] = field(default_factory=dict)  # role key -> password

    def user(self, role: str) -> str:
        return PEOPLE[role][0]

    @classmethod
    def create(cls) -> People:
        remove_people()
        for group in GROUPS:
            sh("groupadd", group)
        people = cls()
        lines = []
        sh("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", "shadow", CONSOLE_USER)
        for role, (user, group) in PEOPLE.items():
            extra = ["-G", group] if group else []
            sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, user)
            password = "Pw-" + secrets.token_urlsafe(12)
            people.passwords[role] = password
            lines.append(f"{user}:{password}")
        subprocess.run(["chpasswd"], input="\n".join(lines) + "\n", text=True, check=True, capture_output=True)
        return people


class PamService:
    """/etc/pam.d/recorderd-console: the file the package ships, installed for the test if absent."""

    def __init__(self) -> None:
        self.installed = False
        if PAM_FILE.exists():
            return
        source = next((p for p in SHIPPED_PAM if p.exists()), None)
        PAM_FILE.write_text(source.read_text() if source else FALLBACK_PAM)
        os.chmod(PAM_FILE, 0o644)
        self.installed = True

    def remove(self) -> None:
        if self.installed:
            PAM_FILE.unlink(missing_ok=True)


def write_site(base: Path, port: int, *, idle_min: int = 1) -> Path:
    """The site config: the demo store, the w3 role groups, the console as w3console on ``port``."""
    shutil.copy(ROOT / "config" / "dids.yaml", base / "dids.yaml")
    config = {
        "capture": {"interfaces": ["lo"], "trunk_networks": yaml.safe_load(TRUNK), "ring_mb": 8,
                    "block_timeout_ms": 20},
        "store": {"path": str(base / "store"), "require_encrypted_volume": False},
        "dids_file": str(base / "dids.yaml"),
        "control": {"socket": str(base / "control.sock")},
        "roles": {f"{role}_group": f"w3-{role}" for role in ("manager", "staff", "technician", "auditor")},
        "console": {"user": CONSOLE_USER, "listen": "127.0.0.1", "port": port, "tls_cert": str(base / "cert.pem"),
                    "tls_key": str(base / "key.pem"), "idle_timeout_min": idle_min,
                    "lockout_failures": LOCKOUT_FAILURES, "lockout_min": 1},
    }
    path = base / "recorderd.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.chmod(path, 0o644)
    os.chmod(base / "dids.yaml", 0o644)
    return path


def make_certificate(base: Path) -> None:
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
       "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
       "-keyout", str(base / "key.pem"), "-out", str(base / "cert.pem"))
    pw = pwd.getpwnam(CONSOLE_USER)
    os.chown(base / "key.pem", 0, pw.pw_gid)
    os.chmod(base / "key.pem", 0o640)
    os.chmod(base / "cert.pem", 0o644)


def recent_day(source: Path, out: Path) -> Path:
    """``source`` (a little-endian pcap) moved by whole days to the last day that ended an hour ago
    (in Japan, most often yesterday): the store keeps its calls (retention) without holds, and the
    pages show a working day as it looks."""
    data = bytearray(source.read_bytes())
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "a classic little-endian pcap"
    first = int.from_bytes(data[24:28], "little")
    shift = (int(time.time()) - 3600 - first) // 86400 * 86400
    at = 24
    while at + 16 <= len(data):
        sec = int.from_bytes(data[at:at + 4], "little") + shift
        data[at:at + 4] = sec.to_bytes(4, "little")
        at += 16 + int.from_bytes(data[at + 8:at + 12], "little")
    out.write_bytes(bytes(data))
    return out


def fill_store(config: Path) -> list[dict]:
    """The demo day (moved to yesterday) replayed into a new store, as root and in-process.
    Returns the recordings."""
    from recorderd import cli, ctl
    from recorderd.config import load
    from recorderd.service import open_store

    assert ctl.main(["--config", str(config), "init"]) == 0
    pcap = recent_day(FIXTURES / "demo-day.pcap", config.parent / "demo-day.pcap")
    assert cli.main(["replay", str(pcap), "--config", str(config)]) == 0
    store = open_store(load(str(config))).open()
    try:
        return [{"id": r.id, "did_label": r.did_label, "sha256": r.sha256} for r in store.reading.recordings()]
    finally:
        store.close()


class Daemon:
    """``recorderd --config`` in a network namespace of its own (capturing its quiet loopback)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.ns = f"w3{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", self.ns)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID")}
        env["PYTHONPATH"] = str(ROOT)  # this tree's daemon
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, str(BIN / "recorderd"), "--config", str(config)],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        sock = config.parent / "control.sock"
        for _ in range(200):
            if sock.exists():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"recorderd did not open its control socket; log:\n{log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class ConsoleProcess:
    """``python -m console --config`` as w3console (its groups: its own and shadow), as the unit runs it."""

    def __init__(self, python: list[str], config: Path, port: int, log: Path, *, faketime: str | None = None) -> None:
        self.port, self.log = port, log
        self.url = f"https://127.0.0.1:{port}"
        cmd = ["setpriv", f"--reuid={CONSOLE_USER}", f"--regid={CONSOLE_USER}", "--init-groups", "--"]
        if faketime:
            cmd += ["faketime", "-f", faketime]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/", "PYTHONPATH": str(ROOT)}  # this tree's console
        # a session of its own: faketime runs the console as its child, and stop() ends them both
        self.proc = subprocess.Popen([*cmd, *python, "-m", "console", "--config", str(config)], cwd="/",
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the console did not listen on {port}; log:\n{log.read_text()}")

    def stop(self) -> None:
        """The console and anything it runs under (faketime's child): the whole process group."""
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 5  # the group's last members (the python under faketime) gone too
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def client(base_url: str, *, source: str = "127.0.0.1") -> httpx.Client:
    """A plain HTTPS client (the console's certificate is self-signed), from address ``source``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    transport = httpx.HTTPTransport(verify=context, local_address=source)
    return httpx.Client(base_url=base_url, transport=transport, follow_redirects=False, timeout=30)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@dataclass
class Site:
    """Everything the browser tests use."""

    base: Path
    config: Path
    people: People
    daemon: Daemon
    console: ConsoleProcess
    python: list[str]
    recordings: list[dict]
    console_logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.console.url

    def password(self, role: str) -> str:
        return self.people.passwords[role]

    def user(self, role: str) -> str:
        return self.people.user(role)

    def signed_in(self, role: str, *, source: str = "127.0.0.1") -> httpx.Client:
        """An httpx client holding the session cookie of a real sign-in as ``role``."""
        c = client(self.url, source=source)
        reply = c.post("/signin", data={"user": self.user(role), "password": self.password(role)})
        assert reply.status_code == 303, (role, reply.status_code, reply.text[:300])
        return c

    def ctl(self, role: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``recorderctl`` run as ``role``'s Unix user, through the daemon's control socket."""
        cmd = ["runuser", "-u", self.user(role), "--", *self.python, "-m", "recorderd.ctl",
               "--config", str(self.config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=timeout)

    def audit(self, **filters: str) -> list[dict]:
        """The audit rows (``recorderctl audit show --json`` as the auditor)."""
        args = ["audit", "show", "--json", "--limit", "100000"]
        for key, value in filters.items():
            args += [f"--{key}", value]
        done = self.ctl("auditor", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def logs(self) -> str:
        """Every line the console processes and the daemon wrote during the session."""
        return "\n".join(p.read_text(errors="replace") for p in [*self.console_logs, self.daemon.log] if p.exists())


def new_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="w3console-", dir="/tmp"))
    os.chmod(base, 0o755)
    return base


def callers() -> set[str]:
    """Every caller number of the demo day, as written and as digits only."""
    found: set[str] = set()
    for sidecar in FIXTURES.glob("demo-day.json"):
        for rec in json.loads(sidecar.read_text())["recordings"]:
            found.add(rec["caller"])
            found.add(re.sub(r"\D", "", rec["caller"]))
    return found
