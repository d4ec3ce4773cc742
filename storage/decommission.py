"""Decommission (guideline Art. 6(4)): at contract end, erase every recording, the spool, the index
and the master key so that nothing can be restored, and write an erasure certificate.

Order: each recording as the retention worker does it (key destroyed, file overwritten, unlinked),
then the spool, then the index files (overwritten, unlinked), the recorder's signing key (its
private key wrapped by the master key: no copy can be signed as this recorder's afterwards), the
master key file last. The audit
log and the casework file (incidents, complaints, provision records: no audio, no caller numbers)
stay, with the decommission as the audit log's last rows, so the city can still account for every
access; the certificate names both. What the software cannot do (a whole-device purge) is in the README.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from . import signing, spool_files
from .erasure import erase_file
from .policy import iso
from .retention import METHOD

if TYPE_CHECKING:
    from .store import Actor, Store


@dataclass
class Certificate:
    host: str
    store_path: str
    operator: str
    operator_uid: int
    started_at: str
    finished_at: str
    recordings_erased: int
    recording_bytes_overwritten: int
    spool_files_erased: int
    index_files_erased: list[str]
    master_key_erased: bool
    signing_key_erased: bool
    method: str
    verification: str
    audit_log_kept: str
    casework_kept: str

    def text(self) -> str:
        lines = [
            "recorderd erasure certificate (Kawasaki City contact-centre call recording, guideline Art. 6(4))",
            "",
            f"Host:                    {self.host}",
            f"Store:                   {self.store_path}",
            f"Operator:                {self.operator} (uid {self.operator_uid})",
            f"Started:                 {self.started_at}",
            f"Finished:                {self.finished_at}",
            f"Recordings erased:       {self.recordings_erased} ({self.recording_bytes_overwritten} bytes overwritten)",
            f"Spool files erased:      {self.spool_files_erased}",
            f"Index files erased:      {', '.join(self.index_files_erased) or 'none'}",
            f"Master key erased:       {'yes' if self.master_key_erased else 'no (held as a systemd credential: remove it)'}",
            f"Signing key erased:      {'yes' if self.signing_key_erased else 'none was there'}",
            f"Method:                  {self.method}",
            f"Verification:            {self.verification}",
            f"Audit log kept at:       {self.audit_log_kept}",
            f"Casework kept at:        {self.casework_kept} (incidents, complaints, provisions, copies; no audio, no caller numbers)",
            "",
            "Not covered: blocks the storage device may hold outside the file system (SSD spare",
            "area, journal copies). Purge the whole device before it leaves the facility",
            "(e.g. cryptsetup luksErase, nvme sanitize) and record that separately.",
        ]
        return "\n".join(lines) + "\n"


def decommission(store: Store, actor: Actor, certificate_path: str) -> Certificate:
    if os.path.abspath(certificate_path).startswith(store.root + os.sep):
        raise ValueError("the certificate must be written outside the store, which is being erased")
    tz = store.tz
    started = store.clock()
    store.record(actor, "decommission", None, {"certificate": os.path.abspath(certificate_path)}, "allowed")
    index = store.db()
    erased = overwritten = 0
    for row in store.reading.recordings():
        index.begin_erasure(row.id, started)
        overwritten += sum(erase_file(path) for path in store.layout.files(row))
        index.finish_erasure(row, store.layout.local_date(row.started_at), store.clock(), METHOD)
        erased += 1
    index.checkpoint()
    spool = 0
    for name in sorted(os.listdir(store.spool_dir)):
        erase_file(os.path.join(store.spool_dir, name))
        spool += 1
    spool_files.clear(store.layout.pool_dir)  # empty files made ahead (nothing in them to erase), and anything else put there
    for dirpath, _dirs, files in os.walk(store.recordings_dir):
        for name in files:  # anything left without an index row
            overwritten += erase_file(os.path.join(dirpath, name))
    store.index = None
    index.close()
    index_files = []
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(store.index_path + suffix):
            erase_file(store.index_path + suffix)
            index_files.append(os.path.basename(store.index_path + suffix))
    signing_file = signing.key_path(store.root)
    signing_erased = os.path.lexists(signing_file)
    for name in sorted(os.listdir(store.root)):  # the key, and any staging copy a crash left beside it
        if name == signing.KEY_FILE or name.startswith(signing.KEY_FILE + ".part-"):
            erase_file(os.path.join(store.root, name))
    key_erased = os.path.exists(store.key_file)
    erase_file(store.key_file)
    left = [os.path.join(d, f) for d, _, fs in os.walk(store.recordings_dir) for f in fs]
    left += os.listdir(store.spool_dir)
    left += os.listdir(store.layout.pool_dir) if os.path.isdir(store.layout.pool_dir) else []
    gone = not left and not any(os.path.lexists(p) for p in (store.index_path, store.key_file, signing_file))
    cert = Certificate(
        host=socket.gethostname(),
        store_path=store.root,
        operator=actor.user,
        operator_uid=actor.uid,
        started_at=iso(started, tz),
        finished_at=iso(store.clock(), tz),
        recordings_erased=erased,
        recording_bytes_overwritten=overwritten,
        spool_files_erased=spool,
        index_files_erased=index_files,
        master_key_erased=key_erased,
        signing_key_erased=signing_erased,
        method=METHOD,
        verification="passed: no recording, spool file, index, signing key or master key file remains" if gone
        else f"FAILED: {len(left)} file(s) remain",
        audit_log_kept=store.audit_path,
        casework_kept=os.path.join(store.root, "casework.sqlite"),
    )
    write_certificate(cert, certificate_path)
    store.record(actor, "decommission", None, {"recordings_erased": erased, "verification": cert.verification},
                 "allowed" if gone else "failed: files remain")
    return cert


def write_certificate(cert: Certificate, path: str) -> None:
    base = path[:-5] if path.endswith(".json") else path
    for target, body in ((base + ".json", json.dumps(asdict(cert), ensure_ascii=False, indent=2) + "\n"),
                         (base + ".txt", cert.text())):
        with open(target, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
