"""Crash recovery: calls whose recording was in the spool when the service died (kill -9, power
loss) are finalised at the next start as ``incomplete``, with all the audio that reached the disk.

Each call's spool files (WAV, evidence pcap) have its metadata beside them (written first), so
the recovered recording is indexed like any other: WAV header rebuilt from the data actually
written, a half-written last pcap record cut, encrypted into the store, the spool copies erased. A
sidecar with no other file (death between the creations) holds no audio and is erased, and so is a
sidecar's staging copy (death while it was written). The quality figures and DTMF events are those
the sidecar had at its last line (a few seconds before the stop): the recording's note says so.
"""
from __future__ import annotations

import logging
import os
import struct
from types import SimpleNamespace
from typing import TYPE_CHECKING

from . import wav
from .erasure import erase_file
from . import codecs
from .recorder import audio_kind
from .sidecar import FIELDS as SIDECAR_FIELDS
from .sidecar import PROGRESS_EVERY, SIDECAR, STAGING, read_sidecar

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
        if wav_path is None and pcap_path is None:
            erase_file(base + SIDECAR)  # died before anything was written: nothing to keep
            continue
        try:
            meta, streams = read_sidecar(base + SIDECAR)
            call = SimpleNamespace(**{k: meta.get(k) for k in SIDECAR_FIELDS})
            call.clock_rate, call.channels = call.clock_rate or 8000, call.channels or 1
        except (OSError, ValueError) as exc:
            log.error("spool files of %s have no readable call record (%s): kept in the spool for a technician",
                      recording_id, exc, extra={"EVENT": "recovery-failed", "RECORDING_ID": recording_id})  # fmt: skip
            continue
        fmt = codecs.audio_format(call.codec, call.clock_rate, call.channels)
        frames = wav.repair_header(wav_path) if wav_path else 0
        if pcap_path:
            repair_pcap(pcap_path)
        seconds = frames / fmt.rate if fmt and frames else 0.0
        store.keep(
            recording_id, wav_path, call, ended_at=call.started_at + seconds, frames=frames, complete=False,
            end_reason=f"{REASON}; {SOME_FIGURES if streams is not None else NO_FIGURES}", streams=streams or [],
            pcap_path=pcap_path, audio=audio_kind(fmt), rate=fmt.rate if fmt else 0,
            linked_legs=meta.get("linked_legs") or [],
        )  # fmt: skip
        recovered.append(recording_id)
        log.warning("recovered recording %s (%.1f s of audio) left by an unclean stop", recording_id, seconds,
                    extra={"EVENT": "recording-recovered", "RECORDING_ID": recording_id,
                           "DID_LABEL": call.did_label})  # fmt: skip
    return recovered


def repair_pcap(path: str) -> None:
    """Cut a spool pcap after its last whole record (a crash may leave half of one)."""
    with open(path, "r+b") as f:
        data = f.read()
        off = 24
        while off + 16 <= len(data):
            incl = struct.unpack_from("<I", data, off + 8)[0]
            if off + 16 + incl > len(data):
                break
            off += 16 + incl
        f.truncate(min(off, len(data)))
