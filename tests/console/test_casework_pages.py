"""The console's casework pages (export downloads, four-eyes requests, holds, disclosures, the period
report) through Starlette's TestClient against the real console app and the REAL daemon (a
ControlServer on the site's socket), acting for real Unix users made here in each role (prefix w2).

The console's uid is the test's own (``console.user`` is the user running the test), so the daemon
trusts its "acting for"; passwords are checked by a function of the test's (PAM is the browser
tests'). Needs root (useradd).
"""
from __future__ import annotations

import grp
import io
import json
import pwd
import re
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest
import yaml
from conftest import FIXTURES, USER_TOOLS, Site, needs_root, needs_tool
from starlette.testclient import TestClient

from console.sessions import COOKIE
from recorderd import ctl
from recorderd.config import load
from recorderd.control import ControlServer
from storage.audit import AuditLog
from storage.casework import Casework

GROUPS = {"manager": "w2managers", "staff": "w2staff", "technician": "w2techs", "auditor": "w2auditors"}
PEOPLE = {"w2boss": "manager", "w2boss2": "manager", "w2clerk": "staff", "w2tech": "technician"}
PASSWORDS = {user: f"pw-{user}-7" for user in PEOPLE}
ROOT_NAME = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
ROOT_GROUP = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


FIRST_ID = 47200  # uids and gids of their own, away from those useradd hands out (other tests reuse those)


def _remove_people() -> None:
    for user in PEOPLE:  # --force: a uid reused by a process another test left must not keep ours
        subprocess.run(["userdel", "--force", user], capture_output=True)
    for group in GROUPS.values():
        subprocess.run(["groupdel", group], capture_output=True)


def _free_id(taken: Callable[[int], object], start: int) -> int:
    n = start
    while True:
        try:
            taken(n)
        except KeyError:
            return n
        n += 1


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    needs_root("the casework pages act for real Unix users in each role", *USER_TOOLS)
    _remove_people()  # a run that was killed leaves them
    try:
        for group in GROUPS.values():
            subprocess.run(["groupadd", "--gid", str(_free_id(grp.getgrgid, FIRST_ID)), group], check=True)
        for user, role in PEOPLE.items():
            subprocess.run(["useradd", "--no-create-home", "--uid", str(_free_id(pwd.getpwuid, FIRST_ID)),
                            "--gid", GROUPS[role], "--shell", "/usr/sbin/nologin", user], check=True)
        yield
    finally:
        _remove_people()


@dataclass
class Served:
    site: Site
    app: object
    rid: str
    direct_wav: bytes  # what `recorderctl export` (direct mode) wrote for the recording

    def client(self, user: str) -> Browser:
        return Browser.signed_in(self.app, user)

    def copies(self) -> list[dict]:
        casework = Casework(str(self.site.store / "casework.sqlite"))
        try:
            return casework.copies()
        finally:
            casework.close()

    def audit(self, action: str) -> list:
        log = AuditLog(str(self.site.store / "audit.sqlite"))
        try:
            return [row[1] for row in log.rows() if row[1].action == action]
        finally:
            log.close()


