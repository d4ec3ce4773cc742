"""``make run``: the demo store, the daemon and the web console on https://localhost:8443/.

``python -m recorderd.demo CONFIG OUT`` writes the demo config from the bundled one: the control
socket beside the demo store instead of in /run, the trunk side of the bundled captures, the store on
a plain disk allowed, the console on loopback with its TLS pair under var/console/ and run by whoever
runs the demo (``console.user``). Roles: run as root, the demo users' groups (``demo-manager`` is in
``demo-manager``, ...: see :data:`DEMO_USERS`); otherwise that user's group is given every role
(recorderctl refuses a user in no role group), and one signs in to the console as oneself.

``python -m recorderd.demo up OUT`` (after ``init`` and the replay of the demo day) makes the TLS
pair for localhost when there is none, the demo users when root (password :data:`DEMO_PASSWORD`),
starts the daemon (root: ``recorderd`` itself, capturing on loopback; otherwise the daemon's control
socket alone, on the same store: live capture needs CAP_NET_RAW) and the console, lists the
recordings, and keeps both running until Ctrl-C (SIGINT or SIGTERM), then stops both and waits for them.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import yaml

from .config import load

ROLES = ("manager", "staff", "technician", "auditor")
# The carrier side of the bundled captures (pcap_fixtures/generator.py: TRUNK and the IPv6 call's
# SBC): calls from there are inbound, the rest (an extension dialling out) are not recorded.
DEMO_TRUNK = ["203.0.113.0/24", "2001:db8:5::/48"]
# Run as root, the demo makes one Unix user per role (its own group, named as the user); the console
# signs them in through the box's real PAM. A demo password on a demo box: never on a site.
DEMO_USERS = {role: f"demo-{role}" for role in ROLES}
DEMO_PASSWORD = "demo-kawasaki-2026"
CONSOLE_PORT = 8443
START_WAIT_S = 60


def main(argv: list[str]) -> int:
    if argv and argv[0] == "up":
        return up(argv[1])
    if argv and argv[0] == "control":
        return control_only(argv[1])
    source, out, *port = argv  # the console's port: 8443 unless given (make run DEMO_PORT=...)
    config = load(source)
    folder = os.path.dirname(os.path.abspath(out))
    root = os.geteuid() == 0
    if root:
        roles = {f"{role}_group": DEMO_USERS[role] for role in ROLES}
    else:
        group = grp.getgrgid(os.getgid()).gr_name
        roles = {f"{role}_group": group for role in ROLES}
    demo = {
        "capture": {
            "trunk_networks": config["capture.trunk_networks"] or DEMO_TRUNK,
            # root: the real service, on loopback (nothing there but the box's own traffic)
            "interfaces": ["lo"],
        },
        "store": {"path": config.store_path, "require_encrypted_volume": False},
        "dids_file": config["dids_file"],
        "vault": {"key_file": config["vault.key_file"]},
        "control": {"socket": os.path.join(folder, "control.sock")},
        "roles": roles,
        "console": {
            "user": pwd.getpwuid(os.geteuid()).pw_name,
            "listen": "127.0.0.1",
            "port": int(port[0]) if port else CONSOLE_PORT,
            "tls_cert": os.path.join(folder, "console", "cert.pem"),
            "tls_key": os.path.join(folder, "console", "key.pem"),
        },
    }
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"# Made by `make run` from {source} for the user running the demo. Do not install.\n")
        yaml.safe_dump(demo, f, allow_unicode=True, sort_keys=False)
    return 0


# -- make run's processes ----------------------------------------------------------------------------


def tls_pair(cert: str, key: str) -> None:
    """A self-signed pair for localhost (openssl), made once; the key readable by its owner only."""
    if os.path.exists(cert) and os.path.exists(key):
        return
    os.makedirs(os.path.dirname(cert), mode=0o700, exist_ok=True)
    old = os.umask(0o077)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "825", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
    finally:
        os.umask(old)


def demo_users() -> list[str]:
    """The demo's Unix users (root only), each made once with the demo password."""
    made = []
    for user in DEMO_USERS.values():
        try:
            pwd.getpwnam(user)
            continue
        except KeyError:
            pass
        subprocess.run(["useradd", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--comment", "recorderd make run demo", user], check=True, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{user}:{DEMO_PASSWORD}\n", text=True, check=True, capture_output=True)
        made.append(user)
    return made


def control_only(config_path: str) -> int:
    """The daemon's control socket on the demo store, without capture (for a demo run by a user
    without CAP_NET_RAW): the same dispatcher, role checks and audit as the service's."""
    from . import control, service
    from .books import Books

    config = service.start("recorderd", config_path, mode="replay")
    if config is None:
        return 2
    server = control.ControlServer(config)
    if not server.start():
        return 1
    stop = stop_on_signals()
    try:
        with Books(config):  # the audit's pruning and journal checkpoints, as the service keeps them
            while not stop[0]:
                time.sleep(0.2)
    finally:
        server.stop()
    return 0


def _answers_tls(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, context.wrap_socket(raw) as s:
            s.sendall(b"GET /signin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _wait(what: str, ready, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} ended (exit {proc.returncode}) before it was ready")
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {START_WAIT_S} s")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up(config_path: str) -> int:
    config = load(config_path)
    bindir = os.path.dirname(sys.executable)
    root = os.geteuid() == 0
    tls_pair(config["console.tls_cert"], config["console.tls_key"])
    if root:
        made = demo_users()
        if made:
            print(f"demo users made: {', '.join(made)}")
    sock = os.path.join(os.path.dirname(config.file), config["control.socket"])
    if root:
        daemon_cmd = [os.path.join(bindir, "recorderd"), "--config", config_path]
    else:
        daemon_cmd = [sys.executable, "-m", "recorderd.demo", "control", config_path]
    procs: list[subprocess.Popen] = []
    stop = stop_on_signals()
    try:
        # their own sessions: Ctrl-C reaches this process, which stops them in order
        procs.append(subprocess.Popen(daemon_cmd, start_new_session=True))
        _wait("the daemon", lambda: os.path.exists(sock), procs[0])
        lister = ["runuser", "-u", DEMO_USERS["manager"], "--"] if root and shutil.which("runuser") else []
        subprocess.run([*lister, os.path.join(bindir, "recorderctl"), "--config", config_path, "list"], check=False)
        procs.append(subprocess.Popen([os.path.join(bindir, "recorderd-console"), "--config", config_path],
                                      start_new_session=True))
        _wait("the console", lambda: _answers_tls(config["console.port"]), procs[1])
        print(f"\nthe console: https://localhost:{config['console.port']}/  (a self-signed certificate for localhost)")
        if root:
            print("sign in as " + ", ".join(DEMO_USERS.values()) + f" with the password {DEMO_PASSWORD}")
        else:
            print(f"sign in as {pwd.getpwuid(os.getuid()).pw_name} with your own password (your group has every role)")
        print(f"daemon pid {procs[0].pid}, console pid {procs[1].pid}; Ctrl-C stops both", flush=True)
        while not stop[0]:
            if any(p.poll() is not None for p in procs):
                print("recorderd demo: a process ended by itself; stopping the other", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("stopping the console and the daemon", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"recorderd demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(list(reversed(procs)))



def stop_on_signals() -> list[bool]:
    """A flag that SIGINT (Ctrl-C) or SIGTERM sets: ``stop[0]``, read by a loop that ends cleanly."""
    stop = [False]

    def ask_stop(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)
    return stop

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
