"""Keeping a finished call: its spool files into the locked store, then its index row.

Its sealed WAV and pcap are completed (final header, FINAL), fsynced, the WAV hashed (its plaintext
SHA-256, which also checks each of its records; the evidence pcap's was taken as its records were
sealed, nothing of it is read back), renamed into place, the folder fsynced, indexed (the wrapped key,
the SHA-256s), and only then are the spool files and the sidecar unlinked. The store worker keeps
the calls queued together (:meth:`Keeper.keep_many`): the fsyncs overlap, each folder is fsynced
once, the spool folder once the queue is empty. A
plaintext spool WAV (a caller of the previous edition's interface) is still encrypted into RDV1. A
stored recording is never rewritten.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import sealed, vault
from .erasure import erase_file, fsync_dir
from .evidence import whole_packets
from .index import Index, RecordingRow
from .layout import DIR_MODE, PCAP_SUFFIX, SUFFIX, Layout
from .policy import retain_until
from .sidecar import SIDECAR

log = logging.getLogger(__name__)


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


class Keeper:
    """Keeps finished calls in the store of ``layout``, indexed in ``db()``; their deadline is
    ``retention_days`` from the call's start or end (``anchor``), in the layout's time zone."""

    def __init__(self, layout: Layout, *, db: Callable[[], Index], master_key: Callable[[], bytes],
                 clock: Callable[[], float], retention_days: int, anchor: str = "start") -> None:
        self.layout = layout
        self.db = db
        self.master_key = master_key
        self.clock = clock
        self.retention_days = retention_days
        self.anchor = anchor  # "start" | "end": which moment of the call dates it for retention
        self.defer_spool_sync = False  # True: the spool folder fsynced by sync_spool(), once for a batch of keeps
        self._spool_unsynced = False

    def keep(self, recording_id: str, wav_path: str | None, call: Any, **kw: Any) -> RecordingRow | None:
        """Keep a finalised call (its WAV and/or evidence pcap): sealed spool files (``data_key``
        given: their key) are completed, synced and renamed into the store; a plaintext spool WAV is
        encrypted into it with a new key. Then index it, then remove the spool files. None: it was
        in the store already (its spool copy is discarded)."""
        [result] = self.keep_many([{"recording_id": recording_id, "wav_path": wav_path, "call": call, **kw}])
        if isinstance(result, Exception):
            raise result
        return result

    def keep_many(self, jobs: list[dict[str, Any]]) -> list[RecordingRow | None | Exception]:
        """:meth:`keep` for several calls (the store worker's queue), each one's outcome (its row,
        None, or what failed it: the others are kept all the same), in the order of a single keep
        but with the waits shared: every file completed and opened, all fsynced together (one
        journal commit for many), renamed, each folder fsynced once, and only then the index rows
        and the spool files removed (the spool folder fsynced once)."""
        results: list[RecordingRow | None | Exception] = [None] * len(jobs)
        staged: list[tuple[int, _Staged]] = []
        deferred, self.defer_spool_sync = self.defer_spool_sync, True
        try:
            for i, job in enumerate(jobs):
                try:
                    st = self._stage(**job)
                except Exception as exc:  # noqa: BLE001  (this call fails; the others are kept)
                    results[i] = exc
                    continue
                if st is not None:
                    staged.append((i, st))
            self._sync_files(staged, results)
            for i, st in staged:  # into place
                if results[i] is None:
                    try:
                        st.rename()
                    except Exception as exc:  # noqa: BLE001
                        results[i] = exc
            folders: dict[str, list[int]] = {}
            for i, st in staged:
                if results[i] is None and st.folder:
                    folders.setdefault(st.folder, []).append(i)
            for folder, members in folders.items():
                # once for all the renames into it, before an index row names them; not the spool's: a
                # spool name back after a crash is a recording indexed already, which keep discards
                try:
                    fsync_dir(folder)
                except OSError as exc:
                    for i in members:
                        results[i] = exc
            self._index_all([(i, st) for i, st in staged if results[i] is None], results)
        finally:
            for _, st in staged:
                st.close()
            self.defer_spool_sync = deferred
        if not deferred:
            self.sync_spool()
        return results

    def _stage(self, recording_id: str, wav_path: str | None, call: Any, *, pcap_path: str | None = None,
               audio: str = "exact", rate: int = 8000, data_key: bytes | None = None, wrapped_key: bytes | None = None,
               pcap_digest: tuple[str, int] | None = None, **final: Any) -> _Staged | None:
        """A call's files opened (sealed: completed if they must be) or, plaintext, encrypted into
        the store; None when it is in the store already."""
        base = os.path.join(self.layout.spool_dir, recording_id)
        if self.db().get(recording_id) is not None:
            log.warning(
                "recording %s is already in the store (same capture replayed?): the new copy is discarded",
                recording_id, extra={"EVENT": "duplicate-recording", "RECORDING_ID": recording_id},
            )
            self.discard_spool(base, sealed_files=data_key is not None)
            return None
        st = _Staged(recording_id, base, call, audio, rate, data_key is not None,
                     data_key or vault.new_data_key(), wrapped_key, final)
        st.rel = self.layout.relative_path(recording_id, call.started_at)
        try:
            for path, rel, known in ((wav_path, st.rel, None), (pcap_path, st.rel[: -len(SUFFIX)] + PCAP_SUFFIX, pcap_digest)):
                if not path:
                    st.files.append(None)
                elif st.sealed:
                    st.files.append(self._open_sealed(path, rel, st.data_key, known))
                else:
                    st.files.append(_Placed(path, rel, digest=self._encrypt(path, rel, st.data_key)))
        except BaseException:
            st.close()
            raise
        if st.sealed and (wav_path or pcap_path):
            st.folder = os.path.dirname(os.path.join(self.layout.recordings_dir, st.rel))
        return st

    def _sync_files(self, staged: list[tuple[int, _Staged]], results: list[Any]) -> None:
        """Every sealed file not in place yet fsynced and each one's plaintext SHA-256 taken (every
        record decrypted once, its tag checked): the fsyncs several at once on threads (their waits
        overlap, the file system commits its journal once for many) while this thread hashes the
        files one after another meanwhile, from the page cache (the content an fsync writes does
        not change). One hashing thread, not several: two took 0.15-0.17 s for a hundred WAVs of a
        minute (59 records of 16 KiB, as the bench capture's) that one hashes in 0.11 s, the
        hand-offs of the interpreter's lock between each record's decryption and hashing costing
        more than the second core gave back."""
        work = [(i, f) for i, st in staged for f in st.files if f is not None and f.file is not None]
        files = [f for _, f in work]
        if len(work) <= 1:
            outcomes = [f.sync() or f.hash() for f in files]
        else:
            with ThreadPoolExecutor(min(SYNC_THREADS, len(work)), thread_name_prefix="keep-sync") as pool:
                syncing = [pool.submit(_Placed.sync, f) for f in files]
                hashed = [f.hash() for f in files]
                outcomes = [s.result() or h for s, h in zip(syncing, hashed, strict=True)]
        for (i, _), error in zip(work, outcomes, strict=True):
            if error is not None and results[i] is None:
                results[i] = error

    def _index_all(self, ready: list[tuple[int, _Staged]], results: list[Any]) -> None:
        """The index rows of the calls whose files are in place (their folders synced), in one
        transaction (the index's journal synced once for the batch; each row in a savepoint, so one
        that fails fails alone), then each indexed call's spool files removed."""
        rows: list[tuple[int, _Staged, RecordingRow]] = []
        for i, st in ready:
            try:
                rows.append((i, st, self._row(st)))
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
        if not rows:
            return
        try:
            failed = self.db().add_many([(row, st.data_key, st.final.get("linked_legs") or ()) for _, st, row in rows])
        except Exception as exc:  # noqa: BLE001  (the commit: none of them indexed)
            failed = [exc] * len(rows)
        for (i, st, row), error in zip(rows, failed, strict=True):
            if error is not None:
                results[i] = error
                continue
            results[i] = row
            try:
                self._indexed(st, row)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc

    def _row(self, st: _Staged) -> RecordingRow:
        """The call's index row, its files in place."""
        call, final, recording_id = st.call, st.final, st.recording_id
        (sha256, size), (pcap_sha, pcap_size) = (f.digest() if f else ("", 0) for f in st.files)
        rel = st.rel
        pcap_rel = st.files[1].rel if st.files[1] else ""
        if not st.files[0]:  # nothing decodable: the evidence pcap is the recording
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
                                      self.retention_days, self.layout.tz),
            state="complete" if final["complete"] else "incomplete",
            end_reason=final["end_reason"],
            path=rel,
            streams=final["streams"],
            created_at=self.clock(),
            wrapped_key=st.wrapped_key or vault.wrap(self.master_key(), st.data_key, recording_id),
            audio=st.audio,
            rate=st.rate,
            pcap_path=pcap_rel,
            pcap_sha256=pcap_sha,
            pcap_size=pcap_size,
            conversation=getattr(call, "conversation", None) or "",
            part=getattr(call, "part", None) or 1,
            part_reason=getattr(call, "part_reason", None) or "",
        )
        return row

    def _indexed(self, st: _Staged, row: RecordingRow) -> None:
        """A call indexed: its spool files removed, and said."""
        recording_id, call = st.recording_id, st.call
        self.discard_spool(st.base, sealed_files=st.sealed)
        if one_way_audio(row.streams):
            log.warning("recording %s has one-way audio (one direction carried no audio): check the SPAN "
                        "mirror and NAT", recording_id,
                        extra={"EVENT": "one-way-audio", "RECORDING_ID": recording_id, "DID_LABEL": call.did_label})
        log.info(
            "recorded call %s to %s (%s %s, %.1f s, %s)", recording_id, call.did_label, call.codec, st.audio,
            row.ended_at - row.started_at, row.state,
            extra={"EVENT": "call-recorded", "RECORDING_ID": recording_id, "DID_LABEL": call.did_label},
        )

    def _encrypt(self, src_path: str, rel: str, data_key: bytes) -> tuple[str, int]:
        """Encrypt a spool file to ``rel`` in the store: staging name, fsync, rename, fsync dir."""
        dest = os.path.join(self.layout.recordings_dir, rel)
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
        """One sealed spool file into its place ``rel``, on its own (fsync, rename, fsync the folder):
        its plaintext's SHA-256 and size."""
        placed = self._open_sealed(src_path, rel, data_key)
        try:
            if not placed.in_place and placed.file is not None:
                os.fsync(placed.file.fd)
            placed.rename()
            fsync_dir(os.path.dirname(placed.dest))
            return placed.digest()
        finally:
            placed.close()

    def _open_sealed(self, src_path: str, rel: str, data_key: bytes, known: tuple[str, int] | None = None) -> _Placed:
        """A sealed spool file opened for its place ``rel`` in the store, completed if its writer
        could not (a full disk); :meth:`keep_many` fsyncs it, renames it (the same file system: no
        byte copied) and fsyncs the folder. Its plaintext's SHA-256 is ``known`` (the evidence pcap:
        its writer hashed each record as it sealed it, and the file it completed is as long as it
        says), else taken from the descriptor opened here (the WAV, whose header is written last:
        read from the page cache it was just written through, each record decrypted once, its tag
        checked)."""
        dest = os.path.join(self.layout.recordings_dir, rel)
        os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
        name = f"recording {os.path.basename(src_path)}"
        if not os.path.lexists(src_path) and os.path.exists(dest):  # a keep retried after its rename
            return _Placed(src_path, rel, file=sealed.SealedFile(dest, data_key, name), dest=dest, in_place=True)
        try:
            f = sealed.SealedFile(src_path, data_key, name)
        except sealed.SealedError:  # its writer met a full disk before FINAL: what was sealed is kept
            sealed.finish(src_path, data_key, name, wav_header=sealed.wav_header, pcap_whole=whole_packets)
            return _Placed(src_path, rel, file=sealed.SealedFile(src_path, data_key, name), dest=dest)
        if known is not None and known[1] != f.size:  # not the file its writer finished: read it
            known = None
        return _Placed(src_path, rel, file=f, dest=dest, digest=known)

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
        if self.defer_spool_sync:
            self._spool_unsynced = True
        else:
            fsync_dir(self.layout.spool_dir)

    def sync_spool(self) -> None:
        """The spool folder fsynced once for the keeps since the last time (``defer_spool_sync``).
        Safe to defer: a spool file whose removal a crash undid belongs to a recording already
        indexed (its files were renamed and synced first), which recovery's keep finds and discards."""
        if self._spool_unsynced:
            self._spool_unsynced = False
            fsync_dir(self.layout.spool_dir)


