"""Live capture on a veth pair: ``recorderd --config`` reading ``span-rx`` in a network namespace the
benchmark creates, ``tcpreplay`` writing the synthetic SPAN capture onto ``span-tx``.

The capture: 3,000 concurrent calls of span_capture.py's kind (DESIGN.md's 300 k pkt/s), written
as a set-up part (every INVITE to ACK) and a media part (all calls in progress, up to the first
BYE). For each rate (100 k, 200 k, 300 k pkt/s, top speed) a fresh store and a fresh service (64 MiB
ring, metrics on 127.0.0.1 inside the namespace) receive the set-up, then the first
``rate x seconds`` packets of the media: that is what is measured. Then a stall run at 100 k pkt/s
stops the service with SIGSTOP for 0.5 s half-way through.
Per run: packets sent (tcpreplay's own summary, and the rate it achieved), packets the service read
(``recorderd_packets_total``), kernel drops (``recorderd_kernel_drops_total``, from
PACKET_STATISTICS), packets lost before the socket (``/proc/net/softnet_stat``, and sent - read -
drops), the service's CPU seconds (``/proc/PID/stat`` utime + stime of the recorderd process: its
own work, not the kernel's copy into the ring, which runs in the sender's softirq), how busy it was
while the sender ran, tcpreplay's own CPU, and the whole machine's.

Every service is a fresh process with a fresh store: the same capture sent twice to one service
would be late retransmissions of calls already ended (ignored, cheap), not calls. The service is
killed (SIGKILL) after each measurement: stopping cleanly would end ~1,500 calls in progress as
incomplete recordings, time the benchmark does not need; the store is thrown away.

Traffic stays inside the namespace (the veth pair exists only there), IPv6 is off on both ends,
every process and wait is bounded in time, and the namespace and processes are removed in a
``finally`` (also on SIGTERM / Ctrl-C of the benchmark; children get SIGKILL if it dies outright).

Needs root (namespaces, AF_PACKET), ``ip`` (iproute2) and ``tcpreplay``; without them the section
reports ``skipped: <reason>``.

    python bench/live.py [--quick] [--seconds S] [--calls N]     -> JSON
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import span_capture  # noqa: E402
from span_capture import CACHE, PCAP_HEADER, SpanPlan  # noqa: E402
from whole_process import ENV, VENV_BIN  # noqa: E402

RATES: tuple[int | None, ...] = (100_000, 200_000, 300_000, None)  # None: --topspeed
TARGET_RATE = 300_000  # DESIGN.md: 0 kernel drops at 300 k pkt/s sustained (3,000 concurrent calls)
STALL_RATE = 100_000  # DESIGN.md: 0 drops through a 0.5 s stall at 100 k pkt/s
STALL_S = 0.5
SETUP_RATE = 100_000  # the set-up part is sent at this rate in every run: preparation, not measured
OWN_PACE = 0  # a rate meaning: at the capture's own timestamps (tcpreplay --multiplier=1)
CHURN_TALK_S = 30.0  # calls of the churn run: 6x the turnover of 3-minute calls
RING_MB = 64
METRICS_PORT = 9687
TX, RX = "span-tx", "span-rx"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RTP_FRAME = 14 + 20 + 8 + 12 + 160  # one G.711 20 ms packet on the wire (untagged Ethernet)

_ACTUAL = re.compile(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds")
_RATED = re.compile(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps")
_FAILED = re.compile(r"Failed packets:\s+(\d+)")
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


# -- preconditions --------------------------------------------------------------------------------


def missing() -> str | None:
    """Why the live section cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux (network namespaces, AF_PACKET)"
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    if shutil.which("ip") is None:
        return "needs ip (iproute2) for the network namespace"
    if shutil.which("tcpreplay") is None:
        return "needs tcpreplay (Debian package tcpreplay)"
    return None


