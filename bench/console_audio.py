"""The console's audio: how soon the first byte of a one-hour recording comes after the purpose is
chosen (issue 12: at most 300 ms), and after a seek to its 59th minute.

``python bench/console_audio.py [RUNS]`` (JSON out). A store in a temporary folder (a config as the
tests write one, the user running the bench being the console and every role), one recording of
3,600 s of random stereo PCMU kept through ``store.keeper.keep`` (encrypted in 64 KiB vault chunks,
indexed, as the recorder keeps a call), a real :class:`recorderd.control.ControlServer` on its Unix
socket. Each run, timed with ``time.perf_counter()`` by the client: ``play ID --purpose quality``
acting for the user (audited, a new ticket, the background integrity check started), then
``play-audio --offset 0 --length 65536`` into a :class:`recorderd.client.CallbackSink`; the time is
that of the first chunk handed to the sink. The seek: ``play-audio`` at the byte of 59:00 of the
PCM rendition with the same ticket. Also timed once: ``waveform --points 2000`` (the whole hour
decrypted and reduced, then cached with the ticket).
"""
from __future__ import annotations

import getpass
import grp
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from capture.sink import CallInfo  # noqa: E402
from recorderd import client, control, ctl  # noqa: E402
from recorderd.config import load  # noqa: E402
from recorderd.control import ControlServer  # noqa: E402
from storage import wav  # noqa: E402

SECONDS = 3600
IP = "127.0.0.1"


def make_site(root: Path, group: str | None = None) -> Path:
    """A site whose role groups are all ``group`` (the bench user's own by default)."""
    me_group = group or grp.getgrgid(os.getgid()).gr_name
    shutil.copy(ROOT / "config" / "dids.yaml", root / "dids.yaml")
    config = {
        "store": {"path": "store", "require_encrypted_volume": False},
        "dids_file": "dids.yaml",
        "control": {"socket": "control.sock"},
        "roles": {f"{r}_group": me_group for r in ("manager", "staff", "technician", "auditor")},
        "console": {"user": getpass.getuser()},
    }
    path = root / "recorderd.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            assert ctl.main(["--config", str(path), "init"]) == 0
        finally:
            sys.stdout = stdout
    return path


def keep_hour(config_path: Path) -> str:
    from recorderd.service import open_store

    store = open_store(load(str(config_path))).open()
    try:
        frames = SECONDS * 8000
        started = store.clock() - 2 * SECONDS
        call = CallInfo("bench-hour@console", "+81442003939", "bench", "09000000000", started, "PCMU")
        rid = store.layout.new_recording_id(call.call_id, call.did, started)
        spool = os.path.join(store.spool_dir, rid + ".wav")
        rng = random.Random(1)
        with open(spool, "xb") as f:
            f.write(wav.header("PCMU", frames))
            for _ in range(SECONDS):
                f.write(rng.randbytes(2 * 8000))
        store.keeper.keep(rid, spool, call, ended_at=started + SECONDS, frames=frames, complete=True, end_reason="bye",
                          streams=[{"channel": ch, "packets": 180000, "expected": 180000, "lost": 0}
                                   for ch in (1, 2)])
        return rid
    finally:
        store.close()


def first_byte(sock: str, ticket: str, offset: int, started: float) -> float:
    seen: list[float] = []

    def deliver(chunk: bytes) -> None:
        if not seen:
            seen.append(time.perf_counter())

    reply = client.call(sock, "play-audio", {"ticket": ticket, "offset": offset, "length": 65536},
                         {"audio": client.CallbackSink("audio", deliver)},
                         acting_for={"user": USER, "ip": IP})
    if reply.rc != 0 or not seen:
        raise RuntimeError(f"play-audio failed: {reply.error}")
    return (seen[0] - started) * 1000


USER = getpass.getuser()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main(runs: int = 20) -> dict:
    root = Path(tempfile.mkdtemp(prefix="recorderd-bench-console-"))
    try:
        config_path = make_site(root)
        t = time.perf_counter()
        rid = keep_hour(config_path)
        keep_s = time.perf_counter() - t
        config = load(str(config_path))
        server = ControlServer(config)
        assert server.start()
        sock = control.socket_path(config)
        acting = {"user": USER, "ip": IP}
        try:
            firsts, seeks, plays = [], [], []
            ticket, size = "", 0
            for _ in range(runs):
                started = time.perf_counter()
                played = client.call(sock, "play", {"id": rid, "purpose": "quality"}, {}, acting_for=acting)
                if played.rc != 0:
                    raise RuntimeError(played.error)
                plays.append((time.perf_counter() - started) * 1000)
                ticket, size = played.data["ticket"], played.data["size"]
                firsts.append(first_byte(sock, ticket, 0, started))
                seek_at = 44 + 59 * 60 * 8000 * 4
                t = time.perf_counter()
                seeks.append(first_byte(sock, ticket, seek_at, t))
            t = time.perf_counter()
            wave = client.call(sock, "waveform", {"ticket": ticket, "points": 2000}, {}, acting_for=acting)
            wave_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            client.call(sock, "waveform", {"ticket": ticket, "points": 2000}, {}, acting_for=acting)
            wave_cached_ms = (time.perf_counter() - t) * 1000
            if wave.rc != 0:
                raise RuntimeError(wave.error)
        finally:
            server.stop()
        stored = sum(p.stat().st_size for p in (root / "store" / "recordings").rglob("*.rdv"))
        return {
            "method": "python bench/console_audio.py: " + " ".join(__doc__.split("\n\n")[1].split()),
            "recording_s": SECONDS, "stored_bytes": stored, "rendition_bytes": size, "keep_s": round(keep_s, 2),
            "runs": runs,
            "play_ms": {"p50": round(statistics.median(plays), 1), "p95": round(pct(plays, 95), 1)},
            "first_byte_ms": {"p50": round(statistics.median(firsts), 1), "p95": round(pct(firsts, 95), 1),
                              "max": round(max(firsts), 1)},
            "seek_59min_first_byte_ms": {"p50": round(statistics.median(seeks), 1), "p95": round(pct(seeks, 95), 1),
                                         "max": round(max(seeks), 1)},
            "waveform_2000_ms": round(wave_ms, 1), "waveform_2000_cached_ms": round(wave_cached_ms, 1),
            "target_first_byte_ms": 300,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import logging

    logging.disable(logging.INFO)
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20), indent=2, ensure_ascii=False))
