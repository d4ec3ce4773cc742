"""Evidence-grade copies (issue 13): every export and provision has a manifest beside it, signed with
the recorder's Ed25519 key, that ``recorderctl verify-export`` and a standard tool (OpenSSL 3) check;
one bit changed in the copy or in the manifest, or a manifest signed with another key, fails. The key
is made once by ``init`` (wrapped by the master key), and ``decommission`` leaves none."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site, needs_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage import signing
from storage.audit import AuditLog

CTL = [sys.executable, "-m", "recorderd.ctl"]


def events(site: Site, action: str) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows() if e.action == action]
    finally:
        audit.close()


def recording(site: Site, capsys: pytest.CaptureFixture[str], fixture: str = "inbound-mulaw.pcap") -> dict:
    assert site.replay(FIXTURES / fixture) == 0
    [rec] = site.list(capsys)
    return rec


def export(site: Site, rec: dict, out: Path, *extra: str) -> None:
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "suspicious_call", *extra) == 0


def made_before_signing(root: Path) -> Site:
    """A store as the release before signed copies left it: made by the store's own init (the
    storage layer's, which makes no signing key), so no audit row names a key."""
    from recorderd.config import load
    from recorderd.service import open_store

    root.mkdir(exist_ok=True)
    site = Site(root)
    open_store(load(str(site.config))).init()
    assert not (site.store / "signing.key").exists()
    return site


def pubkey(site: Site, capsys: pytest.CaptureFixture[str], where: Path) -> Path:
    """``recorderctl pubkey > where``, as docs/recorderctl.md says to hand the key over."""
    capsys.readouterr()
    assert site.ctl("pubkey") == 0
    where.write_text(capsys.readouterr().out)
    return where