SYNC_THREADS = 8  # files of one batch of keeps fsynced at once (the journal committed once for many)


class _Placed:
    """One file of a call being kept: a sealed one opened (``file``) on its way to ``dest``, or a
    plaintext one already encrypted into the store (``digest`` known)."""

    def __init__(self, src: str, rel: str, *, file: sealed.SealedFile | None = None, dest: str = "",
                 in_place: bool = False, digest: tuple[str, int] | None = None) -> None:
        self.src, self.rel, self.file, self.dest, self.in_place, self._digest = src, rel, file, dest, in_place, digest

    def rename(self) -> None:
        if self.file is None or self.in_place:
            return
        try:
            os.rename(self.src, self.dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(self.src, self.dest)  # the spool on another file system: the sealed bytes as they are
        self.in_place = True

    def sync(self) -> OSError | None:
        """fsync (a sealed file not in place already); what failed, or None."""
        try:
            if self.file is not None and not self.in_place:
                os.fsync(self.file.fd)
        except OSError as exc:
            return exc
        return None

    def hash(self) -> Exception | None:
        """:meth:`digest` taken; what failed, or None."""
        try:
            self.digest()
        except (OSError, sealed.SealedError) as exc:
            return exc
        return None

    def digest(self) -> tuple[str, int]:
        if self._digest is None:
            assert self.file is not None
            self._digest = (self.file.digest(), self.file.size)  # the descriptor opened before the rename
        return self._digest

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Staged:
    """A call on its way into the store (:meth:`Keeper.keep_many`): its two files (WAV, pcap; None
    when it has not that one) and what its index row needs."""

    def __init__(self, recording_id: str, base: str, call: Any, audio: str, rate: int, is_sealed: bool,
                 data_key: bytes, wrapped_key: bytes | None, final: dict[str, Any]) -> None:
        self.recording_id, self.base, self.call, self.audio, self.rate = recording_id, base, call, audio, rate
        self.sealed, self.data_key, self.wrapped_key, self.final = is_sealed, data_key, wrapped_key, final
        self.rel = ""
        self.folder = ""  # the store folder its sealed files are renamed into (fsynced before its index row)
        self.files: list[_Placed | None] = []

    def rename(self) -> None:
        for f in self.files:
            if f is not None:
                f.rename()

    def close(self) -> None:
        for f in self.files:
            if f is not None:
                f.close()
