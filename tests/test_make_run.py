"""``make run`` as the README tells a newcomer to use it: the demo day recorded, then the daemon and
the console on https://localhost:PORT/ until Ctrl-C. Run in a copy of the checkout (its own var/, so
a developer's demo store is not touched) with the checkout's venv, on a free port; root signs in as
the demo manager through the real PAM, anyone else gets the PAM refusal of a wrong password. Ctrl-C
is SIGINT to make's process group, as a terminal sends it; both processes must then end."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration
START_S = 300  # the venv is built; the demo day's replay is most of it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (dest / source.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / source.relative_to(ROOT))
    for built in (ROOT / "capture").glob("_fastpath*.so"):  # the C fast path as make venv built it
        shutil.copy2(built, dest / "capture" / built.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):  # type: ignore[no-untyped-def]
        return None


def _opener(cert: Path) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=str(cert))  # the pair make run made for localhost
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _Stay)


def _go(opener: urllib.request.OpenerDirector, url: str, form: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    data = urllib.parse.urlencode(form).encode() if form else None
    try:
        return opener.open(urllib.request.Request(url, data=data), timeout=30)
    except urllib.error.HTTPError as exc:
        return exc


def test_make_run_records_the_demo_serves_the_console_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    for tool in ("make", "openssl"):
        if not shutil.which(tool):
            pytest.skip(f"make run needs {tool} (make deps installs it)")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "recorderd-console").exists():
        pytest.skip("the venv has no recorderd-console: run make venv")
    root = os.geteuid() == 0
    if root:
        for tool in ("useradd", "chpasswd", "runuser"):
            if not shutil.which(tool):
                pytest.skip(f"make run as root makes the demo users with {tool}")
    from recorderd import demo

    made_users = [u for u in demo.DEMO_USERS.values() if root and not _user_exists(u)]
    tree = tmp_path / "tree"
    _copy_tree(tree)
    stamp = tmp_path / "venv-built"
    stamp.touch()  # the checkout's venv is built: make must not build it again (nor point it here)
    port = _free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}", f"STAMP={stamp}", f"FASTPATH={stamp}", f"DEMO_PORT={port}"],
        cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out: list[str] = []
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + START_S
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            m = re.search(r"daemon pid (\d+), console pid (\d+); Ctrl-C stops both", line)
            if m:
                pids = {"daemon": int(m.group(1)), "console": int(m.group(2))}
                break
        text = "".join(out)
        assert pids, f"make run did not say both were running:\n{text[-3000:]}"
        assert re.search(r"replayed \d+ packets from 1 file\(s\): [1-9]\d* recorded", text), text[-3000:]
        assert f"https://localhost:{port}/" in text
        cert = tree / "var" / "console" / "cert.pem"
        opener = _opener(cert)
        base = f"https://localhost:{port}"
        page = _go(opener, base + "/signin")
        assert page.status == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
        key = tree / "var" / "console" / "key.pem"
        assert key.stat().st_mode & 0o077 == 0, oct(key.stat().st_mode)
        if root:
            assert f"with the password {demo.DEMO_PASSWORD}" in text
            good = _go(opener, base + "/signin", {"user": demo.DEMO_USERS["manager"], "password": demo.DEMO_PASSWORD})
            cookies = good.headers.get_all("Set-Cookie") or []
            assert good.status == 303 and any(c.startswith("recorderd_session=") for c in cookies), (good.status, cookies)
            assert good.headers["Location"] == "/search"
            staff = _go(opener, base + "/signin", {"user": demo.DEMO_USERS["staff"], "password": demo.DEMO_PASSWORD})
            assert staff.status == 303
        me = pwd.getpwuid(os.getuid()).pw_name
        bad = _go(opener, base + "/signin", {"user": me if not root else demo.DEMO_USERS["auditor"], "password": "not-the-password"})
        assert bad.status == 401 and not any(c.startswith("recorderd_session=") for c in bad.headers.get_all("Set-Cookie") or [])
        assert all(_alive(pid) for pid in pids.values())
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        rest, _ = proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
            time.sleep(0.1)
        assert not [name for name, pid in pids.items() if _alive(pid)], rest
        assert "stopping the console and the daemon" in rest
        assert not (tree / "var" / "control.sock").exists(), "the daemon left its socket"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for user in made_users:
            subprocess.run(["userdel", user], capture_output=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
