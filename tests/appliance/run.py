#!/usr/bin/env python3
"""The installed appliance under a real systemd: `make appliance-test` (root; CI runs it).

A minimal Debian 12 tree (mmdebstrap, cached in $APPLIANCE_CACHE) boots with systemd as PID 1 in
systemd-nspawn; the .deb of the previous version is installed and set up as a technician would,
records, and is upgraded to this one; then the checks of issue 11, one line each (PASS/FAIL name:
what was seen). A veth pair is the SPAN port: tcpreplay on the host side (`fspan0`), recorderd on
the container's `span0`. Standard library only; runs in about 5 minutes, and bounds itself at 10.

    tests/appliance/run.py --deb build/deb/recorderd_0.1.0_amd64.deb [--previous REF] [--keep]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "pcap_fixtures"
sys.path.insert(0, str(FIXTURES))
from generator import SipCall, write_pcap  # noqa: E402

DEADLINE_S = 600
CACHE = Path(os.environ.get("APPLIANCE_CACHE", "/var/cache/recorderd-appliance"))
MIRROR = "http://deb.debian.org/debian"
# What the box has before the package: Debian 12 with systemd, and what the checks drive (passwd
# for useradd, iproute2 for the SPAN link, faketime for the retention check). No compiler.
TREE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "passwd", "procps", "faketime", "python3", "libopus0",
                 "openssl"]
HOST_IF, SPAN_IF = "fspan0", "span0"
MACHINE = "rdappliance"
CONFIG = "/etc/recorderd/recorderd.yaml"
TRUNK = ["203.0.113.0/24", "2001:db8:5::/48"]  # the fixtures' carrier side (pcap_fixtures/generator.py)
CAP_NET_RAW = 1 << 13
SKIP_FIXTURES = {
    "demo-day",  # ten minutes of calls: the other fixtures cover its cases
    # Their second calls come from an SBC's inside address: with trunk_networks set, as on a site,
    # those are not inbound and not recorded (tests/test_legs.py replays them without a trunk side).
    "sbc-lookalike", "sbc-near-misses",
}
DROPINS = "/run/systemd/system/recorderd.service.d"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
CONSOLE = "recorderd-console"
CONSOLE_USER, CONSOLE_PASSWORD = "fconsole", "appliance-Console-7"  # a staff member signing in through PAM
# In the container, as root: GET /signin, then POST /signin with the right and a wrong password (read
# from stdin), against the package's own certificate; prints what came back as JSON.
CONSOLE_PROBE = r"""
import json, ssl, sys, urllib.error, urllib.parse, urllib.request
ctx = ssl.create_default_context(cafile="/etc/recorderd/console/cert.pem")
ctx.check_hostname = False  # the pair names the box's hostname; the probe dials 127.0.0.1
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), Stay)
def go(path, form=None):
    data = urllib.parse.urlencode(form).encode() if form else None
    try:
        r = opener.open(urllib.request.Request("https://127.0.0.1:8443" + path, data=data), timeout=30)
    except urllib.error.HTTPError as e:
        r = e
    return {"status": r.code, "csp": r.headers.get("Content-Security-Policy", ""),
            "cookies": r.headers.get_all("Set-Cookie") or [], "location": r.headers.get("Location", "")}
user, password = sys.argv[1], sys.stdin.read()
import time
for _ in range(100):  # a unit just (re)started is active before uvicorn listens
    try:
        go("/signin")
        break
    except urllib.error.URLError:
        time.sleep(0.2)
print(json.dumps({"get": go("/signin"), "good": go("/signin", {"user": user, "password": password}),
                  "bad": go("/signin", {"user": user, "password": password + "x"})}))