def verify(site: Site, capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = site.ctl("verify-export", str(path), *extra)
    said = capsys.readouterr()
    return rc, said.out + said.err


def documented_openssl_check() -> list[str]:
    """The ``openssl pkeyutl`` command of docs/recorderctl.md ("Checking a copy"), word by word, as a
    recipient types it (with its continuation line)."""
    text = (ROOT / "docs" / "recorderctl.md").read_text(encoding="utf-8")
    found = re.search(r"^ *(openssl pkeyutl [^#\n]*\\\n[^#\n]*)#", text, re.M)
    assert found, "docs/recorderctl.md no longer shows the openssl check of a copy"
    return found.group(1).replace("\\\n", " ").split()


def openssl_verify(pem: Path, copy: Path) -> subprocess.CompletedProcess[str]:
    """The offline check of the signature in docs/recorderctl.md ("Checking a copy"), exactly: its
    words, with the key's and the copy's paths put in."""
    openssl = needs_tool("openssl")
    words = {"openssl": openssl, "recorder.pub.pem": str(pem), "F.manifest.json": f"{copy}.manifest.json",
             "F.manifest.sig": f"{copy}.manifest.sig"}
    command = [words.get(word, word) for word in documented_openssl_check()]
    assert command == [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin",
                       "-in", f"{copy}.manifest.json", "-sigfile", f"{copy}.manifest.sig"], command
    return subprocess.run(command, capture_output=True, text=True)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_export_verifies_with_recorderctl_and_with_openssl(site: Site, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "evidence.wav"
    export(site, rec, out)
    assert out.read_bytes() == site.wav_bytes(rec)  # the copy itself is as it was: the WAV, byte for byte
    body = (tmp_path / "evidence.wav.manifest.json").read_bytes()
    sig = (tmp_path / "evidence.wav.manifest.sig").read_bytes()
    for made in (out, tmp_path / "evidence.wav.manifest.json", tmp_path / "evidence.wav.manifest.sig"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("evidence")) == [
        "evidence.wav", "evidence.wav.manifest.json", "evidence.wav.manifest.sig"]  # no staging file left
    manifest = json.loads(body)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    public = signing.PublicKey.from_pem(pem.read_bytes())
    assert len(sig) == 64 and public.verify(sig, body)
    assert {k: manifest[k] for k in ("manifest", "version", "file", "file_format", "file_sha256", "copy_id",
                                     "copy_kind", "recording_id", "did_label", "started_at", "ended_at", "codec",
                                     "channels",
                                     "recording_sha256", "purpose")} == {
        "manifest": "recorderd export manifest", "version": 1, "file": "evidence.wav", "file_format": "wav",
        "file_sha256": rec["sha256"], "copy_id": 1, "copy_kind": "export", "recording_id": rec["id"],
        "did_label": rec["did_label"], "started_at": rec["started_at"], "ended_at": rec["ended_at"],
        "codec": "PCMU", "channels": 2, "recording_sha256": rec["sha256"], "purpose": "suspicious_call"}
    assert manifest["evidence_pcap_sha256"] == hashlib.sha256(b"".join(site.open_store().reading.plaintext(
        site.open_store().reading.get(rec["id"]), pcap=True))).hexdigest()
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert manifest["signer"] == {"user": me, "role": "manager", "via": "direct"}
    assert manifest["recorder"]["key_id"] == public.key_id == hashlib.sha256(
        public.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()[:16]
    assert manifest["recorder"]["public_key"] == public.pem
    digits = "".join(c for c in rec["caller"] if c.isdigit())
    assert rec["caller"].encode() not in body and digits[-8:].encode() not in body  # handed over: no caller number

    rc, said = verify(site, capsys, out)  # on the box: the store's key
    assert rc == 0 and f"OK {out}: signed by the recorder's key {public.key_id}" in said, said
    elsewhere = subprocess.run([*CTL, "--config", str(tmp_path / "no-such.yaml"), "verify-export", str(out),
                                "--pubkey", str(pem)], capture_output=True, text=True, cwd="/")
    # no store, no config
    assert elsewhere.returncode == 0 and "OK" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr
    checked = openssl_verify(pem, out)
    said = checked.stdout + checked.stderr
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout, said
    sha256sum = subprocess.run(["sha256sum", str(out)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert f'"file_sha256": "{sha256sum}"'.encode() in body  # the line docs/recorderctl.md says to compare by eye
    made = [e for e in events(site, "init") if e.detail["signing_key"]["created"]]  # by init, once, in its row
    assert [e.detail["signing_key"]["fingerprint"] for e in made] == [public.fingerprint]
    assert public.fingerprint.startswith(public.key_id)
    asked = events(site, "pubkey")  # recorderctl pubkey, and verify-export asking for the store's key
    assert [(e.result, e.detail["signing_key"]) for e in asked] == [
        ("allowed", {"fingerprint": public.fingerprint})] * 2
    [exported] = events(site, "export")
    assert exported.detail["signing_key"] == {"fingerprint": public.fingerprint}


@pytest.mark.parametrize("where", ["first byte", "header", "middle of the audio", "last byte"])
def test_one_bit_flipped_in_the_copy_fails(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    size = out.stat().st_size
    flip(out, {"first byte": 0, "header": 40, "middle of the audio": size // 2, "last byte": size - 1}[where])
    for extra in ((), ("--pubkey", str(pem))):
        rc, said = verify(site, capsys, out, *extra)
        assert rc == 1, said
        assert f"FAIL file: the SHA-256 of {out} is " in said and f"not the manifest's {rec['sha256']}" in said, said
        assert "FAIL signature" not in said  # the manifest is intact: it is the copy that changed
    assert openssl_verify(pem, out).returncode == 0  # the manifest is still the recorder's ...
    summed = subprocess.run(["sha256sum", str(out)], capture_output=True, text=True).stdout.split()[0]
    assert summed != rec["sha256"]  # ... the file is not


@pytest.mark.parametrize("where", ["first byte", "file_sha256", "purpose", "last byte"])
def test_one_bit_flipped_in_the_manifest_fails(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    manifest = tmp_path / "copy.wav.manifest.json"
    body = manifest.read_bytes()
    offsets = {"first byte": 0, "file_sha256": body.index(rec["sha256"].encode()) + 10,
               "purpose": body.index(b'"suspicious_call"') + 3, "last byte": len(body) - 1}
    flip(manifest, offsets[where])
    for extra in ((), ("--pubkey", str(pem))):
        rc, said = verify(site, capsys, out, *extra)
        assert rc == 1 and "FAIL signature: " in said and "is not signed by the recorder's key" in said, said
    checked = openssl_verify(pem, out)
    said = checked.stdout + checked.stderr
    assert checked.returncode != 0 and "Signature Verification Failure" in checked.stdout, said


def test_a_flipped_or_missing_signature_fails(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    sig = tmp_path / "copy.wav.manifest.sig"
    flip(sig, 17)
    rc, said = verify(site, capsys, out)
    assert rc == 1 and "the manifest or its signature was altered" in said, said
    sig.write_bytes(sig.read_bytes()[:63])
    rc, said = verify(site, capsys, out)
    assert rc == 1 and "is not an Ed25519 signature (63 bytes, 64 expected)" in said, said
    sig.unlink()
    rc, said = verify(site, capsys, out)
    assert rc == 1 and f"FAIL signature: cannot read {sig} (No such file or directory)" in said, said


@pytest.mark.parametrize("signature", [b"", bytes(64), b"\x00"], ids=["empty", "64 zero bytes", "one byte"])
def test_a_forged_copy_with_an_empty_or_blank_signature_fails(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], signature: bytes
) -> None:
    """Other audio, the real manifest with that audio's hash put in, and a signature file that is
    empty (or zeros): refused with and without --pubkey, as openssl refuses it. Was: an empty
    signature file skipped the signature check, and the forgery was said OK."""
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    forged = tmp_path / "forged.wav"
    forged.write_bytes(b"FORGED AUDIO")
    body = (tmp_path / "copy.wav.manifest.json").read_bytes().replace(
        rec["sha256"].encode(), hashlib.sha256(b"FORGED AUDIO").hexdigest().encode())
    (tmp_path / "forged.wav.manifest.json").write_bytes(body)
    (tmp_path / "forged.wav.manifest.sig").write_bytes(signature)
    for extra in ((), ("--pubkey", str(pem))):
        rc, said = verify(site, capsys, forged, *extra)
        assert rc == 1 and "FAIL signature: " in said and "OK" not in said.split(), said
        rc, said = verify(site, capsys, forged, "--json", *extra)
        assert rc == 1 and json.loads(said)["ok"] is False, said
    assert openssl_verify(pem, forged).returncode != 0


def test_verify_export_names_what_is_not_a_plain_file(site: Site, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO in the copy's place is refused at once (it hung the check, waiting for a writer); a
    symbolic link to the copy, or to its manifest, is refused: the check names the file it was given.
    A manifest whose ``recorder`` is not an object, with a bad signature, is a failure said, not a
    traceback."""
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "copy.wav")
    for name in ("copy.wav.manifest.json", "copy.wav.manifest.sig"):
        (fifo_dir / name).write_bytes((tmp_path / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "verify-export",
                           str(fifo_dir / "copy.wav")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "not a regular file" in done.stdout + done.stderr, done
    link_dir = tmp_path / "link"
    link_dir.mkdir()
    (link_dir / "copy.wav").symlink_to(out)
    for name in ("copy.wav.manifest.json", "copy.wav.manifest.sig"):
        (link_dir / name).write_bytes((tmp_path / name).read_bytes())
    rc, said = verify(site, capsys, link_dir / "copy.wav")
    assert rc == 1 and "a symbolic link: give the file itself" in said, said
    (link_dir / "copy.wav").unlink()
    (link_dir / "copy.wav").write_bytes(out.read_bytes())
    (link_dir / "copy.wav.manifest.json").unlink()
    (link_dir / "copy.wav.manifest.json").symlink_to(tmp_path / "copy.wav.manifest.json")
    rc, said = verify(site, capsys, link_dir / "copy.wav")
    assert rc == 1 and "a symbolic link: give the file itself" in said, said
    assert verify(site, capsys, out)[0] == 0  # the copy itself still checks
    manifest = json.loads((tmp_path / "copy.wav.manifest.json").read_bytes())
    manifest["recorder"] = [1]
    (tmp_path / "copy.wav.manifest.json").write_bytes(
        signing.manifest_bytes({k: v for k, v in manifest.items() if k not in ("manifest", "version")}))
    rc, said = verify(site, capsys, out)
    assert rc == 1 and "the manifest or its signature was altered" in said, said


def test_a_manifest_re_signed_with_another_key_fails(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever edits the audio can write a manifest that matches it and sign it with a key of their
    own, naming that key in it: the check goes by the recorder's key, never by the manifest's."""
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    export(site, rec, out)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    recorder_id = signing.PublicKey.from_pem(pem.read_bytes()).key_id
    flip(out, out.stat().st_size // 2)
    forger = Ed25519PrivateKey.generate()
    forged_key = signing.PublicKey.of(forger.public_key())
    manifest = json.loads((tmp_path / "copy.wav.manifest.json").read_bytes())
    manifest["file_sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    manifest["recorder"].update(key_id=forged_key.key_id, public_key=forged_key.pem)
    body = signing.manifest_bytes({k: v for k, v in manifest.items() if k not in ("manifest", "version")})
    (tmp_path / "copy.wav.manifest.json").write_bytes(body)
    (tmp_path / "copy.wav.manifest.sig").write_bytes(forger.sign(body))
    for extra in ((), ("--pubkey", str(pem))):
        rc, said = verify(site, capsys, out, *extra)
        assert rc == 1, said
        assert f"the manifest names key {forged_key.key_id}, not this recorder's key {recorder_id}" in said, said
    assert openssl_verify(pem, out).returncode != 0
    forged_pem = tmp_path / "forged.pem"
    forged_pem.write_text(forged_key.pem)
    # it is the forger's: hence, the recorder's key
    assert verify(site, capsys, out, "--pubkey", str(forged_pem))[0] == 0


@pytest.mark.parametrize("how", ["export", "export --conversation", "provide", "provide --conversation"])
def test_no_copy_is_written_when_it_could_not_be_signed(site: Site, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], how: str) -> None:
    """The signing key gone (a technician's mistake, a damaged disk): the copy is refused before any
    byte of it is written, and nothing is registered. Was: the decrypted copy was written and
    registered, then the manifest failed: a plaintext recording on disk with nothing to check it by."""
    rec = recording(site, capsys)
    (site.store / "signing.key").rename(tmp_path / "signing.key.away")
    action, *flags = how.split()
    out = tmp_path / ("copies" if flags else "copy.wav")
    if flags:
        out.mkdir()
    extra = (["--purpose", "suspicious_call"] if action == "export"
             else ["--to", "Kawasaki Police Station", "--basis", "law"])
    capsys.readouterr()
    rc = site.ctl(action, rec["id"], "--out", str(out), *extra, *flags)
    said = capsys.readouterr()
    assert rc != 0 and "signing key" in said.out + said.err, said
    written = sorted(p.name for p in (out.iterdir() if flags else tmp_path.glob("copy.wav*")))
    assert written == [], written
    assert site.ctl("copies", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    (tmp_path / "signing.key.away").rename(site.store / "signing.key")
    assert site.ctl(action, rec["id"], "--out", str(out), *extra, *flags) == 0  # the key back: it is made


def test_typed_numbers_are_not_in_the_signed_manifest(site: Site, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A manager's approval reference and the copy's file name are typed text: a phone number typed
    there is masked in the manifest, as in the audit log (docs/recorderctl.md: no caller number)."""
    rec = recording(site, capsys)
    out = tmp_path / "09011112222.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "other", "--approved-by", "root",
                    "--approval-ref", "caller 090-1111-2222 asked") == 0
    body = (tmp_path / "09011112222.wav.manifest.json").read_text(encoding="utf-8")
    assert "1111" not in body and "2222" not in body, body
    manifest = json.loads(body)
    assert manifest["approval"]["approval_ref"].startswith("caller ") and manifest["file"].endswith(".wav")
    assert verify(site, capsys, out)[0] == 0


def test_provide_gets_a_signed_manifest_too(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = recording(site, capsys, "inbound-alaw.pcap")
    out = tmp_path / "police.wav"
    capsys.readouterr()
    assert site.ctl("provide", rec["id"], "--to", "Kawasaki Police Station", "--basis", "law", "--out", str(out),
                    "--note", "written inquiry 2026-123") == 0
    assert "signed manifest beside it" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "police.wav.manifest.json").read_bytes())
    assert (manifest["copy_kind"], manifest["file_sha256"], manifest["codec"]) == ("provision", rec["sha256"], "PCMA")
    assert manifest["legal_basis"] == {"basis": "law", "article": "APPI Art. 69(1): based on laws and regulations",
                                       "provision": 1}
    assert "purpose" not in manifest
    rc, said = verify(site, capsys, out)
    assert rc == 0, said
    assert openssl_verify(pubkey(site, capsys, tmp_path / "recorder.pub.pem"), out).returncode == 0


def test_pcm_and_pcap_copies_are_signed_with_their_own_hash(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = recording(site, capsys)
    for fmt in ("pcm", "pcap"):
        out = tmp_path / f"copy.{fmt}"
        export(site, rec, out, "--format", fmt)
        manifest = json.loads((tmp_path / f"copy.{fmt}.manifest.json").read_bytes())
        assert manifest["file_format"] == fmt and manifest["recording_sha256"] == rec["sha256"]
        assert manifest["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() != rec["sha256"]
        assert verify(site, capsys, out)[0] == 0


def test_exports_through_the_control_socket_are_signed(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recorderd.config import load
    from recorderd.control import ControlServer

    rec = recording(site, capsys)
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        out = tmp_path / "via-socket.wav"
        export(site, rec, out)
        provided = tmp_path / "provided.wav"
        assert site.ctl("provide", rec["id"], "--to", "Kawasaki Police Station", "--basis", "law",
                        "--out", str(provided)) == 0
        pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
        for copy in (out, provided):
            assert verify(site, capsys, copy)[0] == 0
            assert openssl_verify(pem, copy).returncode == 0
            assert stat.S_IMODE(Path(f"{copy}.manifest.sig").stat().st_mode) == 0o600
        assert out.read_bytes() == site.wav_bytes(rec)
        manifest = json.loads((tmp_path / "via-socket.wav.manifest.json").read_bytes())
        assert manifest["signer"]["via"] == "socket"
        assert {e.detail["via"] for e in events(site, "export") + events(site, "pubkey")} == {"socket"}
        assert not list(tmp_path.glob("*.part-*"))
    finally:
        server.stop()


def test_a_manifest_that_cannot_be_put_beside_the_copy_is_said(site: Site, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "copy.wav"
    (tmp_path / "copy.wav.manifest.json").mkdir()  # something else is in the way
    capsys.readouterr()
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality") == 1
    err = capsys.readouterr().err
    assert f"the copy is at {out} (copy 1), but its signed manifest could not be put beside it" in err, err
    assert not list(tmp_path.glob("*.part-*"))
    [row] = events(site, "export")
    assert row.result.startswith("failed: the copy is at")


def test_the_signing_key_is_made_once_and_only_the_master_key_opens_it(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = site.store / "signing.key"
    first = json.loads(key_file.read_bytes())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    site.init()
    site.init()
    assert json.loads(key_file.read_bytes()) == first  # never replaced
    inits = events(site, "init")
    assert [e.detail["signing_key"]["created"] for e in inits] == [True, False, False]
    assert {e.detail["signing_key"]["fingerprint"][:16] for e in inits} == {first["key_id"]}
    master = (site.root / "master.key").read_bytes()
    key = signing.load(str(site.store), master)
    assert key is not None and key.public.key_id == first["key_id"]
    raw = key.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    text = key_file.read_bytes()
    # wrapped, never clear
    assert raw not in text and base64.b64encode(raw) not in text and raw.hex().encode() not in text
    with pytest.raises(signing.SigningError, match="does not open with the store's master key"):
        signing.load(str(site.store), os.urandom(32))


def test_a_store_made_before_signing_gets_its_key_at_the_first_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store of the release before has no signing.key (and no audit row naming one): its first
    copy makes the key, audited once, and later ones use it."""
    site = made_before_signing(tmp_path / "older")
    rec = recording(site, capsys)
    export(site, rec, tmp_path / "a.wav")
    export(site, rec, tmp_path / "b.wav")
    made = events(site, "signing-key-created")
    assert len(made) == 1 and made[0].result == "allowed"
    for name in ("a.wav", "b.wav"):
        manifest = json.loads((tmp_path / f"{name}.manifest.json").read_bytes())
        assert manifest["recorder"]["key_id"] == made[0].detail["signing_key"]["fingerprint"][:16]
        assert verify(site, capsys, tmp_path / name)[0] == 0


def test_decommission_leaves_no_signing_key_and_old_copies_still_check(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = recording(site, capsys)
    out = tmp_path / "handed-over.wav"
    export(site, rec, out)
    pem = pubkey(site, capsys, tmp_path / "recorder.pub.pem")
    wrapped = json.loads((site.store / "signing.key").read_bytes())["wrapped_private_key"]
    assert site.ctl("decommission", "--confirm", "--certificate", str(tmp_path / "cert")) == 0
    assert not (site.store / "signing.key").exists() and not list(site.store.glob("signing.key*"))
    leftovers = b"".join(p.read_bytes() for p in site.store.rglob("*") if p.is_file())
    assert wrapped.encode() not in leftovers and base64.b64decode(wrapped) not in leftovers
    cert = json.loads((tmp_path / "cert.json").read_text(encoding="utf-8"))
    assert cert["signing_key_erased"] is True and cert["verification"].startswith("passed")
    assert "Signing key erased:      yes" in (tmp_path / "cert.txt").read_text(encoding="utf-8")
    assert verify(site, capsys, out, "--pubkey", str(pem))[0] == 0  # what was handed over still checks


def test_a_key_root_makes_in_the_service_users_store_is_the_service_users(tmp_path: Path) -> None:
    """``recorderctl init`` (or a copy) run as root on a store the service user owns: a key file left
    root's own (0600) would be one the service cannot open, and every copy through it would fail."""
    if os.geteuid() != 0:
        pytest.skip("making a file for another user needs root")
    site = made_before_signing(tmp_path / "older")
    os.chown(site.store, 65534, 65534)  # the store is another user's (nobody's, here)
    site.init()
    st = (site.store / "signing.key").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)


def test_decommission_erases_a_staging_copy_of_the_key_a_crash_left(site: Site, tmp_path: Path) -> None:
    leftover = site.store / "signing.key.part-4242-deadbeef"
    leftover.write_bytes((site.store / "signing.key").read_bytes())
    assert site.ctl("decommission", "--confirm", "--certificate", str(tmp_path / "cert")) == 0
    assert not list(site.store.glob("signing.key*"))


@pytest.mark.parametrize("swapped,refusal", [
    (("public_key", "key_id"), "does not open with the store's master key"),  # the key id is bound to the wrapped key
    (("public_key",), "was altered (its key id is not its public key's)"),
])
def test_a_key_file_with_its_public_key_swapped_signs_nothing(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], swapped: tuple[str, ...], refusal: str
) -> None:
    """Whoever can write the store but lacks the master key could put their own public key in the
    key file, so that the box would vouch for their forgeries: the key file must then refuse to work."""
    rec = recording(site, capsys)
    key_file = site.store / "signing.key"
    obj = json.loads(key_file.read_bytes())
    theirs = signing.PublicKey.of(Ed25519PrivateKey.generate().public_key())
    obj.update({k: {"public_key": theirs.pem, "key_id": theirs.key_id}[k] for k in swapped})
    key_file.write_text(json.dumps(obj))
    capsys.readouterr()
    assert site.ctl("pubkey") == 1
    assert refusal in capsys.readouterr().err
    assert site.ctl("export", rec["id"], "--out", str(tmp_path / "x.wav"), "--purpose", "quality") == 1
    assert not (tmp_path / "x.wav.manifest.sig").exists()
    rc, said = verify(site, capsys, tmp_path / "x.wav")
    assert rc == 1 and "cannot get the recorder's public key" in said, said


def test_a_deleted_signing_key_is_not_replaced_but_said_to_be_restored(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """signing.key deleted on a store whose audit log records its key (init's row): a new key would
    make the copies signed before fail verify-export on the box. Neither a copy nor init makes one;
    both say to restore the file from its backup; restored, everything checks again."""
    rec = recording(site, capsys)
    export(site, rec, tmp_path / "before.wav")
    key_file = site.store / "signing.key"
    backup = key_file.read_bytes()
    key_file.unlink()
    for args in (("export", rec["id"], "--out", str(tmp_path / "after.wav"), "--purpose", "suspicious_call"),
                 ("init",)):
        capsys.readouterr()
        assert site.ctl(*args) == 1, args
        err = capsys.readouterr().err
        assert (f"the signing key {key_file} is missing, but the audit log records that this store has one (key "
                f"{json.loads(backup)['key_id']})") in err, err
        assert ("restore signing.key from its backup" in err
                and "the master key's backup alone does not bring it back" in err)
        assert not key_file.exists() and not list(site.store.glob("signing.key*")), args
    assert events(site, "signing-key-created") == []
    key_file.write_bytes(backup)
    key_file.chmod(0o600)
    assert verify(site, capsys, tmp_path / "before.wav")[0] == 0
    export(site, rec, tmp_path / "after.wav")
    assert verify(site, capsys, tmp_path / "after.wav")[0] == 0


def test_signing_can_say_which_key_it_needs_even_with_the_key_file_gone(site: Site) -> None:
    """The refusal comes from the storage layer (signing.ensure), so the service's start takes it too."""
    os.unlink(site.store / "signing.key")
    master = (site.root / "master.key").read_bytes()
    with pytest.raises(signing.SigningError, match="restore signing.key from its backup"):
        signing.ensure(str(site.store), master)
    assert not (site.store / "signing.key").exists()


def test_a_signing_key_put_in_place_of_the_recorded_one_signs_nothing(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whoever holds the master key (root, the service user) could put another key, wrapped with it,
    in the key file: the box would then sign with a key no record names, and the copies signed before
    would no longer verify on it. The key is refused, since the audit log records the one made."""
    rec = recording(site, capsys)
    export(site, rec, tmp_path / "before.wav")
    key_file = site.store / "signing.key"
    master = (site.root / "master.key").read_bytes()
    private = Ed25519PrivateKey.generate()
    public = signing.PublicKey.of(private.public_key())
    key_file.write_text(json.dumps({"version": 1, "algorithm": "Ed25519", "key_id": public.key_id,
                                    "public_key": public.pem,
                                    "wrapped_private_key": signing._wrap(master, private, public.key_id)}))
    capsys.readouterr()
    assert site.ctl("export", rec["id"], "--out", str(tmp_path / "after.wav"), "--purpose", "quality") == 1
    said = capsys.readouterr()
    assert "is not the one the audit log records" in said.out + said.err, said
    assert not (tmp_path / "after.wav").exists() and not (tmp_path / "after.wav.manifest.sig").exists()
    assert site.ctl("pubkey") == 1
