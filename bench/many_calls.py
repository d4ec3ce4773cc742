"""The per-packet cost with thousands of calls in progress, without a network or a sender.

``bench/live.py`` measures the live service on a veth link, but its sender (tcpreplay) shares the
2-core machine with the service and the kernel's copy into the ring, so its figures scatter by a
third from run to run. This section replays the very same capture (live.py's: 3,000 calls in
progress, every other one to a designated number, so 1,500 recordings written at once) through
``recorderd replay``, once its set-up part alone and once set-up and media, each into a fresh store,
interleaved rounds; the media's cost is the difference:

    CPU per media packet = (CPU of set-up + media - CPU of set-up) / media packets

for the capture loop (the main thread: what drops packets live when it cannot keep up; it flushes
the 1,500 recordings' audio and evidence pcap, sealed and written about once a second each) and for
the whole process (which also counts, at the end, keeping 1,500 recordings ~12 s longer than the
set-up run's: their read-back for the SHA-256, docs/store.md, which the live service does on its
store thread as calls end). Not counted: the ring walk and the socket, which live.py has.

    python bench/many_calls.py [--calls 3000] [--seconds 10] [--rounds 3]     -> JSON
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from live import TARGET_RATE, live_capture, live_plan  # noqa: E402
from whole_process import ENV, SUMMARY, VENV_BIN, make_site  # noqa: E402


def _replay(files: list[Path]) -> dict:
    """``recorderd replay FILES`` into a fresh store: the main thread's CPU (polled every 10 ms from
    /proc/PID/task/PID/schedstat: the capture loop; the keeping runs on the store's threads) and,
    through RUSAGE_CHILDREN's growth, the whole process's user and sys."""
    with tempfile.TemporaryDirectory(prefix="recorderd-bench-many-") as tmp:
        config = make_site(Path(tmp))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # after recorderctl init, a child too
        out = Path(tmp) / "out"
        command = [str(VENV_BIN / "recorderd"), "replay", *map(str, files), "--config", str(config)]
        with open(out, "wb") as f:
            started = time.perf_counter()
            proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=ENV)
            main_ns = 0
            schedstat = f"/proc/{proc.pid}/task/{proc.pid}/schedstat"
            while proc.poll() is None:
                try:
                    with open(schedstat) as st:
                        main_ns = int(st.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
                time.sleep(0.01)
            wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        text = out.read_text(errors="replace")
    found = SUMMARY.search(text)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"recorderd replay failed ({proc.returncode}): {text[-2000:]}")
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"packets": int(found[1]), "recorded": int(found[2]), "wall_s": wall, "loop_s": main_ns / 1e9,
            "user_s": user, "sys_s": sys_, "cpu_s": user + sys_}


def run(calls: int = 3000, seconds: float = 10.0, rounds: int = 3) -> dict:
    cap = live_capture(live_plan(calls, seconds))
    alone: list[dict] = []
    both: list[dict] = []
    for _ in range(rounds):  # interleaved: a busy moment of the machine falls on both
        alone.append(_replay([cap["setup"]]))
        both.append(_replay([cap["setup"], cap["media"]]))
    media = both[0]["packets"] - alone[0]["packets"]

    def per_packet(key: str) -> dict:
        values = [(b[key] - a[key]) / media * 1e6 for a, b in zip(alone, both, strict=True)]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    loop = per_packet("loop_s")
    return {
        "calls": calls,
        "recorded": both[0]["recorded"],
        "setup_packets": alone[0]["packets"],
        "media_packets": media,
        "rounds": rounds,
        "capture_loop_us_per_media_packet": loop,
        "process_cpu_us_per_media_packet": per_packet("cpu_s"),
        "process_user_us_per_media_packet": per_packet("user_s"),
        "process_sys_us_per_media_packet": per_packet("sys_s"),
        "runs": {"setup": alone, "setup_and_media": both},
        "capture_loop_capacity_pkt_s": 1e6 / loop["median"],
        "target_rate": TARGET_RATE,
        "method": (f"bench/many_calls.py: recorderd replay of live.py's capture ({calls:,} calls in progress, "
                   f"{both[0]['recorded']:,} recorded), its set-up part alone ({alone[0]['packets']:,} packets) and set-up "
                   f"+ media ({media:,} more), each into a fresh store, {rounds} interleaved rounds; capture loop = the "
                   "main thread's time on a CPU (/proc/PID/task/PID/schedstat, polled every 10 ms), process = user + "
                   "sys (getrusage; the longer recordings' keeping at the end included); per media packet = the "
                   "difference between the two runs / media packets; median (min-max)"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="per-packet CPU with thousands of calls in progress (bench/README.md)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="media of 300 k x SECONDS packets (live.py's capture)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.calls, args.seconds, args.rounds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