class Browser:
    """A TestClient signed in as one person, with that session's CSRF token."""

    def __init__(self, client: TestClient, csrf: str) -> None:
        self.client, self.csrf = client, csrf

    @classmethod
    def signed_in(cls, app: object, user: str) -> Browser:
        client = TestClient(app, base_url="https://testserver", client=("192.0.2.10", 50123))
        answer = client.post("/signin", data={"user": user, "password": PASSWORDS[user]}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        page = client.get("/notice")
        match = CSRF.search(page.text)
        assert match, page.text
        return cls(client, match.group(1))

    def get(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True):  # type: ignore[no-untyped-def]
        return self.client.post(path, data={**(data or {}), **({"csrf": self.csrf} if csrf else {})},
                                follow_redirects=False)


def _serve(tmp_path: Path, pcap: Path) -> Iterator[Served]:
    roles = {f"{role}_group": group for role, group in GROUPS.items()}
    site = Site(tmp_path, settings=yaml.safe_dump({"roles": roles, "console": {"user": ROOT_NAME}}))
    site.init()
    assert site.replay(pcap) == 0
    store = site.open_store()
    try:
        row = max(store.reading.recordings(), key=lambda r: r.ended_at - r.started_at)  # the longest call
    finally:
        store.close()
    # recorderctl export in direct mode, as a manager: the same store through a config of its own
    # (no socket answers there) in which the test's own group is the manager group.
    direct = yaml.safe_load(site.config.read_text())
    direct["roles"] = {**roles, "manager_group": ROOT_GROUP}
    direct["control"] = {"socket": "direct.sock"}
    (tmp_path / "direct.yaml").write_text(yaml.safe_dump(direct, allow_unicode=True))
    out = tmp_path / "direct-export.wav"
    assert ctl.main(["--config", str(tmp_path / "direct.yaml"), "export", row.id, "--out", str(out),
                     "--purpose", "quality"]) == 0
    direct_wav = out.read_bytes()
    config = load(str(site.config))
    server = ControlServer(config)
    assert server.start()
    from console.app import create_app

    app = create_app(config, authenticate=lambda user, password: PASSWORDS.get(user) == password)
    try:
        yield Served(site, app, row.id, direct_wav)
    finally:
        server.stop()


@pytest.fixture
def served(people: None, tmp_path: Path) -> Iterator[Served]:
    """A store with one call (3 s, so its WAV is one vault chunk) and the daemon serving it."""
    yield from _serve(tmp_path, FIXTURES / "inbound-alaw.pcap")


@pytest.fixture
def served_long(people: None, tmp_path: Path) -> Iterator[Served]:
    """The demo day's store (its longest call spans several vault chunks) and the daemon serving it."""
    yield from _serve(tmp_path, FIXTURES / "demo-day.pcap")


def _zip_members(answer) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    return {info.filename: archive.read(info) for info in archive.infolist()}


def _download_ok(served: Served, answer, *, made_by: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    rid = served.rid
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"] == f'attachment; filename="{rid}.wav.zip"'
    assert answer.headers["cache-control"] == "no-store"
    members = _zip_members(answer)
    assert sorted(members) == [f"{rid}.wav", f"{rid}.wav.manifest.json", f"{rid}.wav.manifest.sig"]
    assert members[f"{rid}.wav"] == served.direct_wav  # byte for byte what recorderctl export wrote
    manifest = json.loads(members[f"{rid}.wav.manifest.json"])
    assert manifest["recording_id"] == rid and manifest["file"] == f"{rid}.wav"
    assert manifest["signer"]["user"] == made_by and manifest["signer"]["via"] == "console"
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(manifest["recorder"]["public_key"].encode())
    public.verify(members[f"{rid}.wav.manifest.sig"], members[f"{rid}.wav.manifest.json"])  # raises if forged
    return members


# -- 1. export (Art. 5(5)) as a download ------------------------------------------------------------


def test_a_quality_export_downloads_what_recorderctl_exports_and_registers_the_copy(served: Served) -> None:
    clerk = served.client("w2clerk")
    before = len(served.copies())  # the direct export's copy
    answer = clerk.post(f"/recordings/{served.rid}/export", {"purpose": "quality"})
    _download_ok(served, answer, made_by="w2clerk")
    copies = served.copies()
    assert len(copies) == before + 1
    copy = copies[-1]
    assert (copy["user"], copy["purpose"], copy["kind"], copy["recording_id"]) == ("w2clerk", "quality", "export",
                                                                                   served.rid)
    assert copy["expires_at"] > copy["made_at"]
    [row] = [e for e in served.audit("export") if e.user == "w2clerk"]
    assert row.result == "allowed" and row.detail["via"] == "console" and row.detail.get("client_ip") == "192.0.2.10"
    assert copy["out"] == f"console-download/{served.rid}.wav"  # a name, not a file: the console wrote none
    assert not Path(copy["out"]).exists() and not Path(copy["out"]).parent.exists()
    listed = clerk.get("/copies")
    assert listed.status_code == 200 and served.rid in listed.text and "保持中" in listed.text


def test_the_download_is_checked_with_unzip_openssl_and_sha256sum(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the police do with the file, with standard tools only: unzip it, check the manifest's
    signature with the recorder's public key (``recorderctl pubkey``), and the WAV's SHA-256."""
    unzip, openssl, sha256sum = needs_tool("unzip"), needs_tool("openssl"), needs_tool("sha256sum")
    answer = served.client("w2clerk").post(f"/recordings/{served.rid}/export", {"purpose": "suspicious_call"})
    assert answer.status_code == 200
    (tmp_path / "handed-over.zip").write_bytes(answer.content)
    (tmp_path / "out").mkdir()
    subprocess.run([unzip, "-q", str(tmp_path / "handed-over.zip"), "-d", str(tmp_path / "out")], check=True)
    wav = tmp_path / "out" / f"{served.rid}.wav"
    pem = tmp_path / "recorder.pub.pem"
    capsys.readouterr()
    # the key, from the box itself
    assert ctl.main(["--config", str(tmp_path / "direct.yaml"), "pubkey", "--json"]) == 0
    pem.write_text(json.loads(capsys.readouterr().out)["public_key"])
    checked = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin",
                              "-in", f"{wav}.manifest.json", "-sigfile", f"{wav}.manifest.sig"],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout, checked
    digest = subprocess.run([sha256sum, str(wav)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert digest == json.loads(Path(f"{wav}.manifest.json").read_text())["file_sha256"]


def _asgi_post(served: Served, browser: Browser, path: str, form: dict[str, str], *, stall: bool) -> list[dict]:
    """POST ``form`` to the app as a server would (ASGI), returning every message it sent; with
    ``stall`` the browser stops reading after the first bytes of the body, then goes away."""
    body = urlencode({**form, "csrf": browser.csrf}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"cookie", f"{COOKIE}={browser.client.cookies.get(COOKIE)}".encode())],
             "client": ("192.0.2.10", 50123), "server": ("testserver", 443)}
    seen: list[dict] = []

    async def run() -> None:
        first_bytes, asked = anyio.Event(), []

        async def receive() -> dict:
            if not asked:
                asked.append(1)
                return {"type": "http.request", "body": body, "more_body": False}
            await first_bytes.wait()
            if not stall:
                await anyio.sleep_forever()  # a browser that stays: disconnects only when the server ends
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            seen.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                first_bytes.set()
                if stall:
                    await anyio.sleep_forever()  # a browser that stopped reading

        with anyio.fail_after(30):
            await served.app(scope, receive, send)  # type: ignore[operator]

    anyio.run(run)
    return seen


def _export_row(served: Served, user: str) -> object:
    deadline = time.monotonic() + 30  # the daemon finishes the request after the response ended
    while not [e for e in served.audit("export") if e.user == user] and time.monotonic() < deadline:
        time.sleep(0.1)
    [row] = [e for e in served.audit("export") if e.user == user]
    return row


def test_a_browser_gone_mid_download_leaves_no_copy_registered(served: Served) -> None:
    """The browser takes the first bytes, then stalls and goes away: the daemon hears that the copy
    was not delivered, registers none and audits the export as failed."""
    clerk = served.client("w2clerk")
    before = len(served.copies())
    seen = _asgi_post(served, clerk, f"/recordings/{served.rid}/export", {"purpose": "quality"}, stall=True)
    assert seen[0]["type"] == "http.response.start" and seen[0]["status"] == 200
    row = _export_row(served, "w2clerk")
    assert row.result.startswith("failed: ") and "could not be put" in row.result, row.result  # type: ignore[attr-defined]
    assert len(served.copies()) == before


def test_a_recording_failing_its_integrity_check_half_way_cuts_the_download(served_long: Served) -> None:
    """A stored recording altered in its last chunk: the first chunks have gone to the browser when
    the check fails, so the download is cut (the server closes the connection: the browser reports
    it failed), never ended as if whole, and no copy is registered."""
    served = served_long
    stored = served.site.stored_path({"id": served.rid})
    assert stored.stat().st_size > 65536 + 1000, "the test needs a recording of two vault chunks at least"
    from storage import sealed

    with open(stored, "rb") as f:  # the last record of audio (after it: the final WAV header and FINAL)
        found = sealed.scan(f.fileno(), str(stored))
    offset, length, position, _kind = max((r for r in found.records if r[3] == sealed.DATA and r[0] > 0),
                                          key=lambda r: r[0])
    assert offset > 65536, "the test needs audio records after the first 64 KiB"
    data = bytearray(stored.read_bytes())
    data[position + sealed.RECORD + sealed.NONCE + length // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    clerk = served.client("w2clerk")
    before = len(served.copies())
    seen = _asgi_post(served, clerk, f"/recordings/{served.rid}/export", {"purpose": "quality"}, stall=False)
    assert seen[0]["type"] == "http.response.start" and seen[0]["status"] == 200
    bodies = [m for m in seen if m["type"] == "http.response.body"]
    assert bodies and all(m.get("more_body") for m in bodies)  # never ended: the server cuts the connection
    assert 0 < sum(len(m["body"]) for m in bodies) < len(served.direct_wav)
    row = _export_row(served, "w2clerk")
    assert row.result.startswith("failed: ") and "integrity check" in row.result, row.result  # type: ignore[attr-defined]
    assert len(served.copies()) == before


def test_an_export_for_another_purpose_is_refused_and_points_to_a_request(served: Served) -> None:
    clerk = served.client("w2clerk")
    before = len(served.copies())
    answer = clerk.post(f"/recordings/{served.rid}/export", {"purpose": "complaint-investigation"})
    assert answer.status_code == 400 and "持出し申請" in answer.text
    assert len(served.copies()) == before


def test_an_export_without_the_csrf_token_is_refused(served: Served) -> None:
    clerk = served.client("w2clerk")
    before = len(served.copies())
    assert clerk.post(f"/recordings/{served.rid}/export", {"purpose": "quality"}, csrf=False).status_code == 403
    assert len(served.copies()) == before


def test_a_technician_cannot_export(served: Served) -> None:
    tech = served.client("w2tech")
    before = len(served.copies())
    assert tech.post(f"/recordings/{served.rid}/export", {"purpose": "quality"}).status_code == 403
    assert len(served.copies()) == before


def test_a_manager_provides_a_recording_under_a_basis_as_a_download(served: Served) -> None:
    boss, clerk = served.client("w2boss"), served.client("w2clerk")
    form = {"basis": "law", "to": "Kawasaki police, Nakahara station", "note": "warrant 2026-41"}
    before = len(served.copies())
    assert clerk.post(f"/recordings/{served.rid}/provide", form).status_code == 403
    assert boss.post(f"/recordings/{served.rid}/provide", {**form, "basis": "curiosity"}).status_code == 400
    assert len(served.copies()) == before
    members = _download_ok(served, boss.post(f"/recordings/{served.rid}/provide", form), made_by="w2boss")
    manifest = json.loads(members[f"{served.rid}.wav.manifest.json"])
    assert manifest["legal_basis"]["basis"] == "law" and "Art. 69(1)" in manifest["legal_basis"]["article"]
    copies = served.copies()
    assert len(copies) == before + 1 and copies[-1]["kind"] == "provision" and copies[-1]["user"] == "w2boss"


# -- 2. four eyes -----------------------------------------------------------------------------------


def _request(browser: Browser, rid: str) -> int:
    answer = browser.post(f"/recordings/{rid}/request", {"purpose": "complaint-investigation",
                                                         "reason": "the citizen's complaint 2026-118"})
    assert answer.status_code == 200, answer.text
    match = re.search(r"持出し申請 (\d+) を受け付けました", answer.text)
    assert match, answer.text
    return int(match.group(1))


def _row(page: str, n: int) -> str:
    match = re.search(rf'<tr class="request" data-request="{n}">(.*?)</tr>', page, re.S)
    assert match, page
    return match.group(1)


def test_a_staff_request_is_approved_by_a_manager_then_downloaded_once(served: Served) -> None:
    clerk, boss = served.client("w2clerk"), served.client("w2boss")
    n = _request(clerk, served.rid)
    mine = clerk.get("/requests")
    assert 'id="requests"' in mine.text and "判断待ち" in _row(mine.text, n)
    assert 'class="decide"' not in _row(mine.text, n)  # staff decide nothing
    assert clerk.post(f"/requests/{n}/decide", {"decision": "approve", "reason": "mine"}).status_code == 403
    assert clerk.post(f"/requests/{n}/download").status_code != 200  # not approved yet
    listed = boss.get("/requests")
    row = _row(listed.text, n)
    assert 'form class="decide"' in row and 'class="approve"' in row and 'class="refuse"' in row
    decided = boss.post(f"/requests/{n}/decide", {"decision": "approve", "reason": "the complaint needs it"})
    assert decided.status_code == 200 and f"持出し申請 {n} を承認しました" in decided.text
    row = _row(clerk.get("/requests").text, n)
    assert f'<form class="download" method="post" action="/requests/{n}/download">' in row
    assert 'button type="submit" class="download"' in row
    before = len(served.copies())
    head = clerk.client.head(f"/requests/{n}/download", headers={"x-csrf-token": clerk.csrf})
    assert head.status_code == 405  # a HEAD (which delivers no body) uses nothing up
    # a GET (an <img> of a page on another port of the box) and a POST without the token use nothing up
    assert clerk.get(f"/requests/{n}/download").status_code == 405
    assert clerk.post(f"/requests/{n}/download", csrf=False).status_code == 403
    assert len(served.copies()) == before
    _download_ok(served, clerk.post(f"/requests/{n}/download"), made_by="w2clerk")
    copies = served.copies()
    assert len(copies) == before + 1 and copies[-1]["approved_by"] == "w2boss"
    assert copies[-1]["purpose"] == "complaint-investigation"
    again = clerk.post(f"/requests/{n}/download")
    assert again.status_code in (403, 409) and "zip" not in again.headers["content-type"]
    assert len(served.copies()) == before + 1
    assert 'class="download"' not in _row(clerk.get("/requests").text, n)


def test_a_refused_request_is_never_downloaded(served: Served) -> None:
    clerk, boss = served.client("w2clerk"), served.client("w2boss")
    n = _request(clerk, served.rid)
    refused = boss.post(f"/requests/{n}/decide", {"decision": "refuse", "reason": "not needed for the complaint"})
    assert refused.status_code == 200 and f"持出し申請 {n} を却下しました" in refused.text
    before = len(served.copies())
    assert clerk.post(f"/requests/{n}/download").status_code in (403, 409)
    assert len(served.copies()) == before


def test_a_manager_cannot_approve_their_own_request(served: Served) -> None:
    boss, other = served.client("w2boss"), served.client("w2boss2")
    n = _request(boss, served.rid)
    row = _row(boss.get("/requests").text, n)
    assert 'class="decide"' not in row and "自分の申請は判断できません" in row  # hidden on the page ...
    answer = boss.post(f"/requests/{n}/decide", {"decision": "approve", "reason": "I need it"})
    assert answer.status_code == 403  # ... and refused by the daemon when posted anyway
    assert "判断待ち" in _row(boss.get("/requests").text, n)
    assert 'form class="decide"' in _row(other.get("/requests").text, n)  # another manager may


# -- 3. holds ---------------------------------------------------------------------------------------


def _holds(served: Served) -> list[dict]:
    """The recording's holds in force (released ones are not)."""
    store = served.site.open_store()
    try:
        return store.db().holds(served.rid)
    finally:
        store.close()


def test_a_manager_holds_then_releases_a_recording(served: Served) -> None:
    boss, clerk = served.client("w2boss"), served.client("w2clerk")
    form = {"until": "2099-12-31", "reason": "police enquiry", "ref": "K-2026-77"}
    assert clerk.post(f"/recordings/{served.rid}/hold", form).status_code == 403
    assert _holds(served) == []
    answer = boss.post(f"/recordings/{served.rid}/hold", form)
    assert answer.status_code == 200, answer.text
    match = re.search(rf"録音 {re.escape(served.rid)} を 2100-01-01 00:00 まで保全しました（保全番号 (\d+)）",
                      answer.text)
    assert match, answer.text
    hold_id = int(match.group(1))
    [hold] = _holds(served)
    assert hold["hold_id"] == hold_id and hold["created_by"] == "w2boss" and hold["ref"] == "K-2026-77"
    assert boss.post(f"/recordings/{served.rid}/holds/{hold_id}/release", {"reason": ""}).status_code == 400
    released = boss.post(f"/recordings/{served.rid}/holds/{hold_id}/release", {"reason": "enquiry closed"})
    assert released.status_code == 200 and f"保全 {hold_id} を解除しました" in released.text
    assert _holds(served) == []


# -- 4. casework ------------------------------------------------------------------------------------


def test_a_disclosure_request_is_opened_and_listed(served: Served) -> None:
    boss, clerk = served.client("w2boss"), served.client("w2clerk")
    assert clerk.get("/casework").status_code == 403
    assert clerk.post("/disclosures", {"requester_type": "self", "ref": "D-2026-5"}).status_code == 403
    answer = boss.post("/disclosures", {"requester_type": "self", "ref": "D-2026-5", "note": "by letter"})
    assert answer.status_code == 200
    match = re.search(r"開示請求 (\d+) を受け付けました", answer.text)
    assert match, answer.text
    n = int(match.group(1))
    listed = boss.get("/casework")
    assert (listed.status_code == 200 and f'<a href="/disclosures/{n}">{n}</a>' in listed.text
            and "D-2026-5" in listed.text)
    shown = boss.get(f"/disclosures/{n}")
    assert shown.status_code == 200 and 'id="disclosure-search"' in shown.text and "本人" in shown.text


def test_a_complaint_is_recorded_by_staff_and_closed(served: Served) -> None:
    clerk = served.client("w2clerk")
    answer = clerk.post("/complaints", {"summary": "rude answer", "channel": "letter", "recordings": served.rid})
    match = re.search(r"苦情 (\d+) を記録しました", answer.text)
    assert answer.status_code == 200 and match, answer.text
    n = int(match.group(1))
    assert "rude answer" in clerk.get("/complaints").text
    closed = clerk.post(f"/complaints/{n}/close", {"outcome": "apologised"})
    assert closed.status_code == 200 and f"苦情 {n} を終了しました" in closed.text


def test_an_incident_is_recorded_with_an_action_and_reported(served: Served) -> None:
    boss = served.client("w2boss")
    answer = boss.post("/incidents", {"kind": "loss", "summary": "USB stick with an exported copy lost",
                                      "recordings": served.rid, "occurred": "2026-11-30T10:15"})
    match = re.search(r"事故 (\d+) を記録しました", answer.text)
    assert answer.status_code == 200 and match, answer.text
    n = int(match.group(1))
    assert f'<a href="/incidents/{n}">{n}</a>' in boss.get("/casework").text
    acted = boss.post(f"/incidents/{n}/action", {"text": "holder of the copy questioned", "close": "1"})
    assert acted.status_code == 200 and f"事故 {n} に措置を記録し、終了しました" in acted.text
    shown = boss.get(f"/incidents/{n}")
    assert shown.status_code == 200 and "holder of the copy questioned" in shown.text and "紛失" in shown.text
    assert 'id="incident-action"' not in shown.text  # closed: no more actions


# -- 5. the period report ---------------------------------------------------------------------------


def test_the_period_report_renders_and_prints_without_the_header(served: Served) -> None:
    for user in ("w2boss", "w2tech"):
        page = served.client(user).get("/report?from=2026-01-01&to=2026-12-31")
        assert page.status_code == 200, page.text
        assert 'id="report"' in page.text and "期間報告" in page.text and "2026-01-01 — 2026-12-31" in page.text
        assert '<link rel="stylesheet" href="/static/casework.css">' in page.text
    english = served.client("w2boss")
    english.client.cookies.set("lang", "en")
    assert "Calls recorded, per designated number" in english.get("/report?from=2026-01-01&to=2026-12-31").text
    assert served.client("w2clerk").get("/report").status_code == 403
    assert served.client("w2boss").get("/report?from=2026-02-30&to=2026-03-01").status_code == 400
    css = served.client("w2boss").get("/static/casework.css").text
    assert re.search(r"@media print \{\s*header, nav, form", css)


def _cell(page: str, heading: str) -> str:
    found = re.search(rf"<th>{re.escape(heading)}</th><td>(.*?)</td></tr>", page, re.S)
    assert found, page
    return found.group(1)


def test_the_report_opens_on_the_last_seven_days_with_accesses_and_refusals_in_words(served: Served) -> None:
    """Without a period the report is of the last seven days ending today in Tokyo (was: from the
    first of the month, so on the 1st only today: a box whose calls were yesterday opened on 0),
    and the accesses and refusals are said in words, not the daemon's action names."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    assert served.client("w2clerk").post(f"/recordings/{served.rid}/export", {"purpose": "quality"}).status_code == 200
    assert served.client("w2tech").get("/search", params={"caller": "2222", "match": "ends"}).status_code == 403
    stranger = TestClient(served.app, base_url="https://testserver", client=("192.0.2.10", 50124))
    refused = stranger.post("/signin", data={"user": "w2boss", "password": "wrong"}, follow_redirects=False)
    assert refused.status_code != 303
    today = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    week = f"{today - timedelta(days=6)} — {today}"
    page = served.client("w2boss").get("/report")
    assert page.status_code == 200, page.text
    assert f"対象期間: {week}（直近7日間" in page.text
    assert f'name="from" value="{today - timedelta(days=6)}"' in page.text and f'name="to" value="{today}"' in page.text
    accesses, denied = _cell(page.text, "目的ごとの利用"), _cell(page.text, "拒否された操作")
    assert "持出し：応対品質の向上: 許可 " in accesses, accesses
    assert "画面へのサインイン 1" in denied and "検索 1" in denied, denied
    for raw in ("export", "quality", "allowed", "console-signin", "find"):
        assert raw not in accesses + denied, (raw, accesses, denied)
    assert "応対品質の向上 " in _cell(page.text, "持出し")
    english = served.client("w2boss")
    english.client.cookies.set("lang", "en")
    page = english.get("/report").text
    assert f"Period: {week} (the last seven days" in page
    assert "exported: Quality of response: allowed " in _cell(page, "Accesses by purpose")
    assert "console sign-in 1" in _cell(page, "Refused attempts") and "searched 1" in _cell(page, "Refused attempts")
    asked = served.client("w2boss").get(f"/report?from={today}&to={today}").text
    assert f"対象期間: {today} — {today}</p>" in asked  # a period asked for is not called the last seven days


def test_a_name_the_console_does_not_know_is_shown_as_it_is() -> None:
    from console import labels

    assert labels.action("ja", "frobnicate") == "frobnicate"
    assert labels.access("ja", "export: 苦情対応") == "持出し：苦情対応"
    assert labels.result("ja", "denied: not yours") == "拒否: not yours" and labels.result("en", "weird") == "weird"
    assert labels.access("en", "provide: law") == "provided: Based on laws and regulations (Art. 69(1))"


# -- the audit page -------------------------------------------------------------------------------------


def test_the_audit_page_shows_a_search_of_many_recordings_in_a_short_line(served_long: Served) -> None:
    """A find's detail was its whole JSON with every recording id (a cell many lines tall): now a
    summary with the filters as their kinds, the count and the first three ids, the JSON behind
    a <details> element."""
    boss = served_long.client("w2boss")
    assert boss.get("/search", params={"min_duration": "1"}).status_code == 200
    [row] = [e for e in served_long.audit("find") if e.user == "w2boss"]
    ids = row.detail["recordings"]
    assert len(ids) > 3, row.detail
    page = boss.get("/audit", params={"action": "find", "user": "w2boss"})
    assert page.status_code == 200
    [cells] = re.findall(r'<td class="action" data-action="find">検索</td>(.*?)</tr>', page.text, re.S)
    shown, full = re.fullmatch(r'.*<td class="detail">(.*?)<details><summary>[^<]*</summary>'
                               r'<pre>(.*?)</pre></details></td>', cells, re.S).groups()
    assert "<td>許可</td>" in cells
    assert len(shown) < 250, shown
    assert f"ほか {len(ids) - 3} 件" in shown and ", ".join(ids[:3]) in shown and ids[3] not in shown
    assert "条件：通話時間（以上）" in shown and f"{row.detail['count']} 件" in shown and "min_duration" not in shown
    assert all(i in full for i in ids)  # the whole detail is one click away
