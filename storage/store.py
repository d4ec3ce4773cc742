"""The locked store: layout, initialisation, keeping finalised recordings, reading them back.

Layout below ``store.path``::

    index.sqlite        recordings, holds, erasure records (caller, Call-ID, DTMF sealed per recording)
    audit.sqlite        the hash-chained audit log
    spool/              calls in progress: <id>.wav, <id>.pcap, <id>.call.json, sealed as written
                        (storage/sealed.py, RDS1 under each recording's own key)
    recordings/YYYY/MM/DD/<id>.rdv   finalised recordings, encrypted (local date of the call): the
                        spool's sealed files renamed (RDS1), or RDV1 (storage/vault.py) from older code

Directories are 0700 and files 0600, created under umask 077: only the service user reads them.
Keeping a call: its sealed WAV and pcap are completed (final header, FINAL), fsynced, renamed into
place, the directories fsynced, indexed (the wrapped key, the plaintext SHA-256s computed from the
renamed files, which also checks every record), and only then is the sidecar unlinked. A plaintext
spool WAV (a caller of the previous edition's interface) is still encrypted into RDV1 as before. A
stored recording is never rewritten.
"""
from __future__ import annotations

import contextlib
import errno

import hashlib
import logging
import os
import pwd
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from . import keys, recorder, sealed, signing, vault
from .sidecar import SIDECAR
from .audit import FORMAT, AuditEvent, AuditFormatError, AuditLog
from .audit import marker as audit_marker
from .clock import boot_clock, boot_id
from .erasure import erase_file, fsync_dir
from .index import SCHEMA_VERSION as INDEX_SCHEMA, Index, RecordingRow, SchemaError
from .policy import retain_until

log = logging.getLogger(__name__)

DIR_MODE = 0o700
SUFFIX = ".rdv"
PCAP_SUFFIX = ".pcap.rdv"
AUDIT_MARKER = "audit_sealed"  # store_meta: audit.marker(audit-seal key): the audit log is sealed (format 2)
SEALED_SINCE = 2  # the index schema whose stores have a sealed audit log (the marker says so)
KEY_CHECK = "master_key_check"  # store_meta: vault.key_check of the store's master key


class StoreError(Exception):
    pass


class StoreNotInitialised(StoreError):
    pass


class IntegrityError(StoreError):
    pass


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def one_way_audio(streams: list[dict[str, Any]]) -> bool:
    """One direction carried audio and the other none."""
    packets = [s.get("packets", 0) for s in streams]
    return len(packets) == 2 and (packets[0] == 0) != (packets[1] == 0)


