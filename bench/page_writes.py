"""What a spool write costs the kernel, by where it ends: on a page boundary of the file or not.

    python bench/page_writes.py [--files 3000] [--mb 300] [--sizes 16384,16429] [--rounds 2] [--json]

``--files`` files are made in a temporary folder on the repository's file system (the spool's, in
the bench: a tmpfs would measure nothing of ext4), then ``--mb`` MB are written into them in turn,
``pwritev`` of one buffer of each size in ``--sizes`` at the end of each file, as the spool's
writers append sealed records to ~3,000 calls' files at 300 k packets/s. Printed per size: system
CPU microseconds per write and GB/s. A sealed record of 16 KiB of plaintext is 16,429 bytes
(17 + 12 + 16,384 + 16): each of its writes leaves the file's last page half written, which the
kernel zeroes the rest of when it makes the page, and which the daemon's sync each second writes
back half full, to be dirtied and written again by the next record (``bench/live.py``'s bytes
written per byte stored). Sizes are run in turn, ``--rounds`` times. Not part of ``make test``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(folder: Path, files: int, mb: int, size: int) -> dict[str, float]:
    """``mb`` MB in writes of ``size`` bytes, round-robin over ``files`` new files; system CPU."""
    fds = [os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600) for i in range(files)]
    try:
        buf = memoryview(bytearray(os.urandom(size)))
        ends = [0] * files
        writes = mb * 1_000_000 // size
        before = resource.getrusage(resource.RUSAGE_SELF)
        for k in range(writes):
            i = k % files
            ends[i] += os.pwritev(fds[i], (buf,), ends[i])
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for fd in fds:
            os.close(fd)
        for i in range(files):
            (folder / f"f{i}").unlink()
    system = after.ru_stime - before.ru_stime
    return {"size": size, "writes": writes, "system_s": system, "us_per_write": system / writes * 1e6,
            "gb_per_s": writes * size / system / 1e9 if system else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--sizes", default="16384,16429")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[int, list[dict[str, float]]] = {s: [] for s in sizes}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="page-writes-", dir=ROOT / "bench" / "results") as tmp:
        for _ in range(args.rounds):
            for size in sizes:
                runs[size].append(one(Path(tmp), args.files, args.mb, size))
    out = {str(s): {"us_per_write": statistics.median(r["us_per_write"] for r in rs),
                    "runs": [round(r["us_per_write"], 2) for r in rs],
                    "gb_per_s": statistics.median(r["gb_per_s"] for r in rs)} for s, rs in runs.items()}
    if args.json:
        print(json.dumps({"files": args.files, "mb": args.mb, "sizes": out}))
        return
    for size, o in out.items():
        page = "ends on a page" if int(size) % 4096 == 0 else "ends mid-page"
        print(f"{int(size):>7,} bytes ({page}): {o['us_per_write']:.1f} us system a write {o['runs']}, "
              f"{o['gb_per_s']:.2f} GB/s")


if __name__ == "__main__":
    main()
