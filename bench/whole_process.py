"""Whole processes on the same capture: ``recorderd replay``, ``tshark -z rtp,streams``, pyshark.

Each command runs under a fresh measuring process (``python bench/whole_process.py measure --
CMD...``) whose only child is the command, so ``resource.getrusage(RUSAGE_CHILDREN)`` there is
exactly the command's CPU time and ``ru_maxrss`` its peak RSS (in the benchmark's own process,
RUSAGE_CHILDREN would mix in every earlier child, and ru_maxrss would be the largest of them).

    python bench/whole_process.py measure -- CMD...      -> JSON: wall_s, cpu_s, peak_rss_kib, ...
    python bench/whole_process.py pyshark SLICE.pcap      -> JSON: packets, wall_s
"""
from __future__ import annotations

import grp
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent  # the venv running the benchmark (recorderd, recorderctl)
# The commands run this tree's code (a clean checkout elsewhere, too), not wherever the venv's
# editable install points: PYTHONPATH comes before the editable finder.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
SUMMARY = re.compile(r"replayed (\d+) packets from \d+ file\(s\): (\d+) recorded, (\d+) not designated")


def warm(path: Path) -> None:
    """Read ``path`` once, so a run measured next starts from the page cache whatever reclaimed it
    since it was made (the development machine's kernel reclaims idle page cache: DAMON): every
    program compared here reads the same capture, from memory."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def measure(command: list[str], cwd: str | None = None) -> dict:
    """Run ``command`` under a fresh measuring process; its figures and output."""
    with tempfile.TemporaryDirectory(prefix="recorderd-bench-out-") as tmp:
        out = subprocess.run(
            [PYTHON, __file__, "measure", "--out", tmp, "--", *command],
            cwd=cwd, check=True, capture_output=True, text=True, env=ENV,
        )
        result = json.loads(out.stdout)
        result["stdout"] = Path(tmp, "stdout").read_text(errors="replace")
        result["stderr"] = Path(tmp, "stderr").read_text(errors="replace")
    return result


def _measure_child(out_dir: str, command: list[str]) -> None:
    with open(os.path.join(out_dir, "stdout"), "wb") as out, open(os.path.join(out_dir, "stderr"), "wb") as err:
        started = time.perf_counter()
        code = subprocess.call(command, stdout=out, stderr=err)
        wall = time.perf_counter() - started
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "command": command,
        "returncode": code,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_kib": ru.ru_maxrss,  # Linux: KiB
    }))


# -- recorderd replay ------------------------------------------------------------------------------


def make_site(root: Path) -> Path:
    """A config + DID list + initialised store (as tests/conftest.py's Site); returns the config."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "dids.yaml", root / "dids.yaml")
    config = root / "recorderd.yaml"
    group = grp.getgrgid(os.getgid()).gr_name  # recorderctl list needs a role: give the bench's user all four
    roles = ", ".join(f"{r}_group: {group}" for r in ("manager", "staff", "technician", "auditor"))
    config.write_text("store: {path: store}\ndids_file: dids.yaml\nvault: {key_file: master.key}\n"
                      # the generator's carrier side; the erspan section's capture is a switch's ERSPAN
                      "capture: {trunk_networks: [203.0.113.0/24], encapsulations: [erspan]}\n"
                      f"control: {{socket: control.sock}}\nroles: {{{roles}}}\n", encoding="utf-8")
    subprocess.run([str(VENV_BIN / "recorderctl"), "--config", str(config), "init"], check=True, capture_output=True, env=ENV)
    return config


def replay(capture: Path, packets: int, designated: int) -> dict:
    """``recorderd replay CAPTURE --config CFG`` into a fresh store: wall, CPU, peak RSS, pkt/s."""
    with tempfile.TemporaryDirectory(prefix="recorderd-bench-replay-") as tmp:
        config = make_site(Path(tmp))
        command = [str(VENV_BIN / "recorderd"), "replay", str(capture), "--config", str(config)]
        warm(capture)
        run = measure(command)
        listed = subprocess.run([str(VENV_BIN / "recorderctl"), "--config", str(config), "list", "--json"],
                                check=True, capture_output=True, text=True, env=ENV)
        kept = json.loads(listed.stdout)
    found = SUMMARY.search(run["stdout"])
    if run["returncode"] != 0 or found is None:
        raise RuntimeError(f"recorderd replay failed ({run['returncode']}): {run['stderr'][-2000:]}")
    replayed, recorded = int(found[1]), int(found[2])
    complete = sum(1 for r in kept if r["state"] == "complete")
    return {
        "method": "python bench/whole_process.py measure -- " + " ".join(command)
        + "  (fresh store made by recorderctl init; getrusage(RUSAGE_CHILDREN) of a parent whose only child is recorderd)",
        "command": command,
        "packets": replayed,
        "packets_expected": packets,
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "user_s": run["user_s"],
        "sys_s": run["sys_s"],
        "peak_rss_kib": run["peak_rss_kib"],
        "pkt_per_s": replayed / run["wall_s"],
        "pkt_per_cpu_s": replayed / run["cpu_s"],
        "recorded": recorded,
        "designated_calls": designated,
        "kept_complete": complete,
        "summary": found[0],
    }


# -- tshark ------------------------------------------------------------------------------------------


def tshark(capture: Path, packets: int) -> dict:
    exe = shutil.which("tshark")
    if exe is None:
        return {"skipped": "tshark is not installed"}
    command = [exe, "-q", "-z", "rtp,streams", "-r", str(capture)]
    warm(capture)
    run = measure(command)
    if run["returncode"] != 0:
        raise RuntimeError(f"tshark failed ({run['returncode']}): {run['stderr'][-2000:]}")
    streams = sum(1 for line in run["stdout"].splitlines() if re.search(r"\s0x[0-9A-Fa-f]{8}\s", line))
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "method": "python bench/whole_process.py measure -- " + " ".join(command),
        "command": command,
        "version": version,
        "packets": packets,
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_kib": run["peak_rss_kib"],
        "pkt_per_s": packets / run["wall_s"],
        "rtp_streams_listed": streams,
    }


