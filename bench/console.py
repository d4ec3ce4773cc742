"""The console as a browser sees it, over HTTPS (issue 12's targets): search over 200,000 indexed
recordings p95 <= 100 ms in the console's own timing, the first audio byte of a one-hour recording
<= 300 ms after the purpose is chosen, and every page without audio <= 200 KB.

``python bench/console.py [ROWS] [RUNS]`` (defaults 200,000 and 20; JSON out). A site in a temporary
folder as bench/console_audio.py makes one (the user running the bench is the console's user and has
every role); ROWS recordings indexed by the real ``Index.add`` (bench/console_search.py's ``fill``)
and one recording of an hour kept through ``Store.keep`` (bench/console_audio.py's ``keep_hour``);
the daemon's control server on the store (``python -m recorderd.demo control``, what ``make run``
serves without CAP_NET_RAW: the same dispatcher, role checks and audit as the service's); the real
console app on uvicorn with TLS, configured as ``recorderd-console`` configures it, in its own
process. Only the password check differs: the bench signs in with a random password of its own
instead of asking PAM (PAM's time is not what is measured). It signs in as the user running it, or,
run as root (a system account, which the console refuses), as a person's account it makes for the
run and removes after (:class:`Person`).

Timings: "console" is the console's own, from its access log (``... GET /search 200 12 ms``: from the
request's arrival to the end of its answer); "client" is httpx's, from the request sent to the
answer read, TLS connection kept alive. Audio: POST /recordings/ID/play (purpose quality) then
GET /audio/TICKET with ``Range: bytes=0-``, timed from the POST's start to the first byte of
audio read. Page sizes: each page's HTML plus the static files it links, fetched once.
"""
from __future__ import annotations

import getpass
import grp
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this file is bench/console.py: the console package must come from the checkout, not be this file
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"] + [str(ROOT / "bench")]

import yaml  # noqa: E402

PASSWORD_ENV = "RECORDERD_BENCH_CONSOLE_PASSWORD"
PERSON_ENV = "RECORDERD_BENCH_CONSOLE_PERSON"
START_WAIT_S = 120


def p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20)[18], 1) if len(values) >= 2 else round(values[0], 1)


def serve(config_path: str) -> int:
    """The console app on uvicorn, as console/server.py runs it, signing in the bench's user alone."""
    import hmac
    import logging

    import uvicorn

    from console.app import create_app
    from console.server import uvicorn_config
    from recorderd.config import load

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    password, me = os.environ.pop(PASSWORD_ENV).encode(), os.environ.pop(PERSON_ENV)
    config = load(config_path, dids_optional=True)

    def authenticate(user: str, given: str) -> bool:
        return user == me and hmac.compare_digest(given.encode(), password)

    app = create_app(config, authenticate=authenticate)
    uvicorn.Server(uvicorn_config(app, config)).run()  # the unit's settings: no proxy headers believed, head deadline
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Person:
    """Who signs in: the bench's user, or, when that is root or another system account (which the
    console refuses, as it refuses them to everyone: recorderd/ops/signin.py), a person's account
    made for the run (``useradd``, uid from UID_MIN up, no home, no shell, no password: only the
    bench's own password check lets it in) with a group of its own that has every role; both
    removed when the run ends."""

    def __init__(self) -> None:
        from recorderd.ops.signin import system_account

        self.made = system_account(os.getuid())
        if not self.made:
            self.name, self.group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
            return
        self.name = self.group = f"rdbench{os.getpid()}"
        subprocess.run(["groupadd", self.group], check=True, capture_output=True)
        try:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--gid", self.group,
                            self.name], check=True, capture_output=True)
        except BaseException:
            subprocess.run(["groupdel", self.group], capture_output=True)
            raise

    def remove(self) -> None:
        if self.made:
            subprocess.run(["userdel", self.name], capture_output=True)
            subprocess.run(["groupdel", self.group], capture_output=True)


