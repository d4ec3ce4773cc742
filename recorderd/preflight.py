"""``recorderd preflight --config PATH``: is this box ready to record? Run by systemd before each
start (``ExecCondition=``), as the service user and in the service's sandbox.

It prints one line for each thing the technician still has to do (naming the SPAN port, running
``init``, a config error) and exits 1: systemd then skips the start (the unit is left inactive, not
failed, and not restarted in a loop), and ``systemctl status recorderd`` shows the condition and
these lines from the journal. Exit 0: ready, the service starts. Never a caller's number here: the
lines name settings, files and interfaces only.
"""
from __future__ import annotations

import os
import sys

from storage.store import StoreError

from . import service
from .config import Config, ConfigError, direction_problem, load

READY = 0
NOT_READY = 1  # ExecCondition: 1-254 skip the start; 255 or a signal would fail the unit
SYS_NET = "/sys/class/net"


def problems(config_path: str) -> list[str]:
    """What is missing before the service may capture, in the order the technician fixes it."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        return [f"config error: {exc}"]
    found = _interface_problems(config) + _direction_problems(config)
    store = _store_problems(config)
    return found + (store or _volume_problems(config))


def _interface_problems(config: Config) -> list[str]:
    names = config["capture.interfaces"]
    if not names:
        return [f"no SPAN interface named: set capture.interfaces in {config.file} to the mirror port "
                f"(interfaces on this box: {_interfaces()})"]
    return [f"capture.interfaces: {name!r} is not an interface on this box (interfaces here: {_interfaces()}): "
            f"set the SPAN port in {config.file}" for name in names if not _is_interface(name)]


def _direction_problems(config: Config) -> list[str]:
    problem = direction_problem(config)  # no trunk networks: inbound calls cannot be told apart
    return [problem] if problem else []


def _volume_problems(config: Config) -> list[str]:
    if not config["store.require_encrypted_volume"]:
        return []  # the daemon says it loudly at each start
    volume = service.store_volume(config)
    if volume is not None and volume.encrypted:
        return []
    how = volume.how if volume is not None else "not readable"
    return [f"the store {config.store_path} is not on an encrypted volume ({how}): put it on a LUKS volume "
            f"(cryptsetup luksFormat), or set store.require_encrypted_volume: false in {config.file} if the site "
            "has decided otherwise"]


def _store_problems(config: Config) -> list[str]:
    store = service.open_store(config)
    if not os.path.exists(store.index_path):
        return [f"the store {store.root} is not initialised: run "
                f"'sudo -u recorderd recorderctl --config {config.file} init'"]
    try:
        store.check_key()
    except StoreError as exc:
        return [f"the master key is not usable: {exc}"]
    return []


def _is_interface(name: str) -> bool:
    return "/" not in name and name not in (".", "..") and os.path.isdir(os.path.join(SYS_NET, name))


def _interfaces() -> str:
    try:
        names = sorted(n for n in os.listdir(SYS_NET) if n != "lo")
    except OSError:
        return "unknown"
    return ", ".join(names) or "none"


def main(config_path: str) -> int:
    service.set_umask()
    found = problems(config_path)
    for line in found:
        print(f"recorderd: not starting: {line}", file=sys.stderr, flush=True)
    if found:
        print("recorderd: capture stays off until this is done; then: systemctl start recorderd",
              file=sys.stderr, flush=True)
        return NOT_READY
    print("recorderd: ready to record", flush=True)
    return READY
