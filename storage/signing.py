"""The recorder's signing key, and the signed manifests that go beside its copies (Ed25519).

The key is the box's, made once (``recorderctl init``, or the first copy a store made before there
was one hands out) and never replaced. It lives in ``signing.key`` at the store's root (0600), a
JSON object holding the public key in the clear (PEM), its key id and the private key *wrapped by
the master key* (AES-256-GCM, as the recordings' data keys are; the key id in the associated
data): whoever lacks the master key (its file or its systemd credential) cannot sign, and
destroying the master key, or this file (``decommission``), destroys the key. The key id is the
first 16 hex digits of the SHA-256 of the raw 32-byte public key.

A manifest is UTF-8 JSON (keys in a fixed order, two-space indent, a final newline) written beside
the copy ``FILE`` as ``FILE.manifest.json``; ``FILE.manifest.sig`` is the raw 64-byte Ed25519
signature over the manifest file's exact bytes, which anyone can check with the recorder's public
key (``openssl pkeyutl -verify -pubin -inkey KEY.pem -rawin -in FILE.manifest.json -sigfile
FILE.manifest.sig``) before comparing ``sha256sum FILE`` with its ``file_sha256``.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
import stat
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .audit import AuditLog

KEY_FILE = "signing.key"
AUDIT_FILE = "audit.sqlite"  # the store's audit log, which records the key's fingerprint
KEY_VERSION = 1
MANIFEST_KIND = "recorderd export manifest"
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
SIGNATURE_SUFFIX = ".manifest.sig"
SIGNATURE_BYTES = 64
MAX_KEY_FILE = 1 << 16
MAX_MANIFEST = 1 << 20
_WRAP_AAD = b"recorderd signing key v1 "
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SigningError(Exception):
    """The signing key cannot be used (altered, or not opened by this master key): says why."""


def key_path(store_root: str) -> str:
    return os.path.join(store_root, KEY_FILE)


def manifest_paths(copy_path: str) -> tuple[str, str]:
    """Where a copy's manifest and its signature go: beside it."""
    return copy_path + MANIFEST_SUFFIX, copy_path + SIGNATURE_SUFFIX


# -- keys ---------------------------------------------------------------------------------------


def fingerprint(public: Ed25519PublicKey) -> str:
    """The SHA-256 of the raw 32-byte public key, hex (the key id is its first 16 digits)."""
    return hashlib.sha256(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    return fingerprint(public)[:16]


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    key_id: str
    pem: str
    fingerprint: str

    @classmethod
    def of(cls, key: Ed25519PublicKey) -> PublicKey:
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        full = fingerprint(key)
        return cls(key, full[:16], pem.decode("ascii"), full)

    def audited(self) -> dict[str, str]:
        """How an audit row names the key: by its fingerprint (a hex digest the log keeps as it is;
        a bare key id can hold a run of digits, which the log masks as a phone number)."""
        return {"fingerprint": self.fingerprint}

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        """The first PEM public key in ``data`` (text around it, as ``recorderctl pubkey`` prints, is
        ignored); ValueError unless it is an Ed25519 key."""
        match = _PEM.search(data)
        if match is None:
            raise ValueError("no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
        try:
            key = serialization.load_pem_public_key(match.group(0))
        except ValueError:
            raise ValueError("its PEM public key does not parse") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("its public key is not an Ed25519 key")
        return cls.of(key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    public: PublicKey
    private: Ed25519PrivateKey = field(repr=False)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def _wrap(master: bytes, private: Ed25519PrivateKey, kid: str) -> str:
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(master).encrypt(nonce, raw, _WRAP_AAD + kid.encode())).decode("ascii")


def _read_key_file(path: str) -> dict[str, Any] | None:
    """The key file's JSON (None: there is none); opened once, never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SigningError(f"cannot open the signing key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SigningError(f"the signing key {path} is not a regular file")
        data = f.read(MAX_KEY_FILE + 1)
    try:
        obj = json.loads(data) if len(data) <= MAX_KEY_FILE else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("version") != KEY_VERSION or obj.get("algorithm") != "Ed25519":
        raise SigningError(f"the signing key {path} is not a recorderd signing key (version {KEY_VERSION})")
    return obj


def _public_of(obj: dict[str, Any], path: str) -> PublicKey:
    try:
        public = PublicKey.from_pem(str(obj.get("public_key")).encode())
    except ValueError as exc:
        raise SigningError(f"the signing key {path}: {exc}") from None
    if public.key_id != obj.get("key_id"):
        raise SigningError(f"the signing key {path} was altered (its key id is not its public key's)")
    return public


def read_public(store_root: str) -> PublicKey | None:
    """The store's public key (None: it has none yet); needs no master key."""
    obj = _read_key_file(key_path(store_root))
    return None if obj is None else _public_of(obj, key_path(store_root))


def load(store_root: str, master: bytes) -> SigningKey | None:
    """The store's signing key, opened with the master key (None: it has none yet)."""
    path = key_path(store_root)
    obj = _read_key_file(path)
    if obj is None:
        return None
    public = _public_of(obj, path)
    try:
        wrapped = base64.b64decode(str(obj.get("wrapped_private_key")), validate=True)
        raw = AESGCM(master).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + public.key_id.encode())
        private = Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, InvalidTag):
        raise SigningError(f"the signing key {path} does not open with the store's master key (altered, or the "
                           "master key was replaced): restore the master key, or the signing key, from its "
                           "backup") from None
    if key_id(private.public_key()) != public.key_id:
        raise SigningError(f"the signing key {path} was altered (its public key is not its private key's)")
    return SigningKey(public, private)