def site(root: Path, group: str | None = None) -> tuple[Path, Path]:
    from console_audio import make_site

    from recorderd.demo import tls_pair

    config_path = make_site(root, group)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    cert, key = root / "tls" / "cert.pem", root / "tls" / "key.pem"
    tls_pair(str(cert), str(key))
    config["console"].update(listen="127.0.0.1", port=_free_port(), tls_cert=str(cert), tls_key=str(key))
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return config_path, cert


def fill_index(config_path: Path, rows: int) -> tuple[list[Any], float]:
    from console_search import fill

    from recorderd.config import load
    from recorderd.service import open_store

    store = open_store(load(str(config_path))).open()
    try:
        t0 = time.perf_counter()
        made = fill(store, rows)
        store.db().db.execute("ANALYZE")
        return made, time.perf_counter() - t0
    finally:
        store.close()


class Log:
    """The console's access log (its stderr): the ms of each answer, in order, per method and path."""

    LINE = re.compile(r"console\.access: \S+ (\w+) (\S+) (\d+) (\d+) ms")

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, 0

    def new(self) -> list[tuple[str, str, int, float]]:
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        out = [m.groups() for m in map(self.LINE.search, lines[self.seen:]) if m]
        self.seen = len(lines)
        return [(method, path, int(status), float(ms)) for method, path, status, ms in out]

    def wait_for(self, n: int) -> list[tuple[str, str, int, float]]:
        got: list[tuple[str, str, int, float]] = []
        deadline = time.monotonic() + 5
        while len(got) < n and time.monotonic() < deadline:
            got += self.new()
            if len(got) < n:
                time.sleep(0.02)
        return got


def searches(made: list[Any]) -> dict[str, dict[str, str]]:
    """Typical searches, as the search form sends them (bench/console_search.py's set, in URL form)."""
    import random

    from console_search import DIDS, END, other_form

    some = random.Random(2).choice(made)
    digits = "".join(c for c in some.caller if c.isdigit())

    def day(offset_days: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(END - offset_days * 86400 + 9 * 3600))

    return {
        "newest (no filter)": {},
        "one day": {"from": day(3), "to": day(2)},
        "last week, one DID": {"from": day(7), "did": DIDS[0][0]},
        "DID by label": {"did": DIDS[3][1]},
        "caller exact": {"caller": some.caller},
        "caller exact, other form": {"caller": other_form(some.caller)},
        "caller last 4 digits": {"caller": digits[-4:], "match": "ends"},
        "caller last 8 digits, a month": {"caller": digits[-8:], "match": "ends", "from": day(30)},
        "longer than 10 min": {"min_duration": "600"},
        "short calls, last week": {"max_duration": "10", "from": day(7)},
        "incomplete": {"state": "incomplete"},
        "on hold": {"on_hold": "1"},
        "page 100 of everything": {"page": "100"},
    }


