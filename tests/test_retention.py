"""Retention (Art. 5): the deadline on both sides of every boundary, holds, prompt and unrecoverable
erasure, interrupted erasure, and the end-to-end run under faketime."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import FIXTURES, Site, needs_tool

from storage import sealed
from storage.policy import retain_until
from storage.retention import RetentionWorker

JST = ZoneInfo("Asia/Tokyo")


def jst(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=JST).timestamp()


@pytest.mark.parametrize("call,deadline", [
    ("2026-09-01 10:00:00", "2026-09-16 00:00:00"),   # the guideline's example: kept through 15 Sep
    ("2026-09-01 00:00:00", "2026-09-16 00:00:00"),
    ("2026-09-01 23:59:59", "2026-09-16 00:00:00"),
    ("2026-09-02 00:00:00", "2026-09-17 00:00:00"),
    ("2026-09-01 08:59:59", "2026-09-16 00:00:00"),   # 23:59:59 UTC on 31 Aug: the JST date counts
    ("2026-01-31 12:00:00", "2026-02-15 00:00:00"),   # month end
    ("2026-12-20 12:00:00", "2027-01-04 00:00:00"),   # year end
    ("2026-12-31 23:59:59", "2027-01-15 00:00:00"),
    ("2028-02-14 09:00:00", "2028-02-29 00:00:00"),   # leap day is a day like any other
    ("2028-02-15 09:00:00", "2028-03-01 00:00:00"),
    ("2027-02-15 09:00:00", "2027-03-02 00:00:00"),
])
def test_deadline(call: str, deadline: str) -> None:
    assert retain_until(jst(call), 14, JST) == jst(deadline)


def test_deadline_follows_the_configured_days() -> None:
    assert retain_until(jst("2026-09-01 10:00:00"), 30, JST) == jst("2026-10-02 00:00:00")


class Clock:
    """The wall clock and the boot clock beside it: setting ``t`` is time passing (both move);
    :meth:`step` moves the wall clock alone, as setting the system clock does."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.offset = 0.0

    def __call__(self) -> float:
        return self.t + self.offset

    def steady(self) -> float:
        return self.t - 1_700_000_000.0

    def step(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def kept(site: Site, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """A store with the overlapping fixture's two recordings (calls on 2026-09-21 JST)."""
    site.replay(FIXTURES / "overlapping.pcap")
    recs = site.list(capsys)
    clock = Clock(jst("2026-09-22 12:00:00"))
    store = site.open_store()
    store.clock, store.steady = clock, clock.steady
    yield site, store, clock, recs
    store.close()


DEADLINE = "2026-10-06 00:00:00"


def test_erased_at_the_deadline_not_before(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    assert all(r["retain_until"] == "2026-10-06T00:00:00.000+09:00" for r in recs)
    worker = RetentionWorker(store)
    clock.t = jst(DEADLINE) - 1
    assert worker.run().erased == []
    assert len(site.stored_files()) == 2
    clock.t = jst(DEADLINE)
    report = worker.run()
    assert sorted(e.id for e in report.erased) == sorted(r["id"] for r in recs)
    assert all(e.late_s == 0 for e in report.erased)
    assert site.stored_files() == [] and store.reading.recordings() == []
    records = store.db().erasures()
    assert [(r["did_label"], r["call_date"]) for r in records] == [("幸区役所", "2026-09-21"),
                                                                   ("麻生区役所", "2026-09-21")]
    assert {r["sha256"] for r in records} == {r["sha256"] for r in recs}


def test_holds_stack_and_postpone_erasure(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    target = recs[0]["id"]
    h1 = store.holding.hold(target, until=jst("2026-10-20 00:00:00"), reason="complaint", ref="K-1", by="manager1")
    h2 = store.holding.hold(target, until=jst("2026-11-01 00:00:00"), reason="police inquiry", ref="K-2", by="manager1")
    worker = RetentionWorker(store)
    clock.t = jst(DEADLINE) + 60
    assert [e.id for e in worker.run().erased] == [recs[1]["id"]]
    store.holding.release(target, h1)
    assert worker.run().erased == []  # the second hold still stands
    clock.t = jst("2026-10-25 00:00:00")
    assert worker.run().erased == []
    store.holding.release(target, h2)  # released after the deadline
    [erased] = worker.run().erased
    assert erased.id == target and erased.late_s > 0
    assert store.reading.recordings() == []


def test_hold_that_ends_by_itself(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    store.holding.hold(recs[0]["id"], until=jst("2026-10-10 00:00:00"), reason="review", ref="R-7", by="manager1")
    worker = RetentionWorker(store)
    clock.t = jst("2026-10-09 23:59:59")
    assert [e.id for e in worker.run().erased] == [recs[1]["id"]]
    clock.t = jst("2026-10-10 00:00:00")
    assert [e.id for e in worker.run().erased] == [recs[0]["id"]]


def test_erasure_is_unrecoverable(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    path = site.stored_path(recs[0])
    original = path.read_bytes()
    with open(path, "rb") as held:  # a process that had the file open before the erasure
        clock.t = jst(DEADLINE)
        RetentionWorker(store).run()
        held.seek(0)
        after = held.read()
    assert len(after) == len(original)
    assert after != original and all(original[i : i + 64] not in after for i in range(0, len(original) - 64, 4096))
    assert not path.exists()
    index = site.store / "index.sqlite"
    raw = index.read_bytes() + (Path(str(index) + "-wal").read_bytes() if Path(str(index) + "-wal").exists() else b"")
    for rec in recs:
        assert rec["caller"].encode() not in raw
        assert rec["call_id"].encode() not in raw


def test_wrapped_keys_do_not_linger_in_index_or_wal(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    index = site.store / "index.sqlite"
    with sqlite3.connect(index) as db:
        [(wrapped,)] = db.execute("SELECT wrapped_key FROM recordings").fetchall()
    assert len(wrapped) == 12 + 32 + 16
    store = site.open_store()
    store.clock = Clock(jst("2026-10-06 00:00:01"))
    assert len(RetentionWorker(store).run().erased) == 1
    store.close()
    for path in (index, Path(str(index) + "-wal"), Path(str(index) + "-journal")):
        if path.exists():
            assert wrapped not in path.read_bytes(), path


def test_erasure_interrupted_at_each_step_completes_next_run(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    clock.t = jst(DEADLINE)
    index = store.db()
    a, b = (store.reading.get(r["id"]) for r in recs)
    index.begin_erasure(a.id, clock.t)  # died right after the key was destroyed
    index.begin_erasure(b.id, clock.t)
    os.unlink(store.layout.file_path(b))  # died right after the unlink
    report = RetentionWorker(store).run()
    assert sorted(e.id for e in report.erased) == sorted([a.id, b.id])
    assert store.reading.recordings() == [] and site.stored_files() == []
    assert len(index.erasures()) == 2


def test_kill_9_during_erasure_then_retention_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    site.replay(FIXTURES / "demo-day.pcap")
    n = len(site.list(capsys))
    script = (
        f"import sys, time; sys.argv[1:] = ['--config', {str(site.config)!r}, 'retention', 'run'];"
        f"time.time = lambda: {jst(DEADLINE) + 3600!r}; from recorderd.ctl import main; main()"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.25)  # wherever it is: loading, erasing, or done
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = site.open_store()
    store.clock = Clock(jst(DEADLINE) + 3660)  # a minute on, by the wall clock: the boot clock agrees
    RetentionWorker(store).run()
    assert store.reading.recordings() == [] and site.stored_files() == []
    assert len(store.db().erasures()) == n
    store.close()


def test_verify_and_export_fail_loudly_on_damage(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from generator import SipCall, write_pcap

    calls = [SipCall(f"long-{i}", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                     1_790_000_000.0 + 20 * i, talk=6.0, seed=90 + i) for i in range(2)]
    write_pcap(str(tmp_path / "long.pcap"), [p for c in calls for p in c.packets()])
    site.replay(tmp_path / "long.pcap")
    capsys.readouterr()
    assert site.ctl("verify") == 0
    assert "verified 2 recording(s) and the audit log: all hold" in capsys.readouterr().out
    first, second = site.list(capsys)  # 6 s calls: several sealed records each (storage/sealed.py)
    flipped = site.stored_path(first)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    dropped = site.stored_path(second)
    data = dropped.read_bytes()
    fd = os.open(dropped, os.O_RDONLY)
    records = sealed.scan(fd, "t").records
    os.close(fd)
    dropped.write_bytes(data[: records[2][2]] + data[records[3][2] :])  # its third record removed
    assert site.ctl("verify") == 1
    out = capsys.readouterr().out
    assert f"recording {first['id']}: record" in out and "fails authentication (altered" in out
    assert f"recording {second['id']}: record 2 out of sequence" in out
    for rec in (first, second):
        assert site.ctl("export", rec["id"], "--out", str(tmp_path / "x.wav"), "--purpose", "quality") == 1
        assert "fails its integrity check" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_insecure_key_file_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    os.chmod(site.root / "master.key", 0o644)
    assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 2
    assert "is readable by others (mode 0644): refusing to use it" in capsys.readouterr().err


def test_decommission_erases_everything_and_certifies(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "demo-day.pcap")
    n = len(site.list(capsys))
    assert site.ctl("decommission", "--certificate", str(tmp_path / "cert")) == 2  # needs --confirm
    assert site.ctl("decommission", "--confirm", "--certificate", str(tmp_path / "cert")) == 0
    import json

    cert = json.loads((tmp_path / "cert.json").read_text(encoding="utf-8"))
    assert cert["recordings_erased"] == n and cert["master_key_erased"] is True
    assert cert["verification"].startswith("passed")
    assert "luksErase" in (tmp_path / "cert.txt").read_text(encoding="utf-8")
    assert site.stored_files() == [] and not (site.store / "index.sqlite").exists()
    assert not (site.root / "master.key").exists()


def test_retention_run_under_faketime(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end with the real clock moved by faketime (Debian faketime): D+14 23:59 JST erases
    nothing, D+15 00:00 JST erases the recording."""
    faketime = needs_tool("faketime")
    site.replay(FIXTURES / "inbound-mulaw.pcap")  # call on 2026-09-21 JST
    [rec] = site.list(capsys)
    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "retention", "run"]
    env = {**os.environ, "TZ": "UTC"}
    # 23:59 JST
    before = subprocess.run([faketime, "2026-10-05 14:59:00", *ctl], capture_output=True, text=True, env=env)
    assert before.returncode == 0 and "0 recording(s) erased" in before.stdout, before.stdout + before.stderr
    assert len(site.stored_files()) == 1
    # 00:00 JST
    after = subprocess.run([faketime, "2026-10-05 15:00:00", *ctl], capture_output=True, text=True, env=env)
    assert after.returncode == 0 and f"erased {rec['id']}" in after.stdout, after.stdout + after.stderr
    assert site.stored_files() == []


def test_retention_change_applies_to_new_recordings_and_is_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = Site(tmp_path).init()
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    site.config.write_text(site.config.read_text() + "retention: {days: 30}\n")
    capsys.readouterr()
    site.replay(FIXTURES / "inbound-alaw.pcap")
    assert "retention policy changed from 14 days from call start to 30 days from call start" in capsys.readouterr().err
    deadlines = {r["codec"]: r["retain_until"] for r in site.list(capsys)}
    assert deadlines == {"PCMU": "2026-10-06T00:00:00.000+09:00", "PCMA": "2026-10-22T00:00:00.000+09:00"}


def test_failed_and_late_erasure_is_critical(  # type: ignore[no-untyped-def]
    kept, caplog: pytest.LogCaptureFixture
) -> None:
    site, store, clock, recs = kept
    clock.t = jst(DEADLINE) + 3601
    blocked = site.stored_path(recs[0])
    blocked.unlink()
    blocked.mkdir()  # something the worker cannot overwrite, as a failing disk would
    with caplog.at_level("CRITICAL"):
        report = RetentionWorker(store).run()
    assert [e.id for e in report.erased] == [recs[1]["id"]]
    assert len(report.failures) == 1 and recs[0]["id"] in report.failures[0]
    messages = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert any("erasure of recording" in m for m in messages)
    assert any("still stored 60 min after its retention deadline" in m for m in messages)


# -- the clock (issue 16, item 2) -----------------------------------------------------------------


def _confirm_clock(site: Site, clock: Clock) -> object:
    """``recorderctl retention confirm-clock`` by the manager, on the store seen through ``clock``."""
    from recorderd import ops, roles, wire
    from recorderd.config import load

    config = load(str(site.config))
    store = site.open_store()
    store.clock, store.steady = clock, clock.steady
    caller = roles.resolve(os.getuid(), config, via="direct", pid=os.getpid())
    with ops.session(config, caller, wire.FileSink, store=store) as ctx:
        return ops.run(ctx, "retention-confirm-clock", {})


def _clock_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if getattr(r, "EVENT", "") == "clock-jump" and r.levelname == "CRITICAL"]


def test_a_clock_stepped_forward_stops_erasure_until_a_manager_confirms(
    kept, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wall clock set 20 days ahead (the boot clock moved a second): nothing is erased, CRITICAL
    once, status says so, until the manager confirms; then what is due by the clock is erased."""
    site, store, clock, recs = kept
    worker = RetentionWorker(store)
    assert worker.run().erased == [] and worker.run().clock_jump is None
    clock.step(20 * 86400)
    clock.t += 1
    with caplog.at_level("INFO"):
        report = worker.run()
        clock.t += 60
        again = worker.run()
    assert report.erased == [] and again.erased == [] and len(site.stored_files()) == 2
    assert report.clock_jump is not None and report.clock_jump.kind == "forward"
    assert 20 * 86400 - 5 < report.clock_jump.seconds < 20 * 86400 + 5
    assert len(_clock_events(caplog)) == 1 and "recording-erased" not in caplog.text
    capsys.readouterr()
    assert site.ctl("status") == 0
    assert "RETENTION STOPPED: the clock jumped 20.0 days forward" in capsys.readouterr().out
    assert site.ctl("retention", "run") == 1  # directly, on the real clock: still stopped
    assert "STOPPED: the clock jumped" in capsys.readouterr().out and len(site.stored_files()) == 2
    assert site.ctl("status", "--json") == 0
    import json

    assert json.loads(capsys.readouterr().out)["retention"]["clock_jump"]["kind"] == "forward"
    reply = _confirm_clock(site, clock)
    assert reply.rc == 0 and "clock confirmed as 2026-10-12" in reply.text  # type: ignore[attr-defined]
    [row] = [e for e in store.audit_log().select(None, None) if e[1].action == "retention-confirm-clock"]
    assert row[1].result == "allowed" and row[1].detail["clock_jump"]["kind"] == "forward"
    assert sorted(e.id for e in worker.run().erased) == sorted(r["id"] for r in recs)  # due by the confirmed clock


def test_a_clock_stepped_back_stops_erasure_and_says_so(  # type: ignore[no-untyped-def]
    kept, caplog: pytest.LogCaptureFixture
) -> None:
    """Set back two days just before the deadline: the recordings would stay past it without a word."""
    site, store, clock, recs = kept
    worker = RetentionWorker(store)
    clock.t = jst(DEADLINE) - 600
    assert worker.run().clock_jump is None
    clock.step(-2 * 86400)
    clock.t = jst(DEADLINE) + 3600  # an hour past the deadline by the boot clock
    with caplog.at_level("CRITICAL"):
        report = worker.run()
    assert report.clock_jump is not None and report.clock_jump.kind == "back" and report.erased == []
    assert len(_clock_events(caplog)) == 1
    clock.offset = 0.0  # someone puts the clock right: still stopped until confirmed
    assert worker.run().clock_jump is not None
    assert _confirm_clock(site, clock).rc == 0  # type: ignore[attr-defined]
    assert len(worker.run().erased) == 2


def test_forward_steps_each_under_the_bound_add_up(kept) -> None:  # type: ignore[no-untyped-def]
    """A clock stepped 50 minutes ahead at each run (each step under the hour): by the second step it
    is 100 minutes ahead, a jump, and after 17 such steps the recordings would have been erased 14 days early."""
    site, store, clock, recs = kept
    worker = RetentionWorker(store)
    assert worker.run().clock_jump is None
    clock.step(50 * 60)
    clock.t += 60
    assert worker.run().clock_jump is None  # one step of 50 minutes: under the bound
    clock.step(50 * 60)
    clock.t += 60
    report = worker.run()
    assert report.clock_jump is not None and report.clock_jump.kind == "forward"
    assert 100 * 60 - 5 < report.clock_jump.seconds < 100 * 60 + 5
    for _ in range(400):  # on to past the deadline by the stepped clock alone: nothing erased
        clock.step(50 * 60)
        clock.t += 60
        assert worker.run().erased == []
    assert len(site.stored_files()) == 2
    assert _confirm_clock(site, clock).rc == 0  # type: ignore[attr-defined]
    clock.t += 60
    assert worker.run().clock_jump is None  # measured from the confirmed clock again


@pytest.mark.parametrize("wall,kind", [(-3600.0, "back"), (2 * 86400.0, "forward"), (3 * 3600.0, None)])
def test_across_a_reboot_the_last_run_is_the_reference(  # type: ignore[no-untyped-def]
    kept, wall: float, kind: str | None
) -> None:
    """After a reboot the boot clock starts again: earlier than the last run is a step back, more
    than a day after it needs a confirmation, a few hours (the box was off) is fine."""
    site, store, clock, recs = kept
    assert RetentionWorker(store).run().clock_jump is None
    store.boot_id = lambda: "another boot"
    clock.t += wall
    jump = RetentionWorker(store).run().clock_jump
    assert (jump.kind if jump else None) == kind


def test_a_clock_before_the_newest_recording_is_a_step_back(kept) -> None:  # type: ignore[no-untyped-def]
    site, store, clock, recs = kept
    clock.t = jst("2026-09-21 12:00:00")  # the calls started at 23:13 that day; no run before
    jump = RetentionWorker(store).run().clock_jump
    assert jump is not None and jump.kind == "back" and "newest recording" in jump.why


def test_clock_jump_under_faketime_directly(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """``recorderctl retention run`` as root, the service stopped, with libfaketime moving the wall
    clock only (FAKETIME_DONT_FAKE_MONOTONIC: the boot clock goes on, as when the clock is set)."""
    faketime = needs_tool("faketime")
    site.replay(FIXTURES / "inbound-mulaw.pcap")  # a call on 2026-09-21 JST, due 2026-10-06
    [rec] = site.list(capsys)
    env = {**os.environ, "TZ": "UTC", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def at(utc: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [faketime, utc, sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)

    first = at("2026-09-22 03:00:00", "retention", "run")
    assert first.returncode == 0 and "0 recording(s) erased" in first.stdout, first.stdout + first.stderr
    stepped = at("2026-10-12 03:00:00", "retention", "run")  # 20 days later, a second after
    said = stepped.stdout + stepped.stderr
    assert stepped.returncode == 1 and "STOPPED: the clock jumped 20.0 days forward" in stepped.stdout, said
    assert len(site.stored_files()) == 1
    assert "RETENTION STOPPED" in at("2026-10-12 03:00:05", "status").stdout
    confirmed = at("2026-10-12 03:00:10", "retention", "confirm-clock")
    assert confirmed.returncode == 0 and "clock confirmed" in confirmed.stdout, confirmed.stdout + confirmed.stderr
    after = at("2026-10-12 03:00:20", "retention", "run")
    assert after.returncode == 0 and f"erased {rec['id']}" in after.stdout, after.stdout + after.stderr
    assert site.stored_files() == []


def test_recordings_made_while_the_clock_was_ahead_do_not_stop_retention_again(  # type: ignore[no-untyped-def]
    kept
) -> None:
    """After a confirmed correction, a recording that started by the wrong clock (later than now) is
    not a new step back: retention goes on."""
    site, store, clock, recs = kept
    clock.t = jst("2026-09-21 12:00:00")  # earlier than the newest call's start
    assert RetentionWorker(store).run().clock_jump is not None
    assert _confirm_clock(site, clock).rc == 0  # type: ignore[attr-defined]
    clock.t += 60
    assert RetentionWorker(store).run().clock_jump is None