def _recorded(store_root: str, *, missing: bool = True) -> str | None:
    """The fingerprint of the signing key the store's audit log says it has (None: none recorded)."""
    path = os.path.join(store_root, AUDIT_FILE)
    if not os.path.exists(path):
        return None
    try:
        audit = AuditLog(path)
        try:
            return audit.recorded_signing_key()
        finally:
            audit.close()
    except sqlite3.Error as exc:  # not known, so not made: a key it records would be replaced
        if not missing:
            raise SigningError(f"the audit log, which records the store's signing key, cannot be read ({exc}): "
                               "nothing is signed until it can") from None
        raise SigningError(f"the signing key {key_path(store_root)} is missing and the audit log, which says whether "
                           f"this store had one, cannot be read ({exc}): no new key is made") from None


def ensure(store_root: str, master: bytes) -> tuple[SigningKey, bool]:
    """The store's signing key, made now if it has none (True: made now), refused if it is not the
    one the audit log records (a key put in its place). Never replaced: two
    processes making one at once keep the first that reached the file; a key the audit log records
    (the file deleted) is not made again but refused, saying to restore it, since the copies signed
    with it would no longer verify on the box. Made by root in a store of the service user's, it is
    the service user's (as the casework file is)."""
    existing = load(store_root, master)
    recorded = _recorded(store_root, missing=existing is None)
    if existing is not None:
        if recorded is not None and existing.public.fingerprint != recorded:
            # another key, wrapped with the master key, put in its place (root or the service user): the
            # copies signed before would no longer verify on this box, and the new key is no one's record
            raise SigningError(
                f"the signing key {key_path(store_root)} is not the one the audit log records for this store (key "
                f"{existing.public.key_id}, where the log records {recorded[:16]}): it was replaced; nothing is "
                "signed with it. Restore signing.key from its backup")
        return existing, False
    if recorded is not None:
        path = key_path(store_root)
        raise SigningError(
            f"the signing key {path} is missing, but the audit log records that this store has one (key "
            f"{recorded[:16]}): no new key is made, as the copies signed with it would no longer verify on this box; "
            f"restore signing.key from its backup to {path} (mode 0600, owned by the service user). It is wrapped by "
            "the master key: the master key's backup alone does not bring it back. Until then copies cannot be signed"
        )
    private = Ed25519PrivateKey.generate()
    public = PublicKey.of(private.public_key())
    body = json.dumps({"version": KEY_VERSION, "algorithm": "Ed25519", "key_id": public.key_id,
                       "public_key": public.pem, "wrapped_private_key": _wrap(master, private, public.key_id)},
                      indent=2) + "\n"
    path = key_path(store_root)
    staging = f"{path}.part-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            owner = os.stat(store_root)
            if os.geteuid() == 0 and owner.st_uid != 0:  # root working on the service user's store: the service's
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            f.write(body.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staging, path)  # not a rename: a key already there stays
        except FileExistsError:
            theirs = load(store_root, master)
            if theirs is None:
                raise SigningError(f"the signing key {path} vanished while it was being made") from None
            return theirs, False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
    dir_fd = os.open(store_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return SigningKey(public, private), True


# -- manifests ----------------------------------------------------------------------------------


def manifest_bytes(fields: dict[str, Any]) -> bytes:
    """The manifest file's exact bytes (what the signature covers)."""
    return (json.dumps({"manifest": MANIFEST_KIND, "version": MANIFEST_VERSION, **fields}, ensure_ascii=False,
                       indent=2) + "\n").encode("utf-8")


@dataclass
class Verdict:
    """What ``verify-export`` found: ``problems`` empty when the signature and the hash both hold."""

    path: str
    key_id: str
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    sha256: str | None = None
    signed: bool = False  # set only by a signature check that held

    @property
    def ok(self) -> bool:
        return self.signed and not self.problems


class _NotAFile(OSError):
    """What verify-export is given is not a regular file (a symbolic link, a FIFO, a folder, ...)."""


def _open_file(path: str) -> int:
    """``path`` opened for reading if it is a regular file itself: a symbolic link is refused
    (``O_NOFOLLOW``: the check names the file handed over, not another one it points to), and so is
    a FIFO or a device (``O_NONBLOCK`` so that opening one does not wait for a writer; read, one
    would hang the check)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotAFile(errno.ELOOP, "a symbolic link: give the file itself") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotAFile(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_small(path: str, limit: int) -> bytes:
    fd = _open_file(path)
    with open(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = _open_file(path)
    with open(fd, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_export(path: str, public: PublicKey) -> Verdict:
    """Check a copy against its manifest, and the manifest against ``public``: the signature over
    the manifest's exact bytes, then the copy's SHA-256 against the manifest's ``file_sha256``."""
    manifest_path, sig_path = manifest_paths(path)
    verdict = Verdict(path, public.key_id)
    try:
        body = _read_small(manifest_path, MAX_MANIFEST)
    except (OSError, ValueError) as exc:
        verdict.problems.append(f"manifest: cannot read {manifest_path} ({getattr(exc, 'strerror', None) or exc})")
        return verdict
    try:
        manifest = json.loads(body)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("manifest") != MANIFEST_KIND:
        manifest = None
    verdict.manifest = manifest
    try:
        signature: bytes | None = _read_small(sig_path, SIGNATURE_BYTES)
    except (OSError, ValueError) as exc:
        signature = None
        verdict.problems.append(f"signature: cannot read {sig_path} ({getattr(exc, 'strerror', None) or exc})")
    # The signature is checked whatever it is, and only a check that held makes the copy signed: an
    # empty signature file once skipped the check (a forged manifest and copy passed)
    if signature is not None and (len(signature) != SIGNATURE_BYTES or not public.verify(signature, body)):
        recorder = manifest.get("recorder") if manifest else None
        claimed = recorder.get("key_id") if isinstance(recorder, dict) else None
        if isinstance(claimed, str) and claimed != public.key_id:
            why = f"the manifest names key {claimed[:16]}, not this recorder's key {public.key_id}"
        elif len(signature) != SIGNATURE_BYTES:
            why = f"{sig_path} is not an Ed25519 signature ({len(signature)} bytes, {SIGNATURE_BYTES} expected)"
        else:
            why = "the manifest or its signature was altered, or another key signed it"
        verdict.problems.append(f"signature: {manifest_path} is not signed by the recorder's key {public.key_id} "
                                f"({why})")
    elif signature is not None:
        verdict.signed = True
    expected = manifest.get("file_sha256") if manifest else None
    if not isinstance(expected, str) or not _HEX64.fullmatch(expected):
        verdict.problems.append(f"manifest: {manifest_path} is not a recorderd export manifest (no file_sha256)")
        return verdict
    try:
        verdict.sha256 = _file_sha256(path)
    except OSError as exc:
        verdict.problems.append(f"file: cannot read {path} ({exc.strerror})")
        return verdict
    if verdict.sha256 != expected:
        verdict.problems.append(f"file: the SHA-256 of {path} is {verdict.sha256}, not the manifest's {expected} "
                                "(the file was altered)")
    return verdict