"""
BAD_WORDS = re.compile(r"EPERM|EACCES|EROFS|Permission denied|Read-only file system|Operation not permitted|"
                       r"SIGSYS|Bad system call|core-dump")


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:200]}: exit {result.returncode}: {(result.stderr or result.stdout)[-600:]}")
    return result


class Failed(Exception):
    pass


def expect(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


class Report:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        """One line: PASS/FAIL name: what was seen (the body appends to the list it gets)."""
        seen: list[str] = []
        t0 = time.monotonic()
        try:
            yield seen
        except (Failed, RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, ValueError) as exc:
            self.line(name, False, f"{exc}"[:900], t0)
        else:
            self.line(name, True, "; ".join(seen), t0)

    def line(self, name: str, ok: bool, detail: str, t0: float) -> None:
        self.results.append((name, ok))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail} ({time.monotonic() - t0:.1f} s)", flush=True)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok in self.results if not ok]


# -- the Debian tree and the container --------------------------------------------------------


def base_tree() -> Path:
    """The pristine Debian 12 tree, made once (about 25 s) and kept in the cache."""
    key = hashlib.sha256(" ".join(TREE_PACKAGES).encode()).hexdigest()[:12]
    tree = CACHE / f"bookworm-{key}"
    if (tree / "etc" / "os-release").exists() and (CACHE / f"bookworm-{key}.done").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    run(["mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(TREE_PACKAGES), "bookworm", str(tree),
         f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-updates main",
         "deb http://deb.debian.org/debian-security bookworm-security main"], timeout=300)
    (CACHE / f"bookworm-{key}.done").write_text("made by tests/appliance/run.py\n")
    return tree


class Container:
    """systemd-nspawn -b on a copy of the tree, in cgroups of its own (the host runs no systemd)."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree = tree
        self.work = work
        self.cgroups: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.boots = 0
        self.nspawn_dir_existed = Path("/run/systemd/nspawn").exists()

    def _cgroups(self) -> None:
        mine = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _n, controllers, path = line.split(":", 2)
            for c in (controllers or "unified").split(","):
                mine[c.removeprefix("name=")] = path
        for hier in sorted(Path("/sys/fs/cgroup").iterdir()):
            if not hier.is_dir() or not os.path.ismount(hier) and hier.name != "unified":
                continue
            base = mine.get(hier.name, "/")
            group = hier / base.lstrip("/") / f"recorderd-appliance-{os.getpid()}"
            group.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset is empty: give it the parent's
                if (group / knob).exists() and not (group / knob).read_text().strip():
                    (group / knob).write_text((group.parent / knob).read_text())
            self.cgroups.append(group)

    def _enter_cgroups(self) -> None:  # in the child, before exec
        for group in self.cgroups:
            with open(group / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    def boot(self) -> None:
        if not self.cgroups:
            self._cgroups()
        self.boots += 1
        log = open(self.work / f"console-{self.boots}.log", "wb")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--directory", str(self.tree), "--machine", MACHINE,
             "--keep-unit", "--register=no", "--console=pipe", f"--network-veth-extra={HOST_IF}:{SPAN_IF}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._enter_cgroups,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.leader:
            self.leader = next((pid for pid in _children(self.proc.pid) if _comm(pid) == "systemd"), 0)
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn ended: {(self.work / f'console-{self.boots}.log').read_text()[-800:]}")
            time.sleep(0.2)
        expect(self.leader, "no systemd in the container after 60 s")
        state = ""
        deadline = time.monotonic() + 90
        while not state and time.monotonic() < deadline:  # PID 1 is there before its bus: "Failed to connect"
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=90).stdout.strip()
            if not state:
                time.sleep(0.3)
        expect(state in ("running", "degraded"), f"the booted system is {state!r}")
        for cmd in ([f"ip link set {HOST_IF} up"], [f"sysctl -q -w net.ipv6.conf.{HOST_IF}.disable_ipv6=1"]):
            run(["sh", "-c", *cmd])
        # the box's SPAN port, as its ifupdown would bring it up (no address, no IPv6 chatter)
        self.sh(f"sysctl -q -w net.ipv6.conf.{SPAN_IF}.disable_ipv6=1; ip link set {SPAN_IF} up")

    def sh(self, script: str, check: bool = True, timeout: float = 60, user: str | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A shell command in the booted system (all its namespaces), as root or as `user`."""
        cmd = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
               "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"]
        if user:
            cmd += ["runuser", "-u", user, "--"]
        return run([*cmd, "/bin/sh", "-c", script], timeout=timeout, check=check, input=stdin)

    def poweroff(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.sh("systemctl poweroff", check=False, timeout=10)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.leader = 0

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for group in self.cgroups:  # with what the container's systemd made below it (payload/...)
            for below, _dirs, _files in os.walk(group, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(below)
        nspawn = Path("/run/systemd/nspawn")
        shutil.rmtree(nspawn / "propagate" / MACHINE, ignore_errors=True)
        if not self.nspawn_dir_existed:
            shutil.rmtree(nspawn, ignore_errors=True)
        run(["ip", "link", "del", HOST_IF], check=False)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# -- the packages -------------------------------------------------------------------------------


def previous_deb(ref: str, current: Path, out: Path) -> tuple[Path, str]:
    """The package of the previous version, built from `ref` with that tree's own packaging (cached
    by commit). A commit from before the packaging existed gives the current tree at a lower version."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", ref]).stdout.strip()
    version = re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
    has_packaging = run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}:debian/build-deb"], check=False).returncode == 0
    lower = f"{version}.dev0"  # PEP 440 and dpkg (~dev0) both order it before this version: an upgrade
    cached = CACHE / "debs" / f"recorderd_{version}-before-{commit[:12]}.deb"
    if cached.exists():
        return cached, f"{ref} ({commit[:8]}), cached"
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recorderd-prev-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        if has_packaging:
            archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
            run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, timeout=60)
            archive.wait()
            how = f"{ref} ({commit[:8]}) with its own debian/"
        else:
            run(["sh", "-c", f"cd {ROOT} && git ls-files -z --cached | xargs -0 cp -P --parents -t {src}"])
            how = f"{ref} ({commit[:8]}) predates debian/: this tree"
        deb = run([str(ROOT / "debian" / "build-deb"), str(src), str(out / "prev"), lower], timeout=400).stdout.strip().splitlines()[-1]
        shutil.copy(deb, cached)
    return cached, how + f", as {lower}"


def _version(deb: Path) -> str:
    return run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


# -- the appliance's own commands ------------------------------------------------------------------


