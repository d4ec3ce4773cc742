"""A store made before signed copies (no signing.key) gets its signing key when the service starts,
audited as the service, not only at its first copy; a second start makes no other.

The real ``recorderd --config`` in a network namespace (test_live_service's Span and Service).
Needs root (netns, AF_PACKET); skips otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.test_live_service import Service, Span, live_site, span  # noqa: F401  (span: the fixture)

from storage import signing
from storage.audit import AuditLog

pytestmark = pytest.mark.integration


def _rows(site_store: Path, action: str) -> list:
    audit = AuditLog(str(site_store / "audit.sqlite"))
    try:
        return [r[1] for r in audit.rows() if r[1].action == action]
    finally:
        audit.close()


def test_the_service_makes_the_signing_key_of_a_store_made_before_signing(span: Span, tmp_path: Path,  # noqa: F811
                                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    site = live_site(tmp_path, "older")
    key_file = Path(signing.key_path(str(site.store)))
    key_file.unlink()  # as a store of the edition before signed copies
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
