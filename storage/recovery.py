"""Crash recovery: calls whose recording was in the spool when the service died (kill -9, power
loss) are finalised at the next start as ``incomplete``, with all the audio that reached the disk.

Each spool WAV has its call's metadata beside it (written before the WAV), so the recovered
recording is indexed like any other: header rebuilt from the data actually written, encrypted into
the store, the spool copies erased. A sidecar without a WAV (death between the two creations) holds
no audio and is erased.
"""
from __future__ import annotations

import json
import logging
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING

from . import wav
from .erasure import erase_file
from .recorder import SIDECAR_FIELDS, sidecar_path

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

REASON = "recovered after an unclean stop"


def recover_spool(store: Store) -> list[str]:
    """Finalise every recording left in the spool; returns their ids."""
    recovered = []
    for name in sorted(os.listdir(store.spool_dir)):
        path = os.path.join(store.spool_dir, name)
        if name.endswith(".call.json"):
            if not os.path.exists(path[: -len(".call.json")] + ".wav"):
                erase_file(path)
            continue
        if not name.endswith(".wav"):
            continue
        recording_id = name[: -len(".wav")]
        try:
            with open(sidecar_path(path), encoding="utf-8") as f:
                meta = json.load(f)
            call = SimpleNamespace(**{k: meta[k] for k in SIDECAR_FIELDS})
        except (OSError, ValueError, KeyError) as exc:
            log.error("spool file %s has no readable call record (%s): kept in the spool for a technician",
                      name, exc, extra={"EVENT": "recovery-failed", "RECORDING_ID": recording_id})  # fmt: skip
            continue
        frames = wav.repair_header(path, call.codec)
        store.keep(
            recording_id, path, call, ended_at=call.started_at + frames / wav.RATE, frames=frames,
            complete=False, end_reason=REASON, streams=[],
        )  # fmt: skip
        recovered.append(recording_id)
        log.warning("recovered recording %s (%.1f s of audio) left by an unclean stop", recording_id,
                    frames / wav.RATE, extra={"EVENT": "recording-recovered", "RECORDING_ID": recording_id,
                                              "DID_LABEL": call.did_label})  # fmt: skip
    return recovered