def live_plan(calls: int, seconds: float, max_rate: int = TARGET_RATE, stagger: float = 2.0) -> SpanPlan:
    """``calls`` concurrent calls, long enough that ``max_rate x seconds`` packets lie between the
    moment every call has media flowing and the first BYE."""
    plan = SpanPlan.concurrent(calls, 1.0, stagger)
    split, _ = plan.peak_window()  # when the last call's media starts
    media_pps = calls * 2 / 0.02  # G.711, 20 ms, both ways
    talk = math.ceil((max_rate * seconds / media_pps + (split - span_capture.T0) - 0.55 + 0.5) * 2) / 2
    return SpanPlan.concurrent(calls, talk, stagger)


def live_capture(plan: SpanPlan, split_at: float | None = None, end_at: float | None = None,
                 kind: str = "live") -> dict:
    """The plan's packets as two pcaps (cached next to the main captures):

    - ``setup``: everything before the last call's first RTP packet (+ 20 ms): all INVITE ... ACK
      exchanges and the first seconds of media;
    - ``media``: from there up to the first BYE: every call in progress, media only.

    The runs send the set-up first and measure the media: a steady state of ``plan.calls`` calls,
    not 3,000 call set-ups squeezed into 2 s of capture (1,500 a second, where a contact centre with
    3,000 calls of 3 minutes sees ~17), nor 1,500 recordings closed at once at the end."""
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = span_capture.source_digest()  # span_capture() deletes these once the generator changes
    for old in CACHE.glob("*-live-*"):  # live captures of an older generator, and runs that died half-way
        if old.name.endswith(".part") or (old.suffix in (".pcap", ".json") and not old.stem.endswith(f"-{digest}")):
            old.unlink(missing_ok=True)
    base = CACHE / f"{plan.name}-{kind}"
    paths = {"setup": Path(f"{base}-setup-{digest}.pcap"), "media": Path(f"{base}-media-{digest}.pcap")}
    sidecar = Path(f"{base}-{digest}.json")
    if sidecar.exists() and all(p.exists() for p in paths.values()):
        meta = json.loads(sidecar.read_text())
        return {**meta, "setup": paths["setup"], "media": paths["media"], "cached": True}
    calls = list(plan.sip_calls())
    split = split_at if split_at is not None else max(c.media_start for c in calls) + 0.02
    first_bye = end_at if end_at is not None else min(c.end_time for c in calls)
    try:
        span_capture.check_against_generator(plan)
        fast = True
    except RuntimeError:
        fast = False
    started = time.perf_counter()
    counts = {"setup": 0, "media": 0}
    sizes = {"setup": 0, "media": 0}
    files = {k: open(f"{p}.part", "wb", buffering=1 << 22) for k, p in paths.items()}
    try:
        for f in files.values():
            f.write(PCAP_HEADER)
        split_us, bye_us = round(split * 1e6), round(first_bye * 1e6)
        record = struct.Struct("<IIII").pack
        for usec, frame in span_capture.frames(plan, fast):
            if usec >= bye_us:
                break
            part = "setup" if usec < split_us else "media"
            n = len(frame)
            files[part].write(record(usec // 1_000_000, usec % 1_000_000, n, n))
            files[part].write(frame)
            counts[part] += 1
            sizes[part] += 16 + n
    finally:
        for f in files.values():
            f.close()
    for p in paths.values():
        os.replace(f"{p}.part", p)
    meta = {
        "plan": dataclasses.asdict(plan),
        "setup_packets": counts["setup"],
        "media_packets": counts["media"],
        "bytes": sum(sizes.values()) + 48,
        "designated_calls": sum(plan.is_designated(i) for i in range(plan.calls)),
        "split_after_first_invite_s": split - span_capture.T0,
        "first_bye_after_first_invite_s": first_bye - span_capture.T0,
        "rtp_frames": "fast builder (checked byte-equal to SipCall.rtp_frames())" if fast else "SipCall.rtp_frames()",
        "generated_in_s": round(time.perf_counter() - started, 2),
    }
    sidecar.write_text(json.dumps(meta, indent=1))
    return {**meta, "setup": paths["setup"], "media": paths["media"], "cached": False}


def churn_plan(calls: int, seconds: float, talk: float = CHURN_TALK_S) -> tuple[SpanPlan, float, float]:
    """Calls of ``talk`` s starting one after another so that ``calls`` are always in progress once
    the first ends: the steady state of a busy centre, with calls starting and ending (and their
    recordings kept) all the time. Returns the plan and the packet times between which the steady
    state is measured (``seconds`` long)."""
    span = SpanPlan(1, talk, 1.0).call_span()
    spacing = round(span / calls, 6)
    total = math.ceil((span + seconds + 1.0) / spacing)
    plan = SpanPlan(total, talk, spacing)
    steady = span_capture.T0 + span
    return plan, steady, steady + seconds


# -- the namespace and the service ------------------------------------------------------------------


def _die_with_parent() -> None:  # preexec_fn: no orphan sender or service if the benchmark is killed
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Netns:
    """A network namespace with a veth pair (``span-tx`` <-> ``span-rx``), IPv6 off, nothing else."""

    def __init__(self) -> None:
        self.name = f"rdbench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.created = False

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, text=True, timeout=10)
        self.created = True
        self.run("ip", "link", "add", TX, "type", "veth", "peer", "name", RX)
        for dev in (TX, RX):  # no router solicitations or other chatter on the mirror link
            self.run("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        for dev in (TX, RX, "lo"):
            self.run("ip", "link", "set", dev, "up")

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 10) -> str:
        return subprocess.run(self.cmd(*argv), check=True, capture_output=True, text=True, timeout=timeout).stdout

    def close(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
            self.created = False


def make_site(root: Path) -> Path:
    """Config + DID list + initialised store for one live run; returns the config."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "config" / "dids.yaml", root / "dids.yaml")
    config = root / "recorderd.yaml"
    config.write_text(
        # a bench store on a plain disk (no LUKS) and the generator's carrier side as the trunk
        "store: {path: store, require_encrypted_volume: false}\ndids_file: dids.yaml\nvault: {key_file: master.key}\n"
        f"control: {{socket: control.sock}}\ncapture: {{interfaces: [{RX}], ring_mb: {RING_MB}, "
        "trunk_networks: [203.0.113.0/24]}\n"
        f'metrics: {{listen: "127.0.0.1:{METRICS_PORT}"}}\nlogging: {{stats_interval_s: 10}}\n',
        encoding="utf-8",
    )
    subprocess.run([str(VENV_BIN / "recorderctl"), "--config", str(config), "init"], check=True, capture_output=True,
                   env=ENV, timeout=60)
    return config


UNIT = ROOT / "systemd" / "recorderd.service"


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The variables the service's unit sets (``Environment=NAME=VALUE`` lines; none quoted there)."""
    env = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for item in line[len("Environment="):].split():
                name, _, value = item.partition("=")
                env[name] = value
    return env


class Service:
    """``recorderd --config`` inside the namespace (``ip netns exec`` execs it: same PID), with the
    environment its systemd unit gives it."""

    def __init__(self, ns: Netns, config: Path) -> None:
        self.ns = ns
        self.log = config.parent / "service.log"
        self.store = config.parent / "store"
        env = {k: v for k, v in ENV.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}
        env.update(unit_environment())  # what systemd gives the service (its unit's Environment=)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(ns.cmd(str(VENV_BIN / "recorderd"), "--config", str(config)), stdout=out,
                                         stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        self.pid = self.proc.pid

    def wait_started(self, timeout: float = 30.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if "EVENT=started" in self.log.read_text(errors="replace"):
                return time.perf_counter() - started
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"recorderd did not log EVENT=started within {timeout:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def cpu_s(self) -> float:
        """utime + stime of the whole process (all threads), from /proc/PID/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def user_sys_s(self) -> tuple[float, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def schedstat(self) -> tuple[float, float]:
        """(s on a CPU, s runnable but waiting for one) of the main thread: the capture loop."""
        run_ns, wait_ns, _ = Path(f"/proc/{self.pid}/schedstat").read_text().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9

    def stored_bytes(self) -> int:
        """The size of every file in the service's store (the spool's files of the calls in progress,
        the recordings kept, the index): what the bytes it writes to disk hold."""
        total = 0
        for folder, _, names in os.walk(self.store):
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # a spool file kept (renamed) meanwhile
                    st = os.lstat(os.path.join(folder, name))
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
        return total

    def write_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    def rx_packets(self) -> int:
        """span-rx's receive counter, seen through the service's own network namespace."""
        for line in Path(f"/proc/{self.pid}/net/dev").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == RX:
                return int(rest.split()[1])
        return 0

    def metrics(self) -> dict[str, float]:
        """The Prometheus endpoint, read from inside the namespace. {} until the first publish."""
        code = ("import sys, urllib.request\n"
                f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', timeout=3).read().decode())")
        out = subprocess.run(self.ns.cmd(sys.executable, "-I", "-S", "-c", code), capture_output=True, text=True, timeout=10)
        values = {}
        for line in out.stdout.splitlines():
            if line.startswith("recorderd_"):
                key, _, value = line.partition(" ")
                values[key] = float(value)
        return values

    def counters(self, timeout: float = 10.0) -> tuple[int, int]:
        """(packets read, kernel drops) as last published (the service publishes once a second)."""
        end = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if "recorderd_packets_total" in m:
                return int(m["recorderd_packets_total"]), int(m["recorderd_kernel_drops_total"])
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"no metrics from the service; log:\n{self.log_tail()}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # in case a stall was interrupted
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


# -- machine-wide counters ---------------------------------------------------------------------------


def softnet_dropped() -> int:
    """Packets dropped from the per-CPU input backlog (all CPUs, all namespaces): column 2."""
    return sum(int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines())


def cpu_times() -> list[int]:
    """/proc/stat 'cpu' line: user nice system idle iowait irq softirq steal (ticks)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def machine_share(before: list[int], after: list[int]) -> dict:
    d = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(d) or 1
    cpus = os.cpu_count() or 1
    return {
        "busy_cores": (total - d[3] - d[4]) / total * cpus,
        "softirq_cores": d[6] / total * cpus,
        "iowait_cores": d[4] / total * cpus,
    }


# -- one run -----------------------------------------------------------------------------------------


def _tcpreplay(ns: Netns, capture: Path, rate: int | None, limit: int | None, out: Path) -> subprocess.Popen:
    speed = f"--pps={rate}" if rate else "--multiplier=1" if rate == OWN_PACE else "--topspeed"
    bound = [f"--limit={limit}"] if limit else []
    with open(out, "wb") as f:
        return subprocess.Popen(ns.cmd("tcpreplay", "-i", TX, speed, *bound, str(capture)), stdout=f,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def send(service: Service, capture: Path, rate: int | None, limit: int | None, packets: int, out: Path,
         stall_at: float | None = None) -> dict:
    """Send ``capture`` (its first ``limit`` packets, or all ``packets``) at ``rate`` (None: top
    speed) and wait until the service has accounted for every packet (read or dropped). ``stall_at``:
    SIGSTOP the service for STALL_S that many seconds after the first packet reaches span-rx."""
    read0, drops0 = service.counters()
    softnet0, cpu0, io0, machine0 = softnet_dropped(), service.cpu_s(), service.write_bytes(), cpu_times()
    stored0 = service.stored_bytes()
    us0, sched0, rx0 = service.user_sys_s(), service.schedstat(), service.rx_packets()
    deadline_s = (limit or packets) / (rate or 100_000) * 3 + 60  # the sender's bound: 3x the planned time, + 60 s
    t0 = time.perf_counter()
    sender = _tcpreplay(service.ns, capture, rate, limit, out)
    started = time.perf_counter()
    first_packet = stalled_for = None
    try:
        while True:  # wait for the sender, with its rusage (os.wait4); stall the service on the way
            pid, status, usage = os.wait4(sender.pid, os.WNOHANG)
            if pid:
                sender.returncode = os.waitstatus_to_exitcode(status)
                break
            now = time.perf_counter()
            if now - t0 > deadline_s:
                raise RuntimeError(f"tcpreplay did not finish within {deadline_s:.0f} s")
            if first_packet is None and service.rx_packets() > rx0:
                first_packet = now
            if stall_at is not None and stalled_for is None and first_packet is not None and now - first_packet >= stall_at:
                os.kill(service.pid, signal.SIGSTOP)
                stopped = time.perf_counter()
                try:
                    time.sleep(STALL_S)
                finally:
                    os.kill(service.pid, signal.SIGCONT)
                stalled_for = time.perf_counter() - stopped
                continue
            time.sleep(0.002 if first_packet is None or stall_at is not None else 0.02)
    finally:
        if sender.returncode is None:
            sender.kill()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(sender.pid, 0)
    t_sent = time.perf_counter()
    cpu_sent, sched1 = service.cpu_s(), service.schedstat()
    text = out.read_text(errors="replace")
    actual, rated, failed = _ACTUAL.search(text), _RATED.search(text), _FAILED.search(text)
    if sender.returncode != 0 or actual is None:
        raise RuntimeError(f"tcpreplay failed ({sender.returncode}): {text[-1500:]}")
    sent = int(actual[1])
    # Until the service has accounted for every packet sent (read or dropped), or nothing moves for 3 s.
    last, still_since, drain_end = None, time.monotonic(), time.monotonic() + 30
    while True:
        read, drops = service.counters()
        got = (read - read0, drops - drops0)
        if got[0] + got[1] >= sent:
            break
        if got != last:
            last, still_since = got, time.monotonic()
        elif time.monotonic() - still_since > 3.0 or time.monotonic() > drain_end:
            break
        time.sleep(0.25)
    t_done = time.perf_counter()
    cpu1, io1, machine1, softnet1, us1 = service.cpu_s(), service.write_bytes(), cpu_times(), softnet_dropped(), service.user_sys_s()
    stored = service.stored_bytes() - stored0
    read, drops = got
    send_s = float(actual[3])
    wall_sent = t_sent - t0
    on_cpu, waiting = sched1[0] - sched0[0], sched1[1] - sched0[1]
    cpu = cpu1 - cpu0
    result = {
        "rate": rate,
        "limit": limit,
        "sent": sent,
        "send_s": send_s,
        "achieved_pps": float(rated[1]) if rated else sent / send_s,
        "failed": int(failed[1]) if failed else 0,
        "read": read,
        "kernel_drops": drops,
        "lost_before_socket": sent - read - drops,
        "softnet_drops": softnet1 - softnet0,
        "kept_up": drops == 0 and read == sent,
        "service_cpu_s": cpu,
        "service_user_s": us1[0] - us0[0],
        "service_sys_s": us1[1] - us0[1],
        "service_cpu_us_per_packet": cpu / read * 1e6 if read else None,
        "service_busy_while_sending": (cpu_sent - cpu0) / wall_sent,
        # the capture loop's thread while the sender ran, as shares of the sender's wall time
        "loop_on_cpu": on_cpu / wall_sent,
        "loop_waiting_for_cpu": waiting / wall_sent,
        "loop_sleeping_or_blocked": max(0.0, 1 - (on_cpu + waiting) / wall_sent),
        "accounted_after_sender_s": t_done - t_sent,  # the service publishes its counters once a second
        "service_write_mb": (io1 - io0) / 1e6,
        # /proc/PID/io write_bytes counts a page each time it turns dirty: a page written back half
        # full (the daemon syncs its file system every second) and filled later counts twice
        "store_growth_mb": stored / 1e6,
        "written_per_stored": (io1 - io0) / stored if stored > 0 else None,
        "tcpreplay_cpu_s": usage.ru_utime + usage.ru_stime,
        "tcpreplay_sys_s": usage.ru_stime,
        "tcpreplay_busy": (usage.ru_utime + usage.ru_stime) / wall_sent,
        "machine": machine_share(machine0, machine1),
        "tcpreplay_summary": "; ".join(line.strip() for line in text.splitlines() if line.startswith(("Actual", "Rated"))),
        "_t0": started,
    }
    if stall_at is not None:
        if stalled_for is None:
            raise RuntimeError("the stall did not happen (the sender ended first)")
        result["stalled_s"] = stalled_for
    return result


def run_once(ns: Netns, work: Path, cap: dict, rate: int | None, limit: int, stall_at: float | None = None) -> dict:
    """A fresh store and service; the set-up part of the capture, then the first ``limit`` packets
    of its media part (the measurement), both at ``rate`` (None: top speed)."""
    site = work / f"run-{rate or 'top'}{'-stall' if stall_at is not None else ''}"
    config = make_site(site)
    service = Service(ns, config)
    try:
        start_s = service.wait_started()
        setup = send(service, cap["setup"], SETUP_RATE, None, cap["setup_packets"], site / "setup.out")
        setup.pop("_t0")
        m = service.metrics()
        setup["active_calls"] = int(m.get("recorderd_active_calls", 0))  # designated calls being recorded
        setup["calls_not_designated"] = int(m.get("recorderd_calls_not_designated_total", 0))
        ready = time.perf_counter()
        with _profiled(service, f"{rate or 'top'}{'-stall' if stall_at is not None else ''}"):
            result = send(service, cap["media"], rate, limit, limit, site / "media.out", stall_at)
        result["setup"] = setup
        result["recording_calls"] = setup["active_calls"]
        result["pause_before_media_s"] = result.pop("_t0") - ready + setup["accounted_after_sender_s"]
        result["service_start_s"] = start_s
        return result
    finally:
        service.kill()
        shutil.rmtree(site, ignore_errors=True)


STALL = True  # --no-stall: leave the stall run out
PROFILE_DIR: Path | None = None
PROFILER = "py-spy"  # --profile: py-spy records the service while the media is sent


@contextlib.contextmanager
def _profiled(service: Service, name: str) -> Iterator[None]:
    """With ``--profile DIR``: the service profiled over the measured media only (what the set-up
    costs is left out): ``py-spy record`` (every thread, 200 Hz) to DIR/NAME.raw, or with
    ``--profiler perf`` ``perf record -g`` (999 Hz, C and kernel too, with their callers) to DIR/NAME.perf."""
    if PROFILE_DIR is None:
        yield
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    if PROFILER == "perf":
        cmd = ["perf", "record", "-F", "999", *(() if os.environ.get("PERF_NO_G") else ("-g",)), "-p", str(service.pid), "-o", str(PROFILE_DIR / f"{name}.perf")]
    else:
        spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        cmd = [spy, "record", "--pid", str(service.pid), "-r", "200", "-f", "raw", "--threads", "--nonblocking",
               "-o", str(PROFILE_DIR / f"{name}.raw")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_churn(ns: Netns, work: Path, cap: dict, seconds: float) -> dict:
    """A fresh store and service; the ramp (calls starting until ``calls`` are in progress) at the
    capture's own pace, then the steady state at 300 k pkt/s: calls start, end and are kept while
    the media of ~3,000 flows. After it: recordings finalised and kept (the store worker's backlog)."""
    site = work / "run-churn"
    config = make_site(site)
    service = Service(ns, config)
    try:
        service.wait_started()
        ramp = send(service, cap["setup"], OWN_PACE, None, cap["setup_packets"], site / "ramp.out")
        ramp.pop("_t0")
        m0 = service.metrics()
        with _profiled(service, "churn"):
            result = send(service, cap["media"], TARGET_RATE, None, cap["media_packets"], site / "steady.out")
        result.pop("_t0")
        m1 = service.metrics()
        result["ramp"] = ramp
        result["recording_calls"] = int(m1.get("recorderd_active_calls", 0))
        finalised = m1.get("recorderd_calls_recorded_total", 0) - m0.get("recorderd_calls_recorded_total", 0)
        result["recordings_finalised"] = int(finalised)
        result["recordings_finalised_per_s"] = finalised / result["send_s"]
        finalised_total = int(m1.get("recorderd_calls_recorded_total", 0))
        result["recordings_finalised_total"] = finalised_total
        result["recordings_kept_total"] = kept = _kept(site / "store" / "index.sqlite")
        waited = time.perf_counter()
        while kept < finalised_total and time.perf_counter() - waited < 30:  # the store worker's backlog
            time.sleep(0.05)
            kept = _kept(site / "store" / "index.sqlite")
        result["backlog_at_end"] = finalised_total - result["recordings_kept_total"]
        result["backlog_drained_s"] = time.perf_counter() - waited if kept >= finalised_total else None
        result["calls_started_per_s"] = 1 / cap["plan"]["spacing"]
        return result
    finally:
        service.kill()
        shutil.rmtree(site, ignore_errors=True)


def _kept(index: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM recordings").fetchone()[0])


# -- the section --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_runs_finally() -> Iterator[None]:
    """SIGTERM of the benchmark raises, so the namespace and the service are still cleaned up."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tcpreplay_version() -> str:
    out = subprocess.run(["tcpreplay", "--version"], capture_output=True, text=True, timeout=10)
    return next((line.strip() for line in (out.stdout + out.stderr).splitlines() if "version" in line), "tcpreplay")


def ring_capacity(frame: int = RTP_FRAME) -> int:
    """Frames of ``frame`` bytes the service's ring holds: TPACKET_V3, 1 MiB blocks, each frame in
    a 16-aligned slot of 82 bytes (tpacket3_hdr + sockaddr_ll, aligned, minus the MAC header) + frame."""
    slot = (82 + frame + 15) // 16 * 16
    return RING_MB * ((1 << 20) - 48) // slot


def run(calls: int = 3000, seconds: float = 10.0, churn: bool = True, only_churn: bool = False) -> dict:
    """The live section: returns ``{"skipped": reason}`` or every run's figures."""
    why = missing()
    if why:
        return {"skipped": why}
    plan = live_plan(calls, seconds)
    limits = {rate: int((rate or TARGET_RATE) * seconds) for rate in RATES}
    cap = live_capture(plan)
    if max(limits.values()) > cap["media_packets"]:
        raise RuntimeError(f"live capture too short: {cap['media_packets']} media packets")
    result: dict = {
        "capture": {k: str(v) if isinstance(v, Path) else v for k, v in cap.items()},
        "calls": calls,
        "designated_calls": cap["designated_calls"],
        "talk_s": plan.talk,
        "seconds_per_rate": seconds,
        "ring_mb": RING_MB,
        "ring_capacity_rtp_frames": ring_capacity(),
        "tcpreplay": tcpreplay_version(),
        "runs": [],
    }
    ns = Netns()
    with _sigterm_runs_finally(), tempfile.TemporaryDirectory(prefix="recorderd-bench-live-") as tmp:
        try:
            try:
                ns.create()
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                err = getattr(exc, "stderr", "") or str(exc)
                return {"skipped": f"cannot create a network namespace with a veth pair: {str(err).strip()[:120]}"}
            for rate in () if only_churn else RATES:
                print(f"   live: {'top speed' if rate is None else f'{rate // 1000} k pkt/s'}, {limits[rate]:,} packets",
                      file=sys.stderr, flush=True)
                result["runs"].append(run_once(ns, Path(tmp), cap, rate, limits[rate]))
            stall_limit = int(STALL_RATE * seconds)
            if not only_churn and STALL:
                print(f"   live: stall {STALL_S} s at {STALL_RATE // 1000} k pkt/s", file=sys.stderr, flush=True)
                result["stall"] = run_once(ns, Path(tmp), cap, STALL_RATE, stall_limit, stall_at=seconds / 2)
            if churn:
                plan_c, steady, end = churn_plan(calls, seconds)
                cap_c = live_capture(plan_c, steady, end, kind="churn")
                print(f"   live: churn, {calls:,} calls of {plan_c.talk:g} s in progress, "
                      f"{cap_c['media_packets']:,} packets at {TARGET_RATE // 1000} k pkt/s", file=sys.stderr, flush=True)
                result["churn"] = run_churn(ns, Path(tmp), cap_c, seconds)
                result["churn"]["capture"] = {k: str(v) if isinstance(v, Path) else v for k, v in cap_c.items()}
        finally:
            ns.close()
    result["method"] = method(result)
    return result


def method(r: dict) -> str:
    c = r["capture"]
    return (f"bench/live.py: network namespace with a veth pair {TX} <-> {RX} (IPv6 off); per rate a fresh store "
            f"and `recorderd --config` capturing on {RX}, with its systemd unit's Environment= (ring_mb {RING_MB}: ~{r['ring_capacity_rtp_frames'] // 1000} k "
            f"RTP frames; metrics on 127.0.0.1:{METRICS_PORT} in the namespace); {r['tcpreplay']} sends the capture's "
            f"set-up part ({c['setup_packets']:,} packets: every INVITE to ACK and the first media, at "
            f"{SETUP_RATE // 1000} k pkt/s, not measured here), "
            f"then `tcpreplay -i {TX} --pps=RATE|--topspeed --limit=N MEDIA`, N = RATE x {r['seconds_per_rate']:g} s "
            f"(top speed: as many as at 300 k): {r['calls']:,} calls in progress ({r['designated_calls']:,} recorded), "
            "media only, no call ends. sent = tcpreplay's 'Actual' line, its rate the 'Rated' line; read / drops = "
            "deltas of recorderd_packets_total / recorderd_kernel_drops_total (PACKET_STATISTICS, read by the service "
            "each second) once sent = read + drops; CPU = utime + stime of the recorderd process (/proc/PID/stat), "
            "per packet read; busy = its CPU while tcpreplay ran / tcpreplay's wall time; then SIGKILL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="live capture on veth (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="2 s per rate instead of 10 s")
    parser.add_argument("--seconds", type=float, help="seconds per rate (default 10; quick 2)")
    parser.add_argument("--calls", type=int, default=3000, help="concurrent calls in the live capture (default 3000)")
    parser.add_argument("--no-churn", action="store_true", help="leave out the run with calls starting and ending")
    parser.add_argument("--only-churn", action="store_true", help="only the run with calls starting and ending")
    parser.add_argument("--rates", help="comma-separated k pkt/s to run (e.g. 300; 'top': top speed); default all")
    parser.add_argument("--no-stall", action="store_true", help="leave out the stall run")
    parser.add_argument("--profile", type=Path, help="profile the service during each measured send into DIR")
    parser.add_argument("--profiler", choices=("py-spy", "perf"), default="py-spy", help="with --profile (default py-spy)")
    args = parser.parse_args(argv)
    global RATES, PROFILE_DIR, PROFILER, STALL
    if args.rates:
        RATES = tuple(None if r == "top" else int(r) * 1000 for r in args.rates.split(","))
    STALL = not args.no_stall
    PROFILE_DIR, PROFILER = args.profile, args.profiler
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    print(json.dumps(run(args.calls, seconds, churn=not args.no_churn, only_churn=args.only_churn), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
