"""Where the store's files are: the directories below ``store.path``, a recording's place by the local
date of its call, and a new call's recording id (free in the spool).

Layout below the root::

    index.sqlite        recordings, holds, erasure records (caller, Call-ID, DTMF sealed per recording)
    audit.sqlite        the hash-chained audit log
    master.key          the master key (unless configured elsewhere, or a systemd credential)
    spool/              calls in progress: <id>.wav, <id>.pcap, <id>.call.json, sealed as written
                        (storage/sealed.py, RDS1 under each recording's own key)
                        (their files made ahead without a name, O_TMPFILE, and named as calls
                        start: storage/spool_files.py; an earlier release's spool-new/ is removed)
    recordings/YYYY/MM/DD/<id>.rdv   finalised recordings, encrypted (local date of the call); the
                        evidence pcap beside it as <id>.pcap.rdv

Directories are 0700 (files 0600, created under the service's umask 077).
"""
from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo

from .index import RecordingRow
from .sidecar import SIDECAR
from .spool import recording_id

DIR_MODE = 0o700
SUFFIX = ".rdv"
PCAP_SUFFIX = ".pcap.rdv"


class Layout:
    """The store's paths below ``root``; dates are local dates in ``tz``."""

    def __init__(self, root: str, tz: ZoneInfo, key_file: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.tz = tz
        self.key_file = key_file or os.path.join(self.root, "master.key")
        self.spool_dir = os.path.join(self.root, "spool")
        self.pool_dir = os.path.join(self.root, "spool-new")  # an earlier release's named files made ahead
        self.recordings_dir = os.path.join(self.root, "recordings")
        self.index_path = os.path.join(self.root, "index.sqlite")
        self.audit_path = os.path.join(self.root, "audit.sqlite")

    def make_dirs(self) -> None:
        """The root, spool and recordings directories, 0700 (those already there set to 0700 too)."""
        for path in (self.root, self.spool_dir, self.recordings_dir):
            os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE)

    def new_recording_id(self, call_id: str, did: str, started_at: float) -> str:
        """The call's recording id, with ``-2``, ``-3``... when the spool already holds that one."""
        base = recording_id(call_id, did, started_at, self.tz)
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

    def file_path(self, row: RecordingRow, pcap: bool = False) -> str:
        return os.path.join(self.recordings_dir, row.pcap_path if pcap else row.path)

    def files(self, row: RecordingRow) -> list[str]:
        """Every file the recording has in the store (its WAV and/or its evidence pcap)."""
        rels = {row.path, row.pcap_path} - {""}
        return [os.path.join(self.recordings_dir, rel) for rel in sorted(rels)]