# -- pyshark -------------------------------------------------------------------------------------------


def write_slice(capture: Path, out: Path, count: int) -> int:
    """The first ``count`` packets of a classic pcap, as a pcap."""
    import struct

    with open(capture, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(24))
        n = 0
        while n < count:
            head = src.read(16)
            if len(head) < 16:
                break
            incl = struct.unpack("<IIII", head)[2]
            dst.write(head + src.read(incl))
            n += 1
    return n


def pyshark_loop(capture: Path, count: int) -> dict:
    try:
        import pyshark  # noqa: F401
    except ImportError:
        return {"skipped": "pyshark is not installed in the venv"}
    with tempfile.TemporaryDirectory(prefix="recorderd-bench-pyshark-") as tmp:
        piece = Path(tmp, "slice.pcap")
        n = write_slice(capture, piece, count)
        command = [PYTHON, __file__, "pyshark", str(piece)]
        run = measure(command)
    if run["returncode"] != 0:
        raise RuntimeError(f"pyshark loop failed: {run['stderr'][-2000:]}")
    inner = json.loads(run["stdout"].strip().splitlines()[-1])
    return {
        "method": f"pyshark.FileCapture(first {n} packets, keep_packets=False): for pkt in cap: n += 1 "
        "(full dissection, as a user's loop gets it); time.perf_counter() from FileCapture() to the last packet",
        "packets": inner["packets"],
        "wall_s": inner["wall_s"],
        "pkt_per_s": inner["packets"] / inner["wall_s"],
        "rtp_packets": inner["rtp_packets"],
        "process_cpu_s": run["cpu_s"],
    }


def _pyshark_child(path: str) -> None:
    import pyshark

    started = time.perf_counter()
    cap = pyshark.FileCapture(path, keep_packets=False)
    n = rtp = 0
    for pkt in cap:
        n += 1
        if "RTP" in pkt:
            rtp += 1
    wall = time.perf_counter() - started
    cap.close()
    print(json.dumps({"packets": n, "rtp_packets": rtp, "wall_s": wall}))


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        args = sys.argv[2:]
        out_dir = args[args.index("--out") + 1]
        _measure_child(out_dir, args[args.index("--") + 1 :])
    elif sys.argv[1] == "pyshark":
        _pyshark_child(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} measure --out DIR -- CMD... | pyshark SLICE.pcap")