def page_size(client: Any, path: str, static: dict[str, int]) -> dict[str, Any]:
    answer = client.get(path)
    html = answer.content
    linked = sorted(set(re.findall(rb'(?:href|src)="(/static/[^"]+)"', html)))
    for asset in linked:
        name = asset.decode()
        if name not in static:
            static[name] = len(client.get(name).content)
    total = len(html) + sum(static[a.decode()] for a in linked)
    return {"status": answer.status_code, "html_bytes": len(html), "with_static_bytes": total}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve(argv[1])
    import logging

    import httpx
    from console_audio import keep_hour

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    rows = int(argv[0]) if argv else 200_000
    runs = int(argv[1]) if len(argv) > 1 else 20
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    procs: list[subprocess.Popen[bytes]] = []
    person = Person()
    try:
        config_path, cert = site(tmp, person.group)
        made, build_s = fill_index(config_path, rows)
        hour = keep_hour(config_path)
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        port = config["console"]["port"]
        password = secrets.token_urlsafe(24)
        log_path = tmp / "console.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(tmp / "daemon.log", "wb") as daemon_log:
            procs.append(subprocess.Popen([sys.executable, "-m", "recorderd.demo", "control", str(config_path)],
                                          cwd=ROOT, env=env, stdout=daemon_log, stderr=subprocess.STDOUT))
        with open(log_path, "wb") as console_log:
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(config_path)],
                                          cwd=ROOT, env={**env, PASSWORD_ENV: password, PERSON_ENV: person.name}, stdout=console_log,
                                          stderr=subprocess.STDOUT))
        base = f"https://localhost:{port}"
        client = httpx.Client(base_url=base, verify=str(cert), follow_redirects=False, timeout=60)
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                if client.get("/signin").status_code == 200 and (tmp / "control.sock").exists():
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the daemon or the console did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.2)
        signed = client.post("/signin", data={"user": person.name, "password": password})
        if signed.status_code != 303:
            raise RuntimeError(f"sign-in: {signed.status_code}")
        log = Log(log_path)
        log.new()

        results: dict[str, Any] = {}
        console_all: list[float] = []
        client_all: list[float] = []
        for name, query in searches(made).items():
            client.get("/search", params=query)  # once before timing: a first page of labels, a cold cache
            log.new()
            mine: list[float] = []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = client.get("/search", params=query)
                mine.append((time.perf_counter() - t0) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"search {name}: {answer.status_code}")
            theirs = [ms for method, path, _s, ms in log.wait_for(runs) if path == "/search"]
            console_all += theirs
            client_all += mine
            results[name] = {"console_p50_ms": statistics.median(theirs), "console_p95_ms": p95(theirs),
                             "client_p50_ms": round(statistics.median(mine), 1), "client_p95_ms": p95(mine)}
        search = {"rows": rows, "build_s": round(build_s, 1), "runs_per_query": runs,
                  "console_p50_ms": statistics.median(console_all), "console_p95_ms": p95(console_all),
                  "client_p50_ms": round(statistics.median(client_all), 1), "client_p95_ms": p95(client_all),
                  "queries": results}

        page = client.get(f"/recordings/{hour}")
        csrf = re.search(r'data-csrf="([^"]+)"', page.text)
        if page.status_code != 200 or not csrf:
            raise RuntimeError(f"recording page: {page.status_code}")
        first_byte: list[float] = []
        audio_console: list[float] = []
        for _ in range(runs):
            log.new()
            t0 = time.perf_counter()
            ticket = client.post(f"/recordings/{hour}/play", data={"purpose": "quality", "csrf": csrf.group(1)})
            if ticket.status_code != 200:
                raise RuntimeError(f"play: {ticket.status_code} {ticket.text[:200]}")
            with client.stream("GET", ticket.json()["audio"], headers={"Range": "bytes=0-"}) as audio:
                chunk = next(audio.iter_raw(), b"")
                first_byte.append((time.perf_counter() - t0) * 1000)
                if audio.status_code != 206 or not chunk.startswith(b"RIFF"):
                    raise RuntimeError(f"audio: {audio.status_code}")
            got = log.wait_for(2)
            audio_console.append(sum(ms for _m, path, _s, ms in got if path.startswith(("/recordings/", "/audio/"))))
        audio_result = {"recording_s": 3600, "runs": runs, "first_byte_p50_ms": round(statistics.median(first_byte), 1),
                        "first_byte_p95_ms": p95(first_byte), "console_play_plus_audio_p50_ms": statistics.median(audio_console),
                        "console_play_plus_audio_p95_ms": p95(audio_console)}

        static: dict[str, int] = {}
        some = made[0].id
        pages = {path: page_size(client, path, static) for path in (
            "/search", "/search?page=2", f"/recordings/{some}", f"/recordings/{hour}", "/status", "/notice", "/audit",
            "/requests", "/copies", "/casework", "/report")}
        anonymous = httpx.Client(base_url=base, verify=str(cert), timeout=60)
        pages["/signin"] = page_size(anonymous, "/signin", static)
        anonymous.close()
        client.close()
        print(json.dumps({
            "search": search, "audio": audio_result, "pages": pages,
            "largest_page_bytes": max(p["with_static_bytes"] for p in pages.values()),
            "targets": {"search_console_p95_ms": 100, "first_audio_byte_ms": 300, "page_bytes": 200_000},
            "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        }, ensure_ascii=False, indent=1))
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        person.remove()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
