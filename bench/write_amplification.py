"""Bytes the recorder writes to disk per byte of recording it keeps (issue 13: <= 1.1).

    python bench/write_amplification.py CAPTURE      -> JSON (one line)

``recorderd replay CAPTURE --config CFG`` (the whole pipeline: spool, keep, index, audit) runs into a
fresh store on a disk file system, as a child of this process. When it has exited, and before it
is reaped (``waitid(WEXITED | WNOWAIT)``), its ``/proc/PID/io`` is read: ``write_bytes`` is every
byte the process dirtied in the page cache to be written to a disk (the kernel counts a page when
it is dirtied, so a spool file written, then overwritten or removed, counts each time it was
written; ``cancelled_write_bytes`` is the part of it truncated or removed before it was written
back). The figure is ``write_bytes`` divided by the sizes of the files kept under
``store/recordings/`` (audio and evidence pcap). ``wait4``'s ``ru_oublock`` (the same counter in
512-byte units, read at the reaping) checks the reading. Writes to tmpfs are not counted by the
kernel at all, so the store is made under ``bench/results/`` (on the repository's disk) and the
file system's type is given with the figure.

The child's stdout and stderr go to pipes (a log file would count), and it writes no ``.pyc``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from whole_process import ENV, SUMMARY, VENV_BIN, make_site  # noqa: E402

RESULTS = BENCH / "results"
TARGET = 1.1  # issue 13: bytes written per byte kept
UNCOUNTED_FS = {"tmpfs", "ramfs"}  # the kernel does not count writes to these in write_bytes


def fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def proc_io(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io", encoding="ascii") as f:
        return {k: int(v) for k, v in (line.split(":", 1) for line in f if ":" in line)}


def run_counted(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; its /proc/PID/io as it exited, its rusage, its output, its wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:  # type: ignore[no-untyped-def]
        out[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True) for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: /proc/PID/io is whole
    wall = time.perf_counter() - started
    io = proc_io(proc.pid)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "io": io,
        "oublock_bytes": usage.ru_oublock * 512,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "stdout": out.get("stdout", b"").decode(errors="replace"),
        "stderr": out.get("stderr", b"").decode(errors="replace"),
    }


def kept_files(store: Path) -> dict:
    audio = evidence = 0
    files = 0
    for path in (store / "recordings").rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            if path.name.endswith(".pcap.rdv"):
                evidence += path.stat().st_size
            else:
                audio += path.stat().st_size
    rest = sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and (store / "recordings") not in p.parents)
    return {"files": files, "audio_bytes": audio, "evidence_bytes": evidence, "kept_bytes": audio + evidence,
            "other_store_bytes_at_end": rest}


def measure(capture: Path) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="write-amplification-", dir=RESULTS) as tmp:
        config = make_site(Path(tmp))
        store = Path(tmp) / "store"
        fstype = fs_type(store)
        if fstype in UNCOUNTED_FS:
            raise RuntimeError(f"the store would be on {fstype}, whose writes the kernel does not count")
        command = [str(VENV_BIN / "recorderd"), "replay", str(capture), "--config", str(config)]
        run = run_counted(command, {**ENV, "PYTHONDONTWRITEBYTECODE": "1"})
        if run["returncode"] != 0:
            raise RuntimeError(f"recorderd replay failed ({run['returncode']}): {run['stderr'][-2000:]}")
        kept = kept_files(store)
    found = SUMMARY.search(run["stdout"])
    io = run["io"]
    written, cancelled = io["write_bytes"], io["cancelled_write_bytes"]
    if not kept["kept_bytes"]:
        raise RuntimeError("nothing was kept: no figure")
    return {
        "method": (f"python bench/write_amplification.py CAPTURE: {' '.join(command[:2])} CAPTURE --config CFG into a "
                   f"fresh store ({fstype}, under bench/results/) as its child; /proc/PID/io read once it has exited, "
                   "before it is reaped (waitid WNOWAIT): write_bytes / the sizes of the files kept under "
                   "store/recordings/ (audio + evidence pcap); wait4's ru_oublock x 512 checks write_bytes"),
        "command": command,
        "store_fs": fstype,
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "recorded": int(found[2]) if found else None,
        "write_bytes": written,
        "cancelled_write_bytes": cancelled,
        "oublock_bytes": run["oublock_bytes"],
        "read_bytes": io["read_bytes"],
        "wchar": io["wchar"],
        **kept,
        "written_per_kept": written / kept["kept_bytes"],
        "net_written_per_kept": (written - cancelled) / kept["kept_bytes"],
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} CAPTURE.pcap")
    print(json.dumps(measure(Path(sys.argv[1]))))
