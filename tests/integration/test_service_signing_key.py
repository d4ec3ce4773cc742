"""A store made before signed copies (no signing.key, no audit row naming one) gets its signing key
when the service starts, audited as the service, not only at its first copy; a second start makes
no other. A store whose audit log records its key and whose signing.key was deleted gets no new
one (the copies signed before would fail verify-export on the box): the service says to restore
the file (EVENT=signing-key-failed) and keeps recording.

The real ``recorderd --config`` in a network namespace (test_live_service's Span and Service).
Needs root (netns, AF_PACKET); skips otherwise."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from integration.test_live_service import TRUNK, Service, Span, live_site, span  # noqa: F401  (span: the fixture)
from storage import signing
from storage.audit import AuditLog

pytestmark = pytest.mark.integration


def _rows(site_store: Path, action: str) -> list:
    audit = AuditLog(str(site_store / "audit.sqlite"))
    try:
        return [r[1] for r in audit.rows() if r[1].action == action]
    finally:
        audit.close()


def _made_before_signing(tmp: Path, name: str) -> Site:
    """live_site's set-up, the store made by the storage layer's own init (which makes no signing
    key), as the release before signed copies left it."""
    from recorderd.config import load
    from recorderd.service import open_store

    root = tmp / name
    root.mkdir()
    settings = f"capture: {{interfaces: [span-rx], {TRUNK}, ring_mb: 8, block_timeout_ms: 20, idle_timeout_s: 60}}\n"
    site = Site(root, None, settings)
    open_store(load(str(site.config))).init()
    return site


def test_the_service_makes_the_signing_key_of_a_store_made_before_signing(span: Span, tmp_path: Path,  # noqa: F811
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    site = _made_before_signing(tmp_path, "older")
    key_file = Path(signing.key_path(str(site.store)))
    assert not key_file.exists()
    before = len(_rows(site.store, "signing-key-created"))

    service = Service(span, site, tmp_path)
    try:
        service.wait_log("signing-key-created")
        assert key_file.is_file() and (key_file.stat().st_mode & 0o077) == 0
        capsys.readouterr()
        assert site.ctl("pubkey", "--json") == 0  # through the service
        key_id = json.loads(capsys.readouterr().out)["key_id"]
    finally:
        assert service.stop() == 0
    made = _rows(site.store, "signing-key-created")[before:]
    assert len(made) == 1, made
    row = made[0]
    assert row.uid == 0 and row.detail["via"] == "service" and row.result == "allowed"
    assert row.detail["signing_key"]["fingerprint"].startswith(key_id)

    service = Service(span, site, tmp_path)  # a second start keeps that key and audits nothing
    assert service.stop() == 0
    assert len(_rows(site.store, "signing-key-created")) == before + 1
    capsys.readouterr()
    assert site.ctl("pubkey", "--json") == 0
    assert json.loads(capsys.readouterr().out)["key_id"] == key_id


def test_a_deleted_signing_key_is_not_replaced_and_the_service_keeps_recording(span: Span, tmp_path: Path,  # noqa: F811
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    site = live_site(tmp_path, "deleted")  # init made the key and its audit row names it
    key_file = Path(signing.key_path(str(site.store)))
    key_id = json.loads(key_file.read_bytes())["key_id"]
    key_file.unlink()

    service = Service(span, site, tmp_path)
    try:
        service.wait_log("EVENT=signing-key-failed")
        log = service.log.read_text()
        assert f"the signing key {key_file} is missing, but the audit log records that this store has one (key {key_id})" in log
        assert "restore signing.key from its backup" in log
        span.replay(FIXTURES / "inbound-mulaw.pcap", multiplier=20)
        time.sleep(1.5)  # past the BYE linger
    finally:
        assert service.stop() == 0
    assert not key_file.exists() and not list(site.store.glob("signing.key*"))
    assert _rows(site.store, "signing-key-created") == []
    [rec] = site.list(capsys)  # recording went on
    assert rec["caller"] not in service.log.read_text()
