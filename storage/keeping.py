"""Keeping a finished call: its spool files into the locked store, then its index row.

Its sealed WAV and pcap are completed (final header, FINAL), fsynced, renamed into place, the
directories fsynced, indexed (the wrapped key, the plaintext SHA-256s computed from the renamed files,
which also checks every record), and only then are the spool files and the sidecar unlinked. A
plaintext spool WAV (a caller of the previous edition's interface) is still encrypted into RDV1. A
stored recording is never rewritten.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from . import sealed, vault
from .erasure import erase_file, fsync_dir
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
                 clock: Callable[[], float], retention_days: int, anchor: str = "start") -> None:  # fmt: skip
        self.layout = layout
        self.db = db
        self.master_key = master_key
        self.clock = clock
        self.retention_days = retention_days
        self.anchor = anchor  # "start" | "end": which moment of the call dates it for retention

    def keep(self, recording_id: str, wav_path: str | None, call: Any, *, pcap_path: str | None = None,
             audio: str = "exact", rate: int = 8000, data_key: bytes | None = None, wrapped_key: bytes | None = None,
             **final: Any) -> RecordingRow | None:  # fmt: skip
        """Keep a finalised call (its WAV and/or evidence pcap): sealed spool files (``data_key``
        given: their key) are completed, synced and renamed into the store; a plaintext spool WAV is
        encrypted into it with a new key. Then index it, then remove the spool files."""
        index = self.db()
        spool_dir = self.layout.spool_dir
        base = os.path.join(spool_dir, recording_id)
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
        rel = self.layout.relative_path(recording_id, call.started_at)
        sha256, size = place(wav_path, rel, data_key) if wav_path else ("", 0)
        pcap_rel, pcap_sha, pcap_size = "", "", 0
        if pcap_path:
            pcap_rel = rel[: -len(SUFFIX)] + PCAP_SUFFIX
            pcap_sha, pcap_size = place(pcap_path, pcap_rel, data_key)
        if is_sealed:
            fsync_dir(spool_dir)
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
                                      self.retention_days, self.layout.tz),  # fmt: skip
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
        """A sealed spool file into its place ``rel`` in the store: completed if its writer could
        not (a full disk), fsynced, renamed (the same file system: no byte copied), the directory
        fsynced. Returns its plaintext's SHA-256 and size, from the renamed file (read from the page
        cache it was just written through; every record's tag checked)."""
        dest = os.path.join(self.layout.recordings_dir, rel)
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
        fsync_dir(self.layout.spool_dir)
