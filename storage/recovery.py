"""Crash recovery: calls whose recording was in the spool when the service died (kill -9, power
loss) are finalised at the next start as ``incomplete``, with all the audio that reached the disk.

Each call's spool files (WAV, evidence pcap, sealed as written: ``storage/sealed.py``) have its
sidecar beside them (written first: the recording's wrapped key and, sealed, its call), so the
recovered recording is indexed like any other: each file cut after its last whole record whose tag
holds (at most ~1 s of audio lost), the WAV's final header and FINAL sealed, then kept as any call
is (fsync, rename into the store). A sidecar with no other file (death between the creations), or
without a whole first record (death while it was written), holds no audio and is removed, and so
is the previous edition's staging copy. A spool of the previous edition (plaintext, a crash of the
older code before an upgrade) is recovered as that code did: header rebuilt, encrypted, erased. The quality figures and DTMF events are those
the sidecar had at its last line (a few seconds before the stop): the recording's note says so.
"""
from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING

from . import codecs, sealed, wav
from .erasure import erase_file
from .evidence import whole_packets
from .sidecar import FIELDS as SIDECAR_FIELDS
from .sidecar import PROGRESS_EVERY, SIDECAR, STAGING, read_sidecar
from .spool import audio_kind

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

REASON = "recovered after an unclean stop"
SOME_FIGURES = f"quality figures and DTMF events up to the last save (at most {PROGRESS_EVERY:g} s before the stop)"
NO_FIGURES = "no quality figures or DTMF events (the call stopped before they were first saved)"


def recover_spool(store: Store) -> list[str]:
    """Finalise every recording left in the spool; returns their ids."""
    recovered = []
    for name in sorted(os.listdir(store.spool_dir)):
        if name.endswith(STAGING):
            erase_file(os.path.join(store.spool_dir, name))  # a sidecar never put in place: no call's
            continue
        if not name.endswith(SIDECAR):
            continue
        recording_id = name[: -len(SIDECAR)]
        base = os.path.join(store.spool_dir, recording_id)
        wav_path = base + ".wav" if os.path.exists(base + ".wav") else None
        pcap_path = base + ".pcap" if os.path.exists(base + ".pcap") else None
        try:
            meta, streams, keys = read_sidecar(base + SIDECAR, store.master_key())
            call = SimpleNamespace(**{k: meta.get(k) for k in SIDECAR_FIELDS})
            call.clock_rate, call.channels = call.clock_rate or 8000, call.channels or 1
            renamed = _renamed(store, recording_id, call) if keys is not None else (False, False)
        except (OSError, ValueError, TypeError) as exc:
            if wav_path is None and pcap_path is None:
                erase_file(base + SIDECAR)  # died before anything was written (or while the sidecar was): nothing to keep
                continue
            log.error("spool files of %s have no readable call record (%s): kept in the spool for a technician",
                      recording_id, exc, extra={"EVENT": "recovery-failed", "RECORDING_ID": recording_id})
            continue
        if wav_path is None and renamed[0]:
            wav_path = base + ".wav"  # renamed into the store by a keep that died before its index row
        if pcap_path is None and renamed[1]:
            pcap_path = base + ".pcap"
        if wav_path is None and pcap_path is None:
            erase_file(base + SIDECAR)  # died before anything was written: nothing to keep
            continue
        fmt = codecs.audio_format(call.codec, call.clock_rate, call.channels)
        sealed_keys: dict[str, bytes] = {}
        if keys is not None:  # sealed as written: finish each file, then keep it as any
            data_key, wrapped = keys
            sealed_keys = {"data_key": data_key, "wrapped_key": wrapped}
            frames = 0
            try:
                if wav_path and renamed[0] and not os.path.lexists(wav_path):
                    with sealed.SealedFile(store.layout.file_path_of(recording_id, call.started_at), data_key, recording_id) as f:
                        length = f.size
                elif wav_path:
                    length = sealed.finish(wav_path, data_key, f"recording {recording_id}", wav_header=sealed.wav_header)
                if wav_path:
                    frames = max(0, length - wav.HEADER_SIZE) // (2 * (fmt.width if fmt else 1))
                if pcap_path and os.path.lexists(pcap_path):
                    sealed.finish(pcap_path, data_key, f"recording {recording_id} (pcap)", pcap_whole=whole_packets)
            except (OSError, sealed.SealedError) as exc:
                log.error("spool files of %s cannot be finished (%s): kept in the spool for a technician",
                          recording_id, exc, extra={"EVENT": "recovery-failed", "RECORDING_ID": recording_id})
                continue
        else:
            frames = wav.repair_header(wav_path) if wav_path else 0
            if pcap_path:
                repair_pcap(pcap_path)
        seconds = frames / fmt.rate if fmt and frames else 0.0
        try:
            store.keeper.keep(
                recording_id, wav_path, call, ended_at=call.started_at + seconds, frames=frames, complete=False,
                end_reason=f"{REASON}; {SOME_FIGURES if streams is not None else NO_FIGURES}", streams=streams or [],
                pcap_path=pcap_path, audio=audio_kind(fmt), rate=fmt.rate if fmt else 0,
                linked_legs=meta.get("linked_legs") or [], **sealed_keys,
            )
        except (OSError, sealed.SealedError) as exc:  # e.g. a file renamed by a keep that died, damaged since:
            # that recording waits for a technician; the start, and every other one, goes on
            log.error("spool files of %s cannot be kept (%s): kept in the spool for a technician",
                      recording_id, exc, extra={"EVENT": "recovery-failed", "RECORDING_ID": recording_id})
            continue
        recovered.append(recording_id)
        log.warning("recovered recording %s (%.1f s of audio) left by an unclean stop", recording_id, seconds,
                    extra={"EVENT": "recording-recovered", "RECORDING_ID": recording_id,
                           "DID_LABEL": call.did_label})
    return recovered


def _renamed(store: Store, recording_id: str, call: SimpleNamespace) -> tuple[bool, bool]:
    """Whether the recording's WAV and pcap are already in the store (a keep that died between its
    rename and its index row; the files renamed are complete: FINAL written, the WAV's records checked
    by that keep, the pcap's by its writer's digest only)."""
    if store.db().get(recording_id) is not None:
        return False, False  # kept: the sidecar alone was left (keep removes it next)
    wav_dest = store.layout.file_path_of(recording_id, float(call.started_at))
    return os.path.exists(wav_dest), os.path.exists(wav_dest[: -len(".rdv")] + ".pcap.rdv")


def repair_pcap(path: str) -> None:
    """Cut a spool pcap after its last whole record (a crash may leave half of one)."""
    with open(path, "r+b") as f:
        data = f.read()
        f.truncate(whole_packets([data]) if len(data) >= 24 else len(data))