class Box:
    def __init__(self, c: Container) -> None:
        self.c = c

    def ctl(self, user: str, args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.c.sh(f"cd /tmp && recorderctl --config {CONFIG} {args}", user=user, check=check, timeout=timeout)

    def recordings(self) -> list[dict]:
        return json.loads(self.ctl("fmanager", "list --json").stdout)

    def show(self, prop: str) -> str:
        return self.c.sh(f"systemctl show recorderd -p {prop} --value").stdout.strip()

    def main_pid(self) -> int:
        return int(self.show("MainPID") or 0)

    def journal(self, since: float = 0.0) -> list[dict]:
        """The service's journal entries (since a moment of the shared clock, to the microsecond)."""
        after = f"--since=@{int(since) - 1}" if since else ""
        out = self.c.sh(f"journalctl -q -o json --no-pager _SYSTEMD_UNIT=recorderd.service {after}", timeout=60).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries if int(e["__REALTIME_TIMESTAMP"]) > since * 1e6]

    def journal_text(self) -> str:
        return self.c.sh("journalctl -q -o verbose --no-pager -u recorderd", timeout=60).stdout

    def cursor(self) -> float:
        return time.time()  # the container's clock is the host's

    def events(self, event: str, since: float = 0.0) -> list[dict]:
        return [e for e in self.journal(since) if e.get("EVENT") == event]

    def wait(self, what: str, test: Callable[[], object], timeout: float = 30) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = test()
            if value:
                return value
            time.sleep(0.3)
        raise Failed(f"{what}: not seen within {timeout:.0f} s")

    def wait_active(self, other_than: int = 0, timeout: float = 30) -> int:
        def up() -> int:
            if self.show("ActiveState") != "active":
                return 0
            pid = self.main_pid()
            return pid if pid and pid != other_than else 0

        return int(self.wait("recorderd active" + (" again (a new process)" if other_than else ""), up, timeout))  # type: ignore[arg-type]

    def dropin(self, name: str, text: str | None) -> None:
        path = f"{DROPINS}/{name}.conf"
        if text is None:
            self.c.sh(f"rm -f {path}; systemctl daemon-reload")
        else:
            self.c.sh(f"mkdir -p {DROPINS} && cat > {path} && systemctl daemon-reload", stdin=text)

    def restart(self) -> int:
        old = self.main_pid()
        self.c.sh("systemctl reset-failed recorderd; systemctl restart recorderd", timeout=60)
        return self.wait_active(other_than=old)

    def capture_open(self) -> str:
        """The service's capture as the kernel sees it: an AF_PACKET socket of the service's on the
        SPAN port, and the port in promiscuous mode. Raises Failed otherwise."""
        pid = self.main_pid()
        expect(self.show("ActiveState") == "active" and pid, f"recorderd is {self.show('ActiveState')} ({self.show('Result')})")
        index = self.c.sh(f"cat /sys/class/net/{SPAN_IF}/ifindex").stdout.strip()
        inodes = {line.split()[-1] for line in self.c.sh("cat /proc/net/packet").stdout.splitlines()[1:]
                  if line.split()[4] == index}
        fds = self.c.sh(f"ls -l /proc/{pid}/fd", check=False).stdout
        mine = [i for i in inodes if f"socket:[{i}]" in fds]
        expect(mine, f"no AF_PACKET socket of pid {pid} on {SPAN_IF} (ifindex {index})")
        expect(self.promiscuity() > 0, f"{SPAN_IF} is not in promiscuous mode (promiscuity 0)")
        return f"pid {pid} has an AF_PACKET socket on {SPAN_IF}, which is in promiscuous mode"

    def promiscuity(self) -> int:
        """How many hold the SPAN port promiscuous (PACKET_MR_PROMISC counts here; `ip link`'s PROMISC
        flag shows only what was set with SIOCSIFFLAGS)."""
        m = re.search(r"promiscuity (\d+)", self.c.sh(f"ip -d link show {SPAN_IF}").stdout)
        return int(m.group(1)) if m else 0


def site_config(c: Container) -> str:
    """The technician's edit of /etc/recorderd/recorderd.yaml: the SPAN port and the trunk side; the
    store is on a plain directory here, so the encrypted-volume requirement is waived where the
    installed version has it."""
    knows = c.sh("recorderd preflight --help >/dev/null; grep -c require_encrypted_volume "
                 "/usr/lib/recorderd/lib/python3.11/site-packages/recorderd/config.py", check=False).stdout.strip()
    waive = "  require_encrypted_volume: false   # the appliance test's tree is a plain directory\n" if knows not in ("", "0") else ""
    text = c.sh(f"cat {CONFIG}").stdout
    text = text.replace("  interfaces: []", f"  interfaces: [{SPAN_IF}]")
    text = text.replace("  trunk_networks: []", "  trunk_networks: [" + ", ".join(f'"{n}"' for n in TRUNK) + "]")
    if waive:
        text = re.sub(r"(?m)^  require_encrypted_volume:.*\n", "", text).replace("store:\n", "store:\n" + waive)
    return "# edited by the site's technician (appliance test)\n" + text


def send(pcap: Path, multiplier: float = 20) -> None:
    run(["tcpreplay", "-q", "-i", HOST_IF, f"--multiplier={multiplier}", str(pcap)], timeout=120)


def fixtures() -> tuple[list[Path], dict[str, dict]]:
    names = sorted(p.stem for p in FIXTURES.glob("*.pcap") if p.stem not in SKIP_FIXTURES)
    expected: dict[str, dict] = {}
    for name in names:
        for rec in json.loads((FIXTURES / f"{name}.json").read_text())["recordings"]:
            expected[rec["call_id"]] = rec
    return [FIXTURES / f"{n}.pcap" for n in names], expected


def partial_call(work: Path, call_id: str, seconds: float, seed: int) -> tuple[Path, SipCall]:
    """A designated inbound call cut off after `seconds` of audio (no BYE): a call in progress."""
    call = SipCall(call_id, "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09012345678",
                   time.time(), talk=seconds + 30, seed=seed)
    cut = call.media_start + seconds
    pcap = work / f"{call_id}.pcap"
    write_pcap(str(pcap), [p for p in call.packets() if p[0] < cut])
    return pcap, call


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the checks ---------------------------------------------------------------------------------


