"""Copies of recordings: ``export`` (Art. 5(5)), ``provide`` (Art. 5(6)), ``copies``.

The copy is the decrypted WAV, checked against the SHA-256 recorded at finalisation while it streams
(a mismatch aborts it: nothing is left), byte-identical to what was finalised; ``--format pcm``
decodes G.711 to 16-bit PCM for players without G.711. Every copy is registered with an expiry
(``export.expiry_days``). Purposes ``quality`` and ``suspicious_call`` need nothing more; any other
needs a manager's approval named with its reference (``--approved-by``, ``--approval-ref``), and the
approver must be in the manager group now. Providing to an outside party needs one of the APPI
Art. 69 bases and records the recipient and basis with the recording's hash.

Beside every copy ``FILE`` go ``FILE.manifest.json`` and ``FILE.manifest.sig``: what the copy is
(recording id, DID label, start and end, codec, format, its SHA-256, the recording's and the evidence
pcap's), who made it and why, signed with the recorder's key (:mod:`storage.signing`), so that
whoever receives it can check it came from this recorder unaltered (``recorderctl verify-export``,
or ``openssl`` with the key ``recorderctl pubkey`` prints). No caller number is in it. They are
written like the copy (by the client, through a staging name), after it, once it is registered.

A conversation kept in parts (a transfer, a codec change mid-call): the manifest names the
conversation and the part (``conversation``: its token, part N of M, the other parts' ids), and
``export ID`` of one part says the others exist. ``export ID --conversation --out DIR`` copies every
part into DIR (``DIR/<part id>.wav`` with its manifest and signature each), the parts named by the
request (``parts``: what ``show`` listed), so that a part kept meanwhile is not copied unasked. Each
part is registered as its own copy and audited in a row of its own: the request's row for ID, an
``export`` row for each other part. ``provide ID --conversation --out DIR`` hands every part over
the same way, to one recipient under one basis: each part its own provision record, copy, manifest
(naming the conversation and its legal basis) and audit row (a ``provide`` row for each other part).
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Any

from storage import signing, vault
from storage.codecs import g711
from storage.index import RecordingRow
from storage.policy import iso as iso_ms
from storage.scrub import scrub
from storage.store import IntegrityError
from storage.wav import read_info

from .. import version
from ..roles import AUDITOR, MANAGER, STAFF, TECHNICIAN, has_role
from .framework import Args, Context, NotAllowed, OpError, Reply, UsageError, action, iso

log = logging.getLogger(__name__)

PURPOSES = ("quality", "suspicious_call")
FORMATS = ("wav", "pcm", "pcap")
BASES = {  # APPI Art. 69 (use and provision by administrative organs), as the guideline's Art. 5(6) names it
    "law": "APPI Art. 69(1): based on laws and regulations",
    "consent": "APPI Art. 69(2)(i): with the consent of the person",
    "to-subject": "APPI Art. 69(2)(i): provided to the person themself",
    "internal": "APPI Art. 69(2)(ii): internal use within the organ's duties, with good reason",
    "public-body": "APPI Art. 69(2)(iii): to another public body for its duties, with good reason",
    "statistics": "APPI Art. 69(2)(iv): solely for statistics or academic research",
    "clear-benefit": "APPI Art. 69(2)(iv): clearly in the person's interest",
    "special-reason": "APPI Art. 69(2)(iv): other special reason",
}


class PcmStream:
    """Turns a G.711 WAV, chunk by chunk, into a 16-bit PCM WAV."""

    def __init__(self) -> None:
        self.head = b""
        self.codec = ""
        self.remaining: int | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self.remaining is None:
            self.head += chunk
            try:
                info = read_info(self.head)
            except ValueError:
                if len(self.head) < 1 << 16:
                    return b""
                raise
            if info.codec not in g711.TABLES:
                raise OpError(f"cannot decode {info.codec} to PCM (only G.711 PCMU and PCMA)")
            self.codec = info.codec
            declared = struct.unpack_from("<I", self.head, info.data_offset - 4)[0]
            header = g711.pcm_header(declared // info.channels, info.channels, info.rate)
            self.remaining = declared
            chunk, self.head = self.head[info.data_offset :], b""
            return header + self._data(chunk)
        return self._data(chunk)

    def _data(self, chunk: bytes) -> bytes:
        if not self.remaining:
            return b""
        take = chunk[: self.remaining]
        self.remaining -= len(take)
        return g711.decode(self.codec, take)


def write_copy(ctx: Context, row: RecordingRow, out: str, fmt: str) -> str:
    """Stream the recording into ``out`` (checked); returns the SHA-256 of what was written."""
    if fmt != "pcap" and row.audio == "not-decoded":
        raise OpError(f"recording {row.id} has no WAV: its codec {row.codec} is not decoded here; its audio is the "
                      "original RTP in its evidence pcap (--format pcap)")
    pcap = fmt == "pcap"
    expected = row.pcap_sha256 if pcap else row.sha256
    if pcap and not row.pcap_path:
        raise OpError(f"recording {row.id} has no evidence pcap (store.keep_pcap was off when it was made)")
    sink = ctx.outputs(out)
    recorded, written = hashlib.sha256(), hashlib.sha256()
    pcm = PcmStream() if fmt == "pcm" and row.audio == "exact" else None  # transcoded WAVs already are PCM
    try:
        for chunk in ctx.store.reading.plaintext(row, pcap=pcap):
            recorded.update(chunk)
            data = pcm.feed(chunk) if pcm else chunk
            written.update(data)
            sink.write(data)
        if recorded.hexdigest() != expected:
            raise IntegrityError(f"recording {row.id} fails its integrity check "
                                 "(SHA-256 differs from the one recorded at finalisation)")
    except vault.VaultError as exc:
        sink.abort()
        raise IntegrityError(f"recording {row.id} fails its integrity check: {exc}") from None
    except BaseException:
        sink.abort()
        raise
    sink.commit(written.hexdigest())
    return written.hexdigest()


def signing_key(ctx: Context, *, own_row: bool = True) -> tuple[signing.SigningKey, bool]:
    """The recorder's signing key, and whether it was made now: for a store made before there was
    one, at its first copy, audited in a ``signing-key-created`` row (``own_row``; ``init`` says it
    in its own row instead)."""
    try:
        key, created = signing.ensure(ctx.store.root, ctx.store.master_key())
    except signing.SigningError as exc:
        raise OpError(str(exc)) from None
    if created:
        log.info("the recorder's signing key %s was made (its public key: recorderctl pubkey)", key.public.key_id,
                 extra={"EVENT": "signing-key-created"})
        if own_row:
            ctx.audit("signing-key-created", None, {"signing_key": key.public.audited()})
    return key, created


def _put(ctx: Context, path: str, data: bytes) -> None:
    sink = ctx.outputs(path)
    try:
        sink.write(data)
    except BaseException:
        sink.abort()
        raise
    sink.commit(hashlib.sha256(data).hexdigest())


def conversation_note(ctx: Context, row: RecordingRow, parts: list[RecordingRow] | None = None) -> dict[str, Any]:
    """The conversation a copy belongs to, as its manifest names it."""
    parts = ctx.store.db().parts(row.conversation) if parts is None else parts
    return {"token": row.conversation, "part": row.part, "parts": max(len(parts), 1),
            "part_reason": row.part_reason, "other_parts": [p.id for p in parts if p.id != row.id]}


def write_manifest(ctx: Context, row: RecordingRow, out: str, key: signing.SigningKey, *, fmt: str, sha256: str,
                   copy_id: int, kind: str,
                   purpose: str | None = None, basis: str | None = None, approved_by: str | None = None,
                   approval_ref: str | None = None, provision: int | None = None) -> str:
    """Write the signed manifest of the copy at ``out`` beside it (``out.manifest.json``, ``.sig``),
    signed with ``key`` (taken before the copy was written); returns the key's id. The copy is already
    in place and registered: a manifest that cannot be put beside it is said (rc 1), and the copy
    stays registered, to be destroyed at its expiry."""
    fields: dict[str, Any] = {
        "file": scrub(os.path.basename(out)), "file_format": fmt, "file_sha256": sha256,
        "copy_id": copy_id, "copy_kind": kind, "created_at": iso(ctx.now, ctx),
        "recording_id": row.id, "did_label": row.did_label,
        "started_at": iso_ms(row.started_at, ctx.store.tz), "ended_at": iso_ms(row.ended_at, ctx.store.tz),
        "codec": row.codec, "channels": row.channels,
        "conversation": conversation_note(ctx, row),
        "recording_sha256": row.sha256, "evidence_pcap_sha256": row.pcap_sha256 or None,
        "signer": {"user": ctx.caller.user, "role": ctx.role, "via": ctx.caller.via},
    }
    if basis is not None:
        fields["legal_basis"] = {"basis": basis, "article": BASES[basis], "provision": provision}
    else:
        fields["purpose"] = purpose
        if approved_by:
            fields["approval"] = {"approved_by": approved_by,  # typed text: no phone number in it, as in the audit
                                  "approval_ref": scrub(approval_ref) if approval_ref else approval_ref}
    fields["recorder"] = {"key_id": key.public.key_id, "public_key": key.public.pem,
                          "software": f"recorderd {version()}"}
    body = signing.manifest_bytes(fields)
    manifest_path, sig_path = signing.manifest_paths(out)
    try:
        _put(ctx, manifest_path, body)
        _put(ctx, sig_path, key.sign(body))
    except (OpError, OSError) as exc:
        raise OpError(f"the copy is at {out} (copy {copy_id}), but its signed manifest could not be put beside it: "
                      f"{exc}") from None
    ctx.note(signing_key=key.public.audited())
    return key.public.key_id


def _what_was_written(row: RecordingRow, fmt: str, sha256: str) -> str:
    """What the copy is, and the SHA-256 that checks it (the copy's own, and the recording's beside it)."""
    if fmt == "pcap":
        return f"the call's evidence pcap, SHA-256 {sha256}"
    if sha256 == row.sha256:
        return f"SHA-256 {row.sha256}"
    return f"16-bit PCM, SHA-256 of the copy {sha256}; of the recording {row.sha256}"


def _register(ctx: Context, row: RecordingRow, kind: str, purpose: str, out: str, fmt: str, sha256: str,
              approved_by: str | None = None, approval_ref: str | None = None) -> tuple[int, float]:
    expires = ctx.now + int(ctx.config["export.expiry_days"]) * 86400
    copy_id = ctx.casework.add_copy(
        recording_id=row.id, kind=kind, user=ctx.caller.user, uid=ctx.caller.uid, purpose=purpose,
        approved_by=approved_by, approval_ref=approval_ref, out=out, format=fmt, sha256=sha256,
        recording_sha256=row.sha256, made_at=ctx.now, expires_at=expires,
    )
    return copy_id, expires


@action("export", MANAGER, STAFF)
def export(ctx: Context, args: Args) -> Reply:
    rid, out, purpose = args.text("id", 100), args.text("out", 4000), args.text("purpose", 100)
    fmt = args.opt("format") or "wav"
    approved_by, ref = args.opt("approved_by", 64), args.opt("approval_ref", 200)
    ctx.note(rid, purpose=purpose, format=fmt, out=out)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if purpose not in PURPOSES:
        if not approved_by or not ref:
            raise NotAllowed(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}: a copy for another purpose "
                             "needs a manager's approval (guideline Art. 5(5)): "
                             "--approved-by MANAGER --approval-ref REF")
        ctx.note(approved_by=approved_by, approval_ref=ref)
        if not has_role(approved_by, MANAGER, ctx.config):
            raise NotAllowed(f"--approved-by {approved_by}: not a manager (not in group {ctx.group(MANAGER)})")
    row = ctx.store.reading.get(rid)
    key, _ = signing_key(ctx)  # before any byte is written: no copy is made that could not have its signed manifest
    if args.flag("conversation"):
        return _export_conversation(ctx, args, row, out, key, fmt, purpose, approved_by, ref)
    sha256 = write_copy(ctx, row, out, fmt)
    copy_id, expires = _register(ctx, row, "export", purpose, out, fmt, sha256, approved_by, ref)
    ctx.note(sha256=sha256, recording_sha256=row.sha256, copy=copy_id, expires=iso(expires, ctx))
    key_id = write_manifest(ctx, row, out, key, fmt=fmt, sha256=sha256, copy_id=copy_id, kind="export", purpose=purpose,
                            approved_by=approved_by, approval_ref=ref)
    text = (f"exported {row.id} to {out} ({_what_was_written(row, fmt, sha256)}); copy {copy_id}, to be destroyed "
            f"by {iso(expires, ctx)}; signed manifest beside it "
            f"({out}{signing.MANIFEST_SUFFIX}, key {key_id})")
    conversation = conversation_note(ctx, row)
    if conversation["other_parts"]:
        ctx.note(conversation=conversation["token"], part=row.part, parts=conversation["parts"])
        text += (f"\nthis is part {row.part} of {conversation['parts']} of its conversation: the other part(s) "
                 f"{', '.join(conversation['other_parts'])} are not in this copy (export {row.id} --conversation "
                 "--out DIR copies every part)")
    return Reply(text=text, data={"id": row.id, "out": out, "sha256": sha256, "recording_sha256": row.sha256,
                                  "copy": copy_id, "expires": iso(expires, ctx),
                                  "manifest": out + signing.MANIFEST_SUFFIX, "key_id": key_id,
                                  "conversation": conversation})


def part_path(out: str, row_id: str, fmt: str) -> str:
    """Where ``export --conversation --out DIR`` puts one part (the client makes the same paths)."""
    return os.path.join(out, row_id + (".pcap" if fmt == "pcap" else ".wav"))


def conversation_parts(ctx: Context, row: RecordingRow, done: str) -> list[RecordingRow]:
    """The parts of ``row``'s conversation, refused (``OpError``, nothing copied: ``done`` says what
    was not) when they cannot be one conversation: a part number kept twice or parts to different
    numbers (calls that reused a Call-ID, or a forged one: another citizen's call is not handed over)."""
    parts = ctx.store.db().parts(row.conversation)
    numbers = [p.part for p in parts]
    if len(set(numbers)) != len(numbers) or len({p.did for p in parts}) > 1:
        ctx.note(conversation=row.conversation, parts=[p.id for p in parts])
        raise OpError(f"the conversation of {row.id} cannot be one conversation: its parts "
                      f"{', '.join(f'{p.id} (part {p.part}, {p.did_label})' for p in parts)} repeat a part number "
                      f"or are to different numbers; nothing was {done}: copy each recording alone")
    return parts


def _the_parts_asked_for(ctx: Context, args: Args, row: RecordingRow, done: str) -> list[RecordingRow]:
    """The parts of ``row``'s conversation, when they are still the ones the client was shown
    (``parts``, from its ``show``); else nothing is ``done`` and the caller is told to ask again."""
    parts = conversation_parts(ctx, row, done)
    asked = args.ids("parts") if args.raw.get("parts") is not None else [p.id for p in parts]
    ctx.note(conversation=row.conversation, parts=[p.id for p in parts])
    if asked != [p.id for p in parts]:
        raise OpError(f"the conversation of {row.id} now has the part(s) {', '.join(p.id for p in parts)}, not "
                      f"{', '.join(asked)}: nothing was {done}; ask again")
    return parts


def _export_conversation(ctx: Context, args: Args, row: RecordingRow, out: str, key: signing.SigningKey, fmt: str,
                         purpose: str, approved_by: str | None, ref: str | None) -> Reply:
    """Every part of ``row``'s conversation into the folder ``out``: each its own registered copy
    with its signed manifest, each audited (the request's row for ``row``, one row per other part)."""
    parts = _the_parts_asked_for(ctx, args, row, "copied")
    done, lines = [], []
    for part in parts:
        target = part_path(out, part.id, fmt)
        sha256 = write_copy(ctx, part, target, fmt)
        copy_id, expires = _register(ctx, part, "export", purpose, target, fmt, sha256, approved_by, ref)
        entry = {"id": part.id, "part": part.part, "out": target, "sha256": sha256, "recording_sha256": part.sha256,
                 "copy": copy_id, "expires": iso(expires, ctx)}
        key_id = write_manifest(ctx, part, target, key, fmt=fmt, sha256=sha256, copy_id=copy_id, kind="export",
                                purpose=purpose, approved_by=approved_by, approval_ref=ref)
        entry.update(manifest=target + signing.MANIFEST_SUFFIX, key_id=key_id)
        if part.id == row.id:
            ctx.note(sha256=sha256, recording_sha256=part.sha256, copy=copy_id, expires=iso(expires, ctx))
        else:  # a row of its own: every recording copied is in the audit log under its id
            ctx.audit("export", part.id, {"purpose": purpose, "format": fmt, "out": target, "sha256": sha256,
                                          "recording_sha256": part.sha256, "copy": copy_id,
                                          "expires": iso(expires, ctx), "conversation": row.conversation,
                                          "part": part.part, "asked_for": row.id,
                                          **({"approved_by": approved_by, "approval_ref": ref}
                                             if approved_by else {})})
        done.append(entry)
        lines.append(f"part {part.part}: exported {part.id} to {target} ({_what_was_written(part, fmt, sha256)}); "
                     f"copy {copy_id}, to be destroyed by {iso(expires, ctx)}; signed manifest beside it")
    ctx.note(copies=[e["copy"] for e in done])
    text = "\n".join([f"conversation {row.conversation} of {row.id}: {len(parts)} part(s) exported to {out}", *lines])
    return Reply(text=text, data={"id": row.id, "conversation": row.conversation, "out": out, "parts": done})


@action("provide", MANAGER)
def provide(ctx: Context, args: Args) -> Reply:
    rid, out = args.text("id", 100), args.text("out", 4000)
    recipient, basis, note = args.opt("to", 300), args.opt("basis", 40), args.opt("note") or ""
    fmt = args.opt("format") or "wav"
    ctx.note(rid, basis=basis, recipient=recipient, out=out)
    if not recipient:
        raise UsageError("--to RECIPIENT is required")
    if basis not in BASES:
        given = f"--basis {basis!r} is not a legal basis" if basis else "no --basis given"
        raise NotAllowed(f"{given}: providing a recording to an outside party needs one of the bases of APPI "
                         f"Art. 69 (guideline Art. 5(6)): {', '.join(BASES)}")
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    row = ctx.store.reading.get(rid)
    ctx.note(basis_article=BASES[basis])
    key, _ = signing_key(ctx)  # before any byte is written: no copy is made that could not have its signed manifest
    if args.flag("conversation"):
        return _provide_conversation(ctx, args, row, out, key, fmt, recipient, basis, note)
    sha256 = write_copy(ctx, row, out, fmt)
    copy_id, expires = _register(ctx, row, "provision", f"provide: {basis}", out, fmt, sha256)
    provision = ctx.casework.add_provision(recording_id=row.id, recipient=recipient, basis=basis, note=note,
                                           recording_sha256=row.sha256, copy_id=copy_id, provided_by=ctx.caller.user,
                                           provided_at=ctx.now)
    ctx.note(sha256=sha256, recording_sha256=row.sha256, copy=copy_id, provision=provision)
    key_id = write_manifest(ctx, row, out, key, fmt=fmt, sha256=sha256, copy_id=copy_id, kind="provision", basis=basis,
                            provision=provision)
    text = (f"provision {provision}: {row.id} to {recipient} under {BASES[basis]}; written to {out} "
            f"({_what_was_written(row, fmt, sha256)}); copy {copy_id}, to be destroyed here once handed over, by "
            f"{iso(expires, ctx)}; signed manifest beside it ({out}{signing.MANIFEST_SUFFIX}, key {key_id}): hand "
            "over all three files")
    conversation = conversation_note(ctx, row)
    if conversation["other_parts"]:
        ctx.note(conversation=conversation["token"], part=row.part, parts=conversation["parts"])
        text += (f"\nthis is part {row.part} of {conversation['parts']} of its conversation: the other part(s) "
                 f"{', '.join(conversation['other_parts'])} are not in this copy (provide {row.id} --conversation "
                 "--out DIR provides every part)")
    return Reply(text=text, data={"provision": provision, "id": row.id, "recipient": recipient, "basis": basis,
                                  "recording_sha256": row.sha256, "sha256": sha256, "copy": copy_id,
                                  "manifest": out + signing.MANIFEST_SUFFIX, "key_id": key_id,
                                  "conversation": conversation})


def _provide_conversation(ctx: Context, args: Args, row: RecordingRow, out: str, key: signing.SigningKey, fmt: str,
                          recipient: str, basis: str, note: str) -> Reply:
    """Every part of ``row``'s conversation into the folder ``out``, to one recipient under one basis:
    each part its own provision record, registered copy and signed manifest (which names the
    conversation), each audited (the request's row for ``row``, a ``provide`` row per other part)."""
    parts = _the_parts_asked_for(ctx, args, row, "provided")
    done, lines = [], []
    for part in parts:
        target = part_path(out, part.id, fmt)
        sha256 = write_copy(ctx, part, target, fmt)
        copy_id, expires = _register(ctx, part, "provision", f"provide: {basis}", target, fmt, sha256)
        provision = ctx.casework.add_provision(recording_id=part.id, recipient=recipient, basis=basis, note=note,
                                               recording_sha256=part.sha256, copy_id=copy_id,
                                               provided_by=ctx.caller.user, provided_at=ctx.now)
        key_id = write_manifest(ctx, part, target, key, fmt=fmt, sha256=sha256, copy_id=copy_id, kind="provision",
                                basis=basis, provision=provision)
        entry = {"id": part.id, "part": part.part, "provision": provision, "out": target, "sha256": sha256,
                 "recording_sha256": part.sha256, "copy": copy_id, "expires": iso(expires, ctx),
                 "manifest": target + signing.MANIFEST_SUFFIX, "key_id": key_id}
        if part.id == row.id:
            ctx.note(sha256=sha256, recording_sha256=part.sha256, copy=copy_id, provision=provision)
        else:  # a row of its own: every recording provided is in the audit log under its id
            ctx.audit("provide", part.id, {"basis": basis, "basis_article": BASES[basis], "recipient": recipient,
                                           "format": fmt, "out": target, "sha256": sha256,
                                           "recording_sha256": part.sha256, "copy": copy_id, "provision": provision,
                                           "conversation": row.conversation, "part": part.part,
                                           "asked_for": row.id})
        done.append(entry)
        lines.append(f"part {part.part}: provision {provision}: {part.id} written to {target} "
                     f"({_what_was_written(part, fmt, sha256)}); copy {copy_id}, to be destroyed here once handed "
                     f"over, by {iso(expires, ctx)}; signed manifest beside it")
    ctx.note(copies=[e["copy"] for e in done], provisions=[e["provision"] for e in done])
    text = "\n".join([f"conversation {row.conversation} of {row.id}: {len(parts)} part(s) provided to {recipient} "
                      f"under {BASES[basis]}, written to {out}: hand over every file", *lines])
    return Reply(text=text, data={"id": row.id, "conversation": row.conversation, "recipient": recipient,
                                  "basis": basis, "out": out, "parts": done})


@action("pubkey", MANAGER, STAFF, TECHNICIAN, AUDITOR)
def pubkey(ctx: Context, args: Args) -> Reply:
    """The recorder's public key (PEM) and key id: what checks its signed copies, anywhere."""
    public = signing_key(ctx)[0].public
    ctx.note(signing_key=public.audited())
    return Reply(text=f"{public.pem.rstrip()}\nkey id {public.key_id}",
                 data={"key_id": public.key_id, "public_key": public.pem})


def copy_json(c: dict[str, Any], ctx: Context) -> dict[str, Any]:
    state = "destroyed" if c["disposed_at"] else "expired" if c["expires_at"] <= ctx.now else "kept"
    return {"copy": c["id"], "recording_id": c["recording_id"], "kind": c["kind"], "user": c["user"],
            "purpose": c["purpose"], "approved_by": c["approved_by"], "out": c["out"], "format": c["format"],
            "sha256": c["sha256"], "made_at": iso(c["made_at"], ctx), "expires_at": iso(c["expires_at"], ctx),
            "state": state, "disposed": c["disposed_how"]}


@action("copies-list", MANAGER, STAFF)
def copies_list(ctx: Context, args: Args) -> Reply:
    rows = ctx.casework.copies(user=None if ctx.role == MANAGER else ctx.caller.user)
    data = [copy_json(c, ctx) for c in rows]
    ctx.note(count=len(data))
    lines = [f"copy {c['copy']}: {c['recording_id']} {c['kind']} by {c['user']} ({c['purpose']}) at {c['out']}; "
             f"{c['state']}" + (f" ({c['disposed']})" if c["disposed"] else f", expires {c['expires_at']}")
             for c in data]
    return Reply(text="\n".join(lines + [f"({len(data)} copies)"]), data=data)


@action("copies-destroyed", MANAGER, STAFF)
def copies_destroyed(ctx: Context, args: Args) -> Reply:
    copy_id, note = args.int("copy"), args.opt("note") or ""
    copy = ctx.casework.copy(copy_id)
    ctx.note(copy["recording_id"], copy=copy_id, note=note)
    if ctx.role != MANAGER and copy["user"] != ctx.caller.user:
        raise NotAllowed(f"copy {copy_id} was made by {copy['user']}: only they or a manager may confirm it destroyed")
    if copy["disposed_at"]:
        raise OpError(f"copy {copy_id} is already recorded as disposed of ({copy['disposed_how']})")
    ctx.casework.dispose_copy(copy_id, ctx.now, f"destroyed by its holder, confirmed by {ctx.caller.user}"
                              + (f": {note}" if note else ""))
    return Reply(text=f"copy {copy_id} of {copy['recording_id']} recorded as destroyed", data={"copy": copy_id})