def _copy_across(src: str, dest: str) -> None:
    """A sealed file copied byte for byte to another file system (staging name, fsync, rename), the
    source then unlinked: ciphertext, so nothing to overwrite."""
    staging = dest + ".part"
    try:
        with open(src, "rb") as s, open(staging, "xb") as d:
            while block := s.read(1 << 20):
                d.write(block)
            d.flush()
            os.fsync(d.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    os.replace(staging, dest)
    os.unlink(src)


class Actor:
    """Who asks for an operation (a Unix user)."""

    def __init__(self, user: str, uid: int) -> None:
        self.user = user
        self.uid = uid


class Store:
    def __init__(
        self,
        root: str,
        *,
        tz: ZoneInfo,
        retention_days: int,
        anchor: str = "start",
        keep_pcap: bool = True,
        key_file: str | None = None,
        credentials_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        steady: Callable[[], float] = boot_clock,
    ) -> None:
        self.root = os.path.abspath(root)
        self.tz = tz
        self.retention_days = retention_days
        self.anchor = anchor  # "start" | "end": which moment of the call dates it for retention
        self.keep_pcap = keep_pcap  # an evidence pcap beside each WAV (always, for codecs not decoded)
        self.key_file = key_file or os.path.join(self.root, "master.key")
        self.credentials_dir = credentials_dir
        self.clock = clock
        self.steady = steady  # what a step of ``clock`` does not move (retention checks one against the other)
        self.boot_id = boot_id
        self.spool_dir = os.path.join(self.root, "spool")
        self.recordings_dir = os.path.join(self.root, "recordings")
        self.index_path = os.path.join(self.root, "index.sqlite")
        self.audit_path = os.path.join(self.root, "audit.sqlite")
        self.index: Index | None = None
        self.audit: AuditLog | None = None
        self._master: bytes | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def init(self) -> bool:
        """Create the store and, unless a systemd credential provides it, the master key file
        (idempotent), and record the key's check value. Returns True when the store was created now.

        A new key is never made for a store whose recordings hold keys wrapped by another one: it
        would open none of them. Init then refuses, and says to restore the key from its backup."""
        created = not os.path.exists(self.index_path)
        for path in (self.root, self.spool_dir, self.recordings_dir):
            os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE)
        index = Index(self.index_path)
        try:
            try:
                index.create()
            except SchemaError as exc:
                raise StoreError(str(exc)) from None
            audit = AuditLog(self.audit_path)
            audit.create()
            audit.close()
            for path in (self.index_path, self.audit_path):
                os.chmod(path, 0o600)
            made = False
            if not self._credential_present():
                wrapped = index.wrapped_keys()
                if wrapped and not os.path.exists(self.key_file):
                    raise StoreError(self._restore_advice(f"the master key file {self.key_file} is missing", wrapped)
                                     + "; init does not make a new key for a store that holds recordings")  # fmt: skip
                made = vault.create_key_file(self.key_file)
            if made:  # a store without wrapped keys: its old check value (if any) is for a key gone
                index.delete_meta(KEY_CHECK)
                self._drop_signing_key()  # wrapped by the key gone: it can sign nothing (init makes a new one)
            self._master = None
            self.master_key(index)
            self._seal_audit(AuditLog(self.audit_path), replaced=made, index=index)  # a new key: the seals start again
        finally:
            index.close()
        return created

    def _drop_signing_key(self) -> None:
        path = signing.key_path(self.root)
        if not os.path.lexists(path):
            return
        erase_file(path)
        log.warning("the signing key was wrapped by the master key that is gone: erased, and a new one is made; "
                    "copies signed before still check with the old public key (recorderctl verify-export --pubkey)",
                    extra={"EVENT": "signing-key-replaced"})  # fmt: skip

    def _restore_advice(self, what: str, wrapped: int) -> str:
        return (f"{what}: the store at {self.root} holds {wrapped} recording(s) whose keys only the store's own "
                f"master key opens; restore that key from its backup to {self.key_file} (mode 0400, owned by the "
                "service user) or load it as the systemd credential master-key, then start again")  # fmt: skip

    def _credential_present(self) -> bool:
        return bool(self.credentials_dir) and os.path.exists(os.path.join(self.credentials_dir, vault.CREDENTIAL))  # type: ignore[arg-type]

    def open(self) -> Store:
        if not os.path.exists(self.index_path):
            raise StoreNotInitialised(
                f"the store at {self.root} was never initialised: run 'recorderctl --config PATH init' first"
            )
        self.index = Index(self.index_path)
        if not self.index.initialised():
            raise StoreNotInitialised(f"{self.index_path} is not a recorderd index: run 'recorderctl init'")
        self.index.master = self.master_key  # the personal fields open with each recording's key
        try:
            version = self.index.check_version()
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        self.audit = AuditLog(self.audit_path)
        if version < INDEX_SCHEMA or self.index.meta("compact_pending"):
            self._migrate_index()
        try:
            self._note_retention_policy()
        except sqlite3.Error as exc:  # a full disk (the index is read-only then): noted at a later open
            log.warning("the retention policy could not be noted in the index (%s)", exc)
        return self

    def _migrate_index(self) -> None:
        """An index of an older edition brought up to this one, once, and audited. The audit log is
        sealed first (a log of the previous code migrated while the index still says the store
        predates the seals)."""
        self.audit_log()
        try:
            done = self.db().migrate(self.master_key())
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        if done is not None:
            old, new, rows = done
            self.record(Actor(_user_name(), os.getuid()), "index-migrated", None,
                        {"from_version": old, "to_version": new, "recordings": rows}, "allowed")  # fmt: skip
            sealed = ("caller numbers, Call-IDs and DTMF digits are now sealed under each recording's key; "
                      if old < 2 else "")
            log.warning("the index was migrated from schema version %d to %d (%d recording(s)): %seach recording "
                        "kept so far is a conversation of its own", old, new, rows, sealed,
                        extra={"EVENT": "index-migrated"})  # fmt: skip

    def _note_retention_policy(self) -> None:
        """A change of retention days or anchor applies to recordings made from now on; say so."""
        policy = f"{self.retention_days} days from call {self.anchor}"
        db = self.db().db
        row = db.execute("SELECT value FROM store_meta WHERE key = 'retention_policy'").fetchone()
        if row is None or row[0] != policy:
            db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('retention_policy', ?)", (policy,))
            if row is not None:
                log.warning("retention policy changed from %s to %s: it applies to new recordings; "
                            "those already kept keep their deadline", row[0], policy,
                            extra={"EVENT": "retention-changed"})  # fmt: skip

    def check_key(self) -> None:
        """Load the master key now and check it is the store's (the daemon refuses to start without
        the right one)."""
        self.master_key()
        if self.audit is not None:
            self.audit_log()  # and the audit log's format, sealed (migrated once) with the key

    def master_key(self, index: Index | None = None) -> bytes:
        """The master key, checked against the store's key check value (recorded at init; a store
        made before there was one gets it from the first key that opens one of its recordings)."""
        if self._master is None:
            index = index or self.index
            try:
                key = vault.load_master_key(self.key_file, self.credentials_dir)
            except vault.MissingKey as exc:
                wrapped = index.wrapped_keys() if index is not None else 0
                if wrapped:
                    raise StoreError(self._restore_advice(str(exc), wrapped) + "; do not run init") from None
                raise StoreError(f"{exc}: run 'recorderctl --config PATH init'") from None
            except OSError as exc:
                raise StoreError(f"cannot read the master key {self.key_file}: {exc.strerror}") from None
            except vault.VaultError as exc:
                raise StoreError(str(exc)) from None
            if index is not None:
                self._check_key(key, index)
            self._master = key
        return self._master

    def _check_key(self, key: bytes, index: Index) -> None:
        check = vault.key_check(key)
        source = (f"the systemd credential {vault.CREDENTIAL}" if self._credential_present() else f"the key file {self.key_file}")
        stored = index.meta(KEY_CHECK)
        if stored is not None:
            if not vault.same_check(stored, check):
                raise StoreError(self._restore_advice(f"the master key in {source} is not this store's (its check "
                                                      "value differs from the one recorded when the store was made)",
                                                      index.wrapped_keys()) + "; do not run init")  # fmt: skip
            return
        sample = index.wrapped_key_sample()
        if sample is not None:
            try:
                vault.unwrap(key, sample[1], sample[0])
            except vault.VaultError:
                raise StoreError(self._restore_advice(f"the master key in {source} does not open recording {sample[0]}",
                                                      index.wrapped_keys()) + "; do not run init") from None  # fmt: skip
        try:
            index.set_meta(KEY_CHECK, check)
        except sqlite3.Error as exc:  # a full or read-only disk: checked by a recording's key until then
            log.warning("the master key's check value could not be recorded (%s): it is recorded at the next start", exc)
        else:
            if sample is not None:
                log.info("the master key opens the store's recordings: its check value is recorded now",
                         extra={"EVENT": "key-check-recorded"})  # fmt: skip

    def close(self) -> None:
        for part in (self.index, self.audit):
            if part is not None:
                part.close()
        self.index = self.audit = None

    def db(self) -> Index:
        if self.index is None:
            raise StoreError("store is not open")
        return self.index

    def audit_log(self) -> AuditLog:
        if self.audit is None:
            raise StoreError("store is not open")
        if self.audit.key is None:
            self._seal_audit(self.audit)
        return self.audit

    def _seal_audit(self, audit: AuditLog, *, replaced: bool = False, index: Index | None = None) -> None:
        """Its rows sealed with the key derived from the master key (a log of the previous format is
        migrated once, and only when the index says the store predates the seals: a first-edition
        index without the seal marker; a newer one is refused). Once sealed, the index keeps the
        marker (keyed: a writer of the audit file alone cannot make or move it)."""
        index = index or self.db()
        try:
            key = keys.derive(self.master_key(), "audit-seal")
            sealed = audit_marker(key)
            found = index.meta(AUDIT_MARKER)
            legacy = found is None and index.schema_version() < SEALED_SINCE
            audit.tz = self.tz
            audit.use_key(key, at=self.clock(), replaced=replaced, legacy=legacy)
            if found != sealed and audit.format() == FORMAT and not audit.meta_removed:
                try:
                    index.set_meta(AUDIT_MARKER, sealed)
                except sqlite3.Error as exc:  # a full disk: written at a later open
                    log.warning("the audit seal marker could not be written to the index (%s)", exc)
        except (AuditFormatError, SchemaError) as exc:
            raise StoreError(str(exc)) from None
        finally:
            if audit is not self.audit:
                audit.close()

    def record(self, actor: Actor, action: str, recording_id: str | None, detail: dict[str, Any], result: str) -> None:
        self.audit_log().append(AuditEvent(self.clock(), actor.user, actor.uid, action, recording_id, detail, result))

    # -- keeping ------------------------------------------------------------------------------

    def sink(self, keep: Callable[..., Any] | None = None) -> recorder.SpoolSink:
        """The capture's recording sink; ``keep`` (a :class:`StoreWorker`'s) keeps finished calls
        off the capture thread, else :meth:`keep` runs where the call ends."""
        return recorder.SpoolSink(self, keep)

    def new_recording_id(self, call_id: str, did: str, started_at: float) -> str:
        base = recorder.recording_id(call_id, did, started_at, self.tz)
        rid, n = base, 1
        while any(os.path.lexists(os.path.join(self.spool_dir, rid + s)) for s in (".wav", SIDECAR)):
            n += 1
            rid = f"{base}-{n}"
        return rid

    def local_date(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).date().isoformat()

    def relative_path(self, recording_id: str, started_at: float) -> str:
        y, m, d = self.local_date(started_at).split("-")
        return os.path.join(y, m, d, recording_id + SUFFIX)

    def file_path_of(self, recording_id: str, started_at: float) -> str:
        """Where keep puts a recording's WAV (its pcap: ``PCAP_SUFFIX`` for ``SUFFIX``)."""
        return os.path.join(self.recordings_dir, self.relative_path(recording_id, started_at))

    def keep(self, recording_id: str, wav_path: str | None, call: Any, *, pcap_path: str | None = None,
             audio: str = "exact", rate: int = 8000, data_key: bytes | None = None, wrapped_key: bytes | None = None,
             **final: Any) -> RecordingRow | None:  # fmt: skip
        """Keep a finalised call (its WAV and/or evidence pcap): sealed spool files (``data_key``
        given: their key) are completed, synced and renamed into the store; a plaintext spool WAV is
        encrypted into it with a new key. Then index it, then remove the spool files."""
        index = self.db()
        base = os.path.join(self.spool_dir, recording_id)
        if index.get(recording_id) is not None:
            log.warning(
                "recording %s is already in the store (same capture replayed?): the new copy is discarded",
                recording_id, extra={"EVENT": "duplicate-recording", "RECORDING_ID": recording_id},
            )  # fmt: skip
            self.discard_spool(base, sealed_files=data_key is not None)
            return None
        is_sealed = data_key is not None
        if data_key is None:
            data_key = vault.new_data_key()
        place = self._rename if is_sealed else self._encrypt
        rel = self.relative_path(recording_id, call.started_at)
        sha256, size = place(wav_path, rel, data_key) if wav_path else ("", 0)
        pcap_rel, pcap_sha, pcap_size = "", "", 0
        if pcap_path:
            pcap_rel = rel[: -len(SUFFIX)] + PCAP_SUFFIX
            pcap_sha, pcap_size = place(pcap_path, pcap_rel, data_key)
        if is_sealed:
            fsync_dir(self.spool_dir)
        if not wav_path:  # nothing decodable: the evidence pcap is the recording
            rel, sha256, size = pcap_rel, pcap_sha, pcap_size
        ended_at = max(final["ended_at"], call.started_at)
        row = RecordingRow(
            id=recording_id,
            call_id=call.call_id,
            did=call.did,
            did_label=call.did_label,
            caller=call.caller,
            started_at=call.started_at,
            ended_at=ended_at,
            codec=call.codec,
            channels=2,
            frames=final["frames"],
            size=size,
            sha256=sha256,
            retain_until=retain_until(call.started_at if self.anchor == "start" else ended_at,
                                      self.retention_days, self.tz),  # fmt: skip
            state="complete" if final["complete"] else "incomplete",
            end_reason=final["end_reason"],
            path=rel,
            streams=final["streams"],
            created_at=self.clock(),
            wrapped_key=wrapped_key or vault.wrap(self.master_key(), data_key, recording_id),
            audio=audio,
            rate=rate,
            pcap_path=pcap_rel,
            pcap_sha256=pcap_sha,
            pcap_size=pcap_size,
            conversation=getattr(call, "conversation", None) or "",
            part=getattr(call, "part", None) or 1,
            part_reason=getattr(call, "part_reason", None) or "",
        )
        index.add(row, data_key, final.get("linked_legs") or ())
        self.discard_spool(base, sealed_files=is_sealed)
        if one_way_audio(row.streams):
            log.warning("recording %s has one-way audio (one direction carried no audio): check the SPAN "
                        "mirror and NAT", recording_id,
                        extra={"EVENT": "one-way-audio", "RECORDING_ID": recording_id, "DID_LABEL": call.did_label})  # fmt: skip
        log.info(
            "recorded call %s to %s (%s %s, %.1f s, %s)", recording_id, call.did_label, call.codec, audio,
            row.ended_at - row.started_at, row.state,
            extra={"EVENT": "call-recorded", "RECORDING_ID": recording_id, "DID_LABEL": call.did_label},
        )  # fmt: skip
        return row

    def _encrypt(self, src_path: str, rel: str, data_key: bytes) -> tuple[str, int]:
        """Encrypt a spool file to ``rel`` in the store: staging name, fsync, rename, fsync dir."""
        dest = os.path.join(self.recordings_dir, rel)
        os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
        staging = dest + ".part"
        try:
            with open(src_path, "rb") as src, open(staging, "xb") as dst:
                sha256, size = vault.encrypt_file(src, dst, data_key)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk: no half-written twin left behind
                os.unlink(staging)
            raise
        os.replace(staging, dest)
        fsync_dir(os.path.dirname(dest))
        return sha256, size

    def _rename(self, src_path: str, rel: str, data_key: bytes) -> tuple[str, int]:
        """A sealed spool file into its place ``rel`` in the store: completed if its writer could
        not (a full disk), fsynced, renamed (the same file system: no byte copied), the directory
        fsynced. Returns its plaintext's SHA-256 and size, from the renamed file (read from the page
        cache it was just written through; every record's tag checked)."""
        dest = os.path.join(self.recordings_dir, rel)
        os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
        name = f"recording {os.path.basename(src_path)}"
        if not os.path.lexists(src_path) and os.path.exists(dest):
            f = sealed.SealedFile(dest, data_key, name)  # a keep retried after its rename: in place already
        else:
            try:
                f = sealed.SealedFile(src_path, data_key, name)
            except sealed.SealedError:  # its writer met a full disk before FINAL: what was sealed is kept
                sealed.finish(src_path, data_key, name, wav_header=sealed.wav_header)
                f = sealed.SealedFile(src_path, data_key, name)
            try:
                os.fsync(f.fd)
                try:
                    os.rename(src_path, dest)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_across(src_path, dest)  # the spool on another file system: the sealed bytes as they are
                fsync_dir(os.path.dirname(dest))
            except BaseException:
                f.close()
                raise
        with f:  # the descriptor opened before the rename: the same file
            digest = hashlib.sha256()
            for chunk in f.plaintext():
                digest.update(chunk)
            f.verify()
            return digest.hexdigest(), f.size

    def discard_spool(self, base: str, *, sealed_files: bool = False) -> None:
        """Remove a call's spool files: WAV, evidence pcap, call sidecar, now that they are in the
        store. Sealed files are unlinked (ciphertext under a key the index alone keeps); plaintext
        ones of the previous edition are overwritten with zeros first."""
        for suffix in (".wav", ".pcap", SIDECAR):
            if sealed_files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(base + suffix)
            else:
                erase_file(base + suffix, pattern="zeros", sync_dir=False)
        fsync_dir(self.spool_dir)

    # -- reading ------------------------------------------------------------------------------

    def reader(self, row: RecordingRow, pcap: bool = False) -> Any:
        """The recording's WAV (or pcap) opened for random access: RDS1 or RDV1, by its magic."""
        from .reader import open_reader

        if pcap and not row.pcap_path:
            raise StoreError(f"recording {row.id} has no evidence pcap (store.keep_pcap was off)")
        data_key = vault.unwrap(self.master_key(), row.wrapped_key, row.id)
        return open_reader(self.file_path(row, pcap), data_key, f"recording {row.id}" + (" (pcap)" if pcap else ""))

    def recordings(self) -> list[RecordingRow]:
        return self.db().all()

    def get(self, recording_id: str) -> RecordingRow:
        row = self.db().get(recording_id)
        if row is None:
            raise StoreError(f"no recording {recording_id!r} in the store")
        return row

    def holds(self, recording_id: str) -> list[dict[str, Any]]:
        return self.db().holds(recording_id, self.clock())

    def file_path(self, row: RecordingRow, pcap: bool = False) -> str:
        return os.path.join(self.recordings_dir, row.pcap_path if pcap else row.path)

    def files(self, row: RecordingRow) -> list[str]:
        """Every file the recording has in the store (its WAV and/or its evidence pcap)."""
        rels = {row.path, row.pcap_path} - {""}
        return [os.path.join(self.recordings_dir, rel) for rel in sorted(rels)]

    def plaintext(self, row: RecordingRow, pcap: bool = False) -> Iterator[bytes]:
        """The recording's WAV (or its evidence pcap), decrypted chunk by chunk (each authenticated)."""
        with self.reader(row, pcap) as f:
            for i in range(f.chunks):
                yield f.chunk(i)

    def check(self, row: RecordingRow) -> str | None:
        """None when the recording (and its pcap) decrypts and matches its SHA-256; else what is wrong."""
        parts = [(False, row.sha256)] + ([(True, row.pcap_sha256)] if row.pcap_path and row.pcap_path != row.path else [])
        for pcap, expected in parts:
            digest = hashlib.sha256()
            try:
                with self.reader(row, pcap) as f:
                    for i in range(f.chunks):
                        digest.update(f.chunk(i))
                    if isinstance(f, sealed.SealedFile):
                        f.verify()  # the records a later one replaced too
            except (vault.VaultError, sealed.SealedError, OSError) as exc:
                return str(exc)
            if digest.hexdigest() != expected:
                what = "evidence pcap" if pcap else "recording"
                return f"recording {row.id}: {what} SHA-256 {digest.hexdigest()[:16]}… differs from {expected[:16]}… recorded at finalisation"
        return None

    def write_plaintext(self, row: RecordingRow, out: str, pcap: bool = False) -> None:
        """Decrypt to ``out`` (staging name, hash checked, fsync, rename); nothing is left on failure."""
        if not pcap and row.audio == "not-decoded":
            raise StoreError(f"recording {row.id} has no WAV: its codec {row.codec} is not decoded here; "
                             "its audio is the original RTP in the evidence pcap (export it as pcap)")  # fmt: skip
        expected = row.pcap_sha256 if pcap else row.sha256
        staging = f"{out}.part-{os.getpid()}"
        digest = hashlib.sha256()
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                for chunk in self.plaintext(row, pcap):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != expected:
                raise IntegrityError(
                    f"recording {row.id} fails its integrity check (SHA-256 differs from the one recorded at finalisation)"
                )
            os.replace(staging, out)
        except (vault.VaultError, sealed.SealedError) as exc:
            raise IntegrityError(f"recording {row.id} fails its integrity check: {exc}") from None
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    def verify(self) -> list[str]:
        """Every recording decrypted and hashed, and the audit chain: the problems found."""
        problems = [p for p in (self.check(row) for row in self.recordings()) if p]
        problems += [f"audit log: {p}" for p in self.audit_log().verify()]
        return problems

    # -- holds (guideline Art. 5(2)): the mechanism; who may, and the audit, are recorderctl's ----

    def hold(self, recording_id: str, *, until: float, reason: str, ref: str, by: str) -> int:
        """Keep a recording past its deadline until ``until`` (holds stack)."""
        self.get(recording_id)
        if not reason.strip() or not ref.strip():
            raise StoreError("a hold needs a reason and a reference number")
        if until <= self.clock():
            raise StoreError("a hold must end in the future")
        return self.db().add_hold(recording_id, until, reason, ref, by, self.clock())

    def release(self, recording_id: str, hold_id: int) -> None:
        """End a hold now; a recording past its deadline with no other hold goes at the next run."""
        if not self.db().release_hold(recording_id, hold_id, self.clock()):
            raise StoreError(f"recording {recording_id} has no hold {hold_id} in force")