class Appliance:
    def __init__(self, c: Container, work: Path, report: Report, deb: Path, prev: Path) -> None:
        self.c, self.work, self.r, self.deb, self.prev = c, work, report, deb, prev
        self.box = Box(c)
        self.exports: dict[str, str] = {}
        self.held = ""

    def install(self, deb: Path) -> subprocess.CompletedProcess[str]:
        shutil.copy(deb, self.c.tree / "root" / deb.name)
        return self.c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/{deb.name}", timeout=180)

    def export_all(self) -> dict[str, str]:
        """Every recording exported by a staff user through the socket: id -> SHA-256 of the copy."""
        out = {}
        for rec in self.box.recordings():
            fmt = "pcap" if rec["audio"] == "not-decoded" else "wav"
            path = f"/tmp/export-{rec['id']}.{fmt}"
            self.box.ctl("fstaff", f"export {rec['id']} --out {path} --purpose quality --format {fmt}")
            out[rec["id"]] = self.c.sh(f"sha256sum {path} && rm -f {path}").stdout.split()[0]
        return out

    def run(self) -> None:
        box, c = self.box, self.c
        with self.r.check("install-previous-and-not-started") as seen:
            out = self.install(self.prev)
            seen.append(f"apt installed {self.prev.name} (no compiler in the tree: "
                        f"{'none' if c.sh('command -v gcc cc', check=False).returncode else 'FOUND'})")
            expect(c.sh("command -v gcc cc", check=False).returncode != 0, "a compiler is in the tree")
            expect("records nothing until the site is set up" in out.stdout, "postinst did not say what to do next")
            status = c.sh("systemctl status recorderd --no-pager -l", check=False).stdout
            expect("Result: exec-condition" in status and "no SPAN interface named" in status and "init" in status,
                   f"systemctl status does not say what is missing: {status[-600:]}")
            expect(box.promiscuity() == 0, "the SPAN port was opened before set-up")
            seen.append("enabled but skipped by its ExecCondition; status names the SPAN port and init as missing")
        with self.r.check("site-setup-and-enable-now") as seen:
            c.sh(f"cat > {CONFIG}", stdin=site_config(c))
            for user, group in (("fmanager", "recorder-manager"), ("fstaff", "recorder-staff"),
                                ("ftech", "recorder-technician"), ("fnobody", "")):
                c.sh(f"id {user} >/dev/null 2>&1 || useradd -m {'-G ' + group if group else ''} {user}")
            status = c.sh("systemctl start recorderd; systemctl status recorderd --no-pager -l", check=False).stdout
            expect("is not initialised" in status, "before init, status does not say the store is missing")
            c.sh(f"recorderctl --config {CONFIG} init", user="recorderd")
            c.sh("systemctl enable --now recorderd", timeout=60)
            expect(box.show("ActiveState") == "active", f"not active: {box.show('ActiveState')} {box.show('Result')}")
            seen.append(box.capture_open() + " when systemctl start returned (READY after the capture opened)")
            started = box.events("started")
            expect(started, "no EVENT=started in the journal")
            status_text = box.wait("STATUS line", lambda: "active calls" in box.show("StatusText") and box.show("StatusText"))
            seen.append(f"STATUS={status_text}")
        self.fixtures("record-fixtures-previous")
        with self.r.check("hold-and-edit-config-before-upgrade") as seen:
            rec = box.recordings()[0]
            self.held = rec["id"]
            box.ctl("fmanager", f"hold {rec['id']} --until 2027-12-31 --reason appliance-test --ref APP-1")
            c.sh(f"sed -i 's/^  days: 14$/  days: 14   # site: kept as the guideline says/' {CONFIG}")
            expect("# site: kept" in c.sh(f"cat {CONFIG}").stdout, "the config edit did not take")
            self.exports = self.export_all()
            seen.append(f"hold on {rec['id']}; {len(self.exports)} recordings exported by fstaff")
        with self.r.check("upgrade") as seen:
            old_pid, before = box.main_pid(), box.recordings()
            config = c.sh(f"cat {CONFIG}").stdout
            out = self.install(self.deb)
            waive = site_config(c)
            if "require_encrypted_volume" in waive and "require_encrypted_volume" not in config:
                # the new version refuses a store off an encrypted volume, unless the site opts out
                # with a key the previous version did not know: the technician adds it, as here
                c.sh(f"sed -i 's/^store:$/store:\\n  require_encrypted_volume: false/' {CONFIG}; "
                     "systemctl reset-failed recorderd; systemctl restart recorderd", check=False)
                seen.append("the previous version lacked store.require_encrypted_volume: added after the upgrade")
            new_pid = box.wait_active(other_than=old_pid)
            expect(_version(self.deb) in c.sh("recorderd --version").stdout, "recorderd --version is not the package's")
            expect("# site: kept" in c.sh(f"cat {CONFIG}").stdout, "the edited config was replaced")
            expect(not c.sh(f"ls {CONFIG}.dpkg-* 2>/dev/null", check=False).stdout, "dpkg left a .dpkg-new/.dpkg-dist")
            after = box.recordings()
            expect([r["id"] for r in after] == [r["id"] for r in before], "the recordings changed")
            exports = self.export_all()
            expect(exports == self.exports, "an export differs after the upgrade")
            expect(any(h for h in next(r for r in after if r["id"] == self.held)["holds"]), "the hold is gone")
            box.ctl("fmanager", "verify")
            box.ctl("fmanager", "audit verify")
            # the checkpoints the service sent at its stop and start, as journald keeps them (its unit,
            # its user): read by the manager, whom the site lets read the system journal
            c.sh("usermod -aG systemd-journal fmanager")
            against = box.ctl("fmanager", "audit verify --against-journal", check=False)
            checked = re.search(r"against the journal: (\d+) checkpoint\(s\) checked: each is a row of the chain",
                                against.stdout)
            expect(against.returncode == 0 and checked is not None and int(checked[1]) >= 1,
                   f"audit verify --against-journal did not pass on the service's checkpoints (exit "
                   f"{against.returncode}): {against.stdout[-800:]} {against.stderr[-800:]} | the journal's: "
                   + c.sh("journalctl -q -o json --no-pager EVENT=audit-checkpoint --output-fields=SYSLOG_IDENTIFIER,"
                          "AUDIT_SEQ,_UID,_SYSTEMD_UNIT | tail -5", check=False).stdout[-1500:])
            seen.append(f"{self.prev.name} -> {self.deb.name}: restarted (pid {old_pid} -> {new_pid}), "
                        f"{len(exports)} exports byte-identical, verify and audit verify pass "
                        f"(against the journal: {checked[1]} checkpoints), hold kept, edited config kept")
            seen.append(box.capture_open())
            del out
        self.privileges()
        self.console()
        self.fixtures("record-fixtures")
        self.roles()
        self.reload()
        self.stop_mid_call()
        self.kill_and_recover()
        self.watchdog()
        self.reboot()
        self.exposure()
        self.negative_control()
        self.retention()
        self.remove_and_purge()

    def fixtures(self, name: str) -> None:
        box = self.box
        with self.r.check(name) as seen:
            pcaps, expected = fixtures()
            before = {r["id"] for r in box.recordings()}
            since = box.cursor()
            for pcap in pcaps:
                send(pcap, multiplier=1 if pcap.stem == "hold" else 20)  # hold's pause is what it tests
                time.sleep(1.2)  # past the BYE linger: the next file reuses the media ports

            def new() -> dict[str, dict]:
                return {r["call_id"]: r for r in box.recordings() if r["id"] not in before}

            try:
                box.wait("every call kept", lambda: set(new()) >= set(expected), 20)
            except Failed:
                missing = sorted(set(expected) - set(new()))  # (the fixtures' Call-IDs: made up, not personal)
                raise Failed(f"every call kept: {len(missing)} not within 20 s: {', '.join(missing[:10])}") from None
            got = new()
            expect(set(got) == set(expected), f"recorded {sorted(set(got) - set(expected))} not expected, "
                                              f"missing {sorted(set(expected) - set(got))}")
            for call_id, rec in got.items():
                want = expected[call_id]
                expect((rec["did_label"], rec["codec"], rec["state"]) == (want["did_label"], want["codec"], want["state"]),
                       f"{call_id}: {rec['did_label']} {rec['codec']} {rec['state']}, expected {want}")
            events = {e["RECORDING_ID"]: e for e in box.events("call-recorded", since) if "RECORDING_ID" in e}
            for rec in got.values():
                expect(rec["id"] in events, f"no EVENT=call-recorded RECORDING_ID={rec['id']}")
                expect(events[rec["id"]].get("DID_LABEL") == rec["did_label"], f"{rec['id']}: DID_LABEL missing or wrong")
            text = box.journal_text()
            callers = {r["caller"] for r in box.recordings() if r.get("caller")}
            leaked = [n for n in callers if n in text]
            expect(not leaked, f"{len(leaked)} caller number(s) in the journal")
            direct = box.events("spool-files-direct") + box.events("spool-files-failed")  # since the box booted
            expect(not direct, "the service made its spool files as calls started, not ahead (unnamed files "
                               f"and linkat through /proc under its sandbox): {direct[0].get('MESSAGE', '')}"
                   if direct else "")
            drops = box.show("StatusText")
            seen.append(f"{len(pcaps)} fixtures sent, {len(got)} calls recorded as expected, each with "
                        f"EVENT=call-recorded RECORDING_ID= DID_LABEL=; no caller number in the journal; "
                        f"spool files made ahead (no EVENT=spool-files-direct); {drops}")

    def privileges(self) -> None:
        with self.r.check("privileges") as seen:
            pid = self.box.main_pid()
            status = dict(line.split(":\t", 1) for line in self.c.sh(f"cat /proc/{pid}/status").stdout.splitlines() if ":\t" in line)
            uid = self.c.sh("id -u recorderd").stdout.strip()
            expect(status["Uid"].split()[:2] == [uid, uid], f"Uid {status['Uid']}, recorderd is {uid}")
            eff, bnd = int(status["CapEff"], 16), int(status["CapBnd"], 16)
            expect(eff == bnd == CAP_NET_RAW, f"CapEff {status['CapEff']} CapBnd {status['CapBnd']}: not CAP_NET_RAW alone")
            expect(status["NoNewPrivs"].strip() == "1", "NoNewPrivs is not set")
            expect(status["Seccomp"].strip() == "2", f"Seccomp {status['Seccomp']} (2 = filter)")
            environ = self.c.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
            expect("GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in environ,  # the unit's: malloc's heap on huge pages
                   "the unit's GLIBC_TUNABLES did not reach the service")
            seen.append(f"uid {uid} (recorderd), CapEff = CapBnd = CAP_NET_RAW only (no CAP_NET_ADMIN), NoNewPrivs 1, "
                        f"Seccomp 2, GLIBC_TUNABLES from its unit; {self.box.capture_open()}")

    def console(self) -> None:
        """The web console as the package leaves it: its unit up, its user with no capability, its
        certificate and key, and a real user signing in through the box's PAM."""
        c = self.c
        with self.r.check("console-unit-and-user") as seen:
            enabled = c.sh(f"systemctl is-enabled {CONSOLE}", check=False).stdout.strip()

            def up() -> int:
                if c.sh(f"systemctl show {CONSOLE} -p ActiveState --value").stdout.strip() != "active":
                    return 0
                return int(c.sh(f"systemctl show {CONSOLE} -p MainPID --value").stdout.strip() or 0)

            pid = int(self.box.wait(f"{CONSOLE} active", up, 30))  # type: ignore[arg-type]
            status = dict(line.split(":\t", 1) for line in c.sh(f"cat /proc/{pid}/status").stdout.splitlines() if ":\t" in line)
            uid = c.sh(f"id -u {CONSOLE}").stdout.strip()
            shadow = c.sh("getent group shadow | cut -d: -f3").stdout.strip()
            expect(status["Uid"].split() == [uid] * 4, f"Uid {status['Uid']}, {CONSOLE} is {uid}")
            caps = {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
            expect(not any(caps.values()), f"capabilities: {caps}")
            expect(status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2", "NoNewPrivs or seccomp not set")
            expect(shadow in status["Groups"].split(), f"groups {status['Groups']}: not shadow ({shadow})")
            key = c.sh("stat -c '%U:%G %a' /etc/recorderd/console/key.pem").stdout.strip()
            expect(key == f"root:{CONSOLE} 640", f"the key is {key}")
            seen.append(f"{enabled} by the package, pid {pid} as uid {uid} ({CONSOLE}), groups with shadow, no capability "
                        f"(CapBnd 0), NoNewPrivs 1, Seccomp 2; key.pem {key}")
            out = c.sh(f"systemd-analyze security {CONSOLE} --no-pager", check=False, timeout=60).stdout
            m = re.search(rf"Overall exposure level for {CONSOLE}.service: ([0-9.]+)", out)
            expect(m, f"no exposure score: {out[-300:]}")
            expect(float(m.group(1)) <= 2.5, f"exposure {m.group(1)} > 2.5")
            seen.append(f"systemd-analyze security {CONSOLE}: {m.group(1)}")
        with self.r.check("console-https-and-pam-sign-in") as seen:
            c.sh(f"id {CONSOLE_USER} >/dev/null 2>&1 || useradd -m -G recorder-staff {CONSOLE_USER}")
            c.sh("chpasswd", stdin=f"{CONSOLE_USER}:{CONSOLE_PASSWORD}\n")
            (c.tree / "root" / "console_probe.py").write_text(CONSOLE_PROBE)
            got = json.loads(c.sh(f"python3 /root/console_probe.py {CONSOLE_USER}", stdin=CONSOLE_PASSWORD, timeout=90).stdout)
            page = got["get"]
            expect(page["status"] == 200, f"GET /signin: {page['status']}")
            expect("default-src 'self'" in page["csp"] and "frame-ancestors 'none'" in page["csp"], f"CSP: {page['csp']!r}")
            good, bad = got["good"], got["bad"]
            session = [k for k in good["cookies"] if k.startswith("recorderd_session=")]
            expect(good["status"] == 303 and session, f"the right password: {good['status']} {good['cookies']}")
            expect(all(flag in session[0].lower() for flag in ("httponly", "secure", "samesite=strict")), session[0])
            expect(bad["status"] == 401 and not any(k.startswith("recorderd_session=") for k in bad["cookies"]),
                   f"a wrong password: {bad['status']} {bad['cookies']}")
            journal = c.sh(f"journalctl -q --no-pager -u {CONSOLE}", check=False).stdout
            expect(CONSOLE_PASSWORD not in journal, "the password is in the console's journal")
            seen.append(f"https://127.0.0.1:8443/signin 200 with its CSP (verified against the package's own certificate); "
                        f"{CONSOLE_USER}'s password through PAM -> 303 {good['location']} with a HttpOnly Secure "
                        "SameSite=Strict session cookie; a wrong one -> 401, no cookie")
            # negative control: without group shadow the same password must be refused (else the
            # check above proves nothing about PAM); then the unit as shipped again
            dropins = f"/run/systemd/system/{CONSOLE}.service.d"
            c.sh(f"gpasswd -d {CONSOLE} shadow >/dev/null; mkdir -p {dropins} && printf '[Service]\\nSupplementaryGroups=\\n' "
                 f"> {dropins}/appliance-no-shadow.conf && systemctl daemon-reload && systemctl restart {CONSOLE}")
            self.box.wait(f"{CONSOLE} active without shadow", up, 30)
            again = json.loads(c.sh(f"python3 /root/console_probe.py {CONSOLE_USER}", stdin=CONSOLE_PASSWORD, timeout=90).stdout)
            c.sh(f"gpasswd -a {CONSOLE} shadow >/dev/null; rm -f {dropins}/appliance-no-shadow.conf; systemctl daemon-reload; "
                 f"systemctl restart {CONSOLE}")
            self.box.wait(f"{CONSOLE} active again", up, 30)
            expect(again["good"]["status"] == 401, f"without group shadow the right password got {again['good']['status']}")
            seen.append("without group shadow the same password -> 401 (pam_unix cannot read the hash; its helper "
                        "is refused by NoNewPrivileges and the filter)")

    def roles(self) -> None:
        box = self.box
        with self.r.check("recorderctl-through-the-socket") as seen:
            recs = json.loads(box.ctl("fstaff", "list --json").stdout)
            rec = next(r for r in recs if r["audio"] == "exact")
            box.ctl("fstaff", f"export {rec['id']} --out /tmp/staff-copy.wav --purpose quality")
            ls = self.c.sh("stat -c '%U %a' /tmp/staff-copy.wav && sha256sum /tmp/staff-copy.wav").stdout.split()
            expect(ls[:2] == ["fstaff", "600"], f"the copy is {ls[:2]}, not fstaff's 0600")
            expect(ls[2] == rec["sha256"], "the exported copy is not the recorded SHA-256")
            refused = box.ctl("fnobody", "list", check=False)
            expect(refused.returncode == 3, f"a user in no role got exit {refused.returncode}")
            audit = box.ctl("fmanager", "audit show --json", check=False).stdout
            expect('"fnobody"' in audit and "socket" in audit, "the refusal is not in the audit log")
            seen.append(f"fstaff listed {len(recs)} and exported {rec['id']} (fstaff 0600, the recorded SHA-256) through "
                        "the socket; fnobody refused with exit 3, audited")
            self.c.sh("rm -f /tmp/staff-copy.wav")

    def reload(self) -> None:
        box, c = self.box, self.c
        with self.r.check("reload-and-did-edits") as seen:
            original = c.sh("cat /etc/recorderd/dids.yaml").stdout
            n = len(re.findall(r"number:", original))
            since = box.cursor()
            c.sh("systemctl reload recorderd")
            box.wait("EVENT=reload after systemctl reload", lambda: box.events("reload", since))
            try:
                since = box.cursor()
                c.sh("cat >> /etc/recorderd/dids.yaml", stdin='  - {number: "044-200-9999", label: アプライアンス試験}\n')
                good = box.wait("the good edit", lambda: box.events("reload", since))
                expect(f"{n + 1} designated numbers" in good[-1]["MESSAGE"], good[-1]["MESSAGE"])
                since = box.cursor()
                c.sh("cat >> /etc/recorderd/dids.yaml", stdin='  - {number: "044-200-39x9", label: broken}\n')
                bad = box.wait("the bad edit refused", lambda: box.events("reload-failed", since))
                msg = bad[-1]["MESSAGE"]
                expect(f"the previous list ({n + 1} numbers) stays in force" in msg and "044-200-39x9" in msg, msg)
                # (one append is several file events: a second read may be under way, the unit
                # "reloading" for a moment, as after any reload; it must come back by itself)
                box.wait("the service active after the bad edit (not stopped by it)",
                         lambda: box.show("ActiveState") == "active", 10)
            finally:  # the original list back even when a check failed: a broken file would fail every start after
                since = box.cursor()
                c.sh("cat > /etc/recorderd/dids.yaml", stdin=original)
            box.wait("the original list back", lambda: box.events("reload", since))
            seen.append(f"systemctl reload -> EVENT=reload; a good edit -> {n + 1} numbers; a bad one refused, "
                        f"{n + 1} kept; the original back")

    def stop_mid_call(self) -> None:
        box = self.box
        with self.r.check("stop-mid-call-then-start") as seen:
            pcap, call = partial_call(self.work, "appliance-stop-1", 2.0, seed=41)
            send(pcap, multiplier=4)
            time.sleep(0.5)
            self.c.sh("systemctl stop recorderd", timeout=40)
            expect(box.show("ActiveState") == "inactive", f"after stop: {box.show('ActiveState')}")
            pid = box.restart()  # recorderctl then reads the store through the socket
            rec = next((r for r in box.recordings() if r["call_id"] == call.call_id), None)
            expect(rec, "the call in progress was not kept")
            expect(rec["state"] == "incomplete" and rec["end_reason"] == "shutdown" and rec["frames"] > 8000,
                   f"{rec['state']} {rec['end_reason']} {rec['frames']} frames")
            seen.append(f"kept as incomplete (shutdown) with {rec['frames'] / 8000:.1f} s of audio; started again (pid {pid})")

    def kill_and_recover(self) -> None:
        box = self.box
        with self.r.check("kill-9-restart-recovery") as seen:
            pcap, call = partial_call(self.work, "appliance-kill-1", 3.0, seed=42)
            old = box.main_pid()
            since = box.cursor()
            send(pcap, multiplier=1)
            self.c.sh("systemctl kill -s KILL recorderd")
            new = box.wait_active(other_than=old, timeout=30)
            box.wait("EVENT=recording-recovered", lambda: box.events("recording-recovered", since), 20)
            rec = next((r for r in box.recordings() if r["call_id"] == call.call_id), None)
            expect(rec and rec["end_reason"].startswith("recovered after an unclean stop"), f"not recovered: {rec}")
            expect(rec["frames"] >= 8000, f"only {rec['frames']} frames recovered")
            seen.append(f"pid {old} killed; Restart= started {new}; the interrupted call recovered "
                        f"({rec['frames'] / 8000:.1f} s of audio)")

    def watchdog(self) -> None:
        box = self.box
        with self.r.check("watchdog") as seen:
            box.dropin("appliance-watchdog", "[Service]\nWatchdogSec=4\n")  # the shipped 30 s, shortened
            pid = box.restart()
            since = box.cursor()
            self.c.sh(f"kill -STOP {pid}")
            new = box.wait_active(other_than=pid, timeout=40)
            text = self.c.sh(f"journalctl -q --no-pager -u recorderd --since=@{int(since)}").stdout
            expect("Watchdog timeout" in text, "systemd did not report a watchdog timeout")
            box.dropin("appliance-watchdog", None)
            box.restart()
            seen.append(f"pid {pid} stopped (SIGSTOP): watchdog timeout, killed, restarted as {new}")

    def reboot(self) -> None:
        box = self.box
        with self.r.check("poweroff-and-boot") as seen:
            before = box.recordings()
            t0 = time.monotonic()
            self.c.poweroff()
            self.c.boot()
            pid = box.wait_active(timeout=60)
            after = box.recordings()
            expect([r["id"] for r in after] == [r["id"] for r in before], "the recordings differ after the boot")
            box.ctl("ftech", "verify")
            seen.append(f"clean poweroff and boot in {time.monotonic() - t0:.0f} s; recorderd came back by itself "
                        f"(pid {pid}), {len(after)} recordings, verify passes; {box.capture_open()}")

    def exposure(self) -> None:
        with self.r.check("exposure") as seen:
            out = self.c.sh("systemd-analyze security recorderd --no-pager", check=False, timeout=60).stdout
            m = re.search(r"Overall exposure level for recorderd.service: ([0-9.]+)", out)
            expect(m, f"no score: {out[-300:]}")
            score = float(m.group(1))
            expect(score <= 1.7, f"exposure {score} > 1.7")
            seen.append(f"systemd-analyze security recorderd: {score}")

    def negative_control(self) -> None:
        """Take AF_PACKET away: the capture check must fail (else it proves nothing), and a start
        that always fails must end `failed` by the start limit, not loop."""
        box = self.box
        with self.r.check("negative-control-no-af-packet") as seen:
            box.dropin("appliance-no-packet", "[Service]\nRestrictAddressFamilies=\n"
                                              "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n")
            self.c.sh("systemctl reset-failed recorderd; systemctl restart recorderd", check=False, timeout=60)
            try:
                box.capture_open()
            except Failed as exc:
                seen.append(f"the capture check fails as it must: {exc}")
            else:
                raise Failed("the capture check passed without AF_PACKET: it proves nothing")
            t0 = time.monotonic()
            box.wait("failed by the start limit", lambda: box.show("ActiveState") == "failed" and "Start request "
                     "repeated too quickly" in self.c.sh("journalctl -q --no-pager -u recorderd -n 5").stdout, timeout=60)
            restarts = box.show("NRestarts")
            time.sleep(4)  # RestartSec=2: a loop would have started again by now
            expect(box.show("ActiveState") == "failed" and box.show("NRestarts") == restarts, "it kept restarting")
            seen.append(f"ended failed by the start limit after {time.monotonic() - t0:.0f} s more "
                        f"(NRestarts={restarts}), and stayed failed")
            box.dropin("appliance-no-packet", None)
            box.restart()
            seen.append("without the drop-in: " + box.capture_open())

    def retention(self) -> None:
        box = self.box
        with self.r.check("retention-in-the-sandbox") as seen:
            before = box.recordings()
            since = box.cursor()
            box.dropin("appliance-faketime", f"[Service]\nEnvironment=LD_PRELOAD={FAKETIME_LIB} FAKETIME=+20d "
                                             "FAKETIME_DONT_FAKE_MONOTONIC=1\n")
            box.restart()
            # 20 days at once is a clock jump: retention stops until a manager confirms the clock
            jumped = any("clock jump" in str(e.get("MESSAGE")) for e in box.journal(since)) or bool(box.wait(
                "the clock jump noticed", lambda: any("clock jump" in str(e.get("MESSAGE")) for e in box.journal(since)), 20))
            box.ctl("fmanager", "retention confirm-clock")
            seen.append(f"clock jump {'reported, ' if jumped else ''}confirmed by fmanager")
            box.wait("EVENT=recording-erased", lambda: box.events("recording-erased", since), 90)
            with contextlib.suppress(Failed):  # each erasure overwrites, syncs and checkpoints: let them run a while
                box.wait("every due recording erased", lambda: len(box.events("recording-erased", since)) >= len(before) - 1, 40)
            erased = {e["RECORDING_ID"] for e in box.events("recording-erased", since)}
            expect(self.held not in erased, "the held recording was erased")
            left = {r["id"] for r in box.recordings()}
            expect(self.held in left and not left & erased, "an erased recording is still listed, or the held one is not")
            bad = [e["MESSAGE"] for e in box.journal() if BAD_WORDS.search(str(e.get("MESSAGE", "")))]
            expect(not bad, f"{len(bad)} journal line(s) with a permission or seccomp error: {bad[:2]}")
            box.dropin("appliance-faketime", None)
            box.restart()
            seen.append(f"20 days on (libfaketime, a drop-in): the service erased {len(erased)} of the {len(before) - 1} due "
                        "recordings in the time given, the held one kept; no EPERM/EACCES/EROFS/SIGSYS in the journal")

    def remove_and_purge(self) -> None:
        box, c = self.box, self.c
        with self.r.check("remove-then-install") as seen:
            before = box.recordings()
            c.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q recorderd", timeout=120)
            kept = c.sh(f"ls -d /var/lib/recorderd/store/index.sqlite /var/lib/recorderd/master.key {CONFIG}", check=False)
            expect(kept.returncode == 0, f"remove took away: {kept.stderr}")
            expect(box.show("ActiveState") in ("inactive", ""), "still running after remove")
            self.install(self.deb)
            box.wait_active(timeout=30)
            after = box.recordings()
            expect(after == before, "the store did not come back as it was")
            box.ctl("ftech", "verify")
            seen.append(f"remove kept the store, key and config; install again: {len(after)} recordings as before, verify passes")
        with self.r.check("purge-keeps-recordings") as seen:
            out = c.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q recorderd 2>&1", timeout=120).stdout
            expect("only 'recorderctl decommission' erases recordings" in out, "purge did not say the store stays")
            expect(c.sh("ls /var/lib/recorderd/store/index.sqlite", check=False).returncode == 0, "purge erased the store")
            expect(c.sh(f"ls {CONFIG}", check=False).returncode != 0, "purge left the config")
            seen.append("purge removed the config, kept the store, and said only decommission erases recordings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", required=True, type=Path)
    parser.add_argument("--previous", default=os.environ.get("APPLIANCE_PREVIOUS", "HEAD~1"),
                        help="git ref whose package is upgraded from (default HEAD~1)")
    parser.add_argument("--keep", action="store_true", help="keep the work tree (for debugging)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("SKIP appliance test: needs root (systemd-nspawn, cgroups, veth)")
        return 0
    for tool in ("systemd-nspawn", "mmdebstrap", "tcpreplay", "nsenter", "dpkg-deb"):
        if not shutil.which(tool):
            print(f"FAIL appliance test: {tool} is missing (apt-get install systemd-container mmdebstrap tcpreplay)")
            return 1
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="recorderd-appliance-", dir="/var/tmp"))
    container: Container | None = None

    def out_of_time() -> None:
        print(f"FAIL deadline: the appliance test ran past {DEADLINE_S} s; stopping it", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(DEADLINE_S, out_of_time)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        with report.check("debian-tree") as seen:
            t0 = time.monotonic()
            base = base_tree()
            tree = work / "tree"
            run(["cp", "-a", "--reflink=auto", str(base), str(tree)], timeout=120)
            seen.append(f"{base} ({time.monotonic() - t0:.0f} s with the cache or without)")
        with report.check("previous-package") as seen:
            prev, how = previous_deb(args.previous, args.deb, work)
            seen.append(how)
        container = Container(tree, work)
        with report.check("boot") as seen:
            container.boot()
            seen.append(f"systemd {container.sh('systemctl --version').stdout.split()[1]} running as PID 1 in nspawn")
        if not report.failed:
            Appliance(container, work, report, args.deb.resolve(), prev).run()
    finally:
        timer.cancel()
        if container is not None:
            container.poweroff()
            container.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - report.started
    failed = report.failed
    print(f"appliance test: {len(report.results)} checks, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "") + f", {total:.0f} s; package {args.deb.name} "
          f"{args.deb.stat().st_size / 1e6:.1f} MB", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
