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
from .config import Config, ConfigError, load

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
    found += _store_problems(config)
    return found


def _interface_problems(config: Config) -> list[str]:
    names = config["capture.interfaces"]
    if not names:
        return [f"no SPAN interface named: set capture.interfaces in {config.file} to the mirror port "
                f"(interfaces on this box: {_interfaces()})"]  # fmt: skip
    return [f"capture.interfaces: {name!r} is not an interface on this box (interfaces here: {_interfaces()}): "
            f"set the SPAN port in {config.file}" for name in names if not _is_interface(name)]  # fmt: skip


def _direction_problems(config: Config) -> list[str]:
    # With no trunk networks the service cannot tell inbound from outbound calls; it then starts only
    # when the site says so (capture.direction: unknown), where that setting exists.
    direction = config.values.get("capture.direction")
    if config["capture.trunk_networks"] or direction in (None, "unknown"):
        return []
    return [f"capture.trunk_networks is empty: set the trunk side's networks in {config.file} "
            "(or capture.direction: unknown to record without telling inbound from outbound)"]  # fmt: skip


def _store_problems(config: Config) -> list[str]:
    store = service.open_store(config)
    if not os.path.exists(store.index_path):
        return [f"the store {store.root} is not initialised: run "
                f"'sudo -u recorderd recorderctl --config {config.file} init'"]  # fmt: skip
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
              file=sys.stderr, flush=True)  # fmt: skip
        return NOT_READY
    print("recorderd: ready to record", flush=True)
    return READY
