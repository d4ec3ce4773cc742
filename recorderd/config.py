"""Site configuration: one typed schema, read with ``yaml.safe_load``, every error naming the file,
the key path and the bad value (``dids.yaml: dids[3].number: "044-200-39x9" is not a phone number``).

Relative paths (``store.path``, ``dids_file``, ``vault.key_file``) are taken relative to the file
that names them. A file is read once through one descriptor, at most ``MAX_FILE_BYTES``, and must be
UTF-8 (a byte-order mark is allowed): Shift_JIS or UTF-16 from a Windows editor, a key given twice
(YAML would keep the last silently), nesting too deep to read, are config errors like any other.
"""
from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from capture.dids import Did, DidDirectory, parse_did, parse_user
from capture.encap import NAMES as ENCAPSULATIONS

MAX_FILE_BYTES = 1 << 20  # 11 designated numbers fit in a few KB; a site config in less

_BOMS = {b"\xef\xbb\xbf": "UTF-8", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


class ConfigError(ValueError):
    def __init__(self, file: str, key: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")
        self.file = file
        self.key = key


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


# -- value checkers: each returns the converted value or raises ValueError(message) ------------


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{_show(v)} is not a whole number")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range ({lo} to {hi})")
        return v

    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{_show(v)} is not a non-empty string")
    return v


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError(f"{_show(v)} is not a list of names")
    return v


def _networks(v: Any) -> list[str]:
    for item in _str_list(v):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{_show(item)} is not an IP network (e.g. 203.0.113.0/24)") from None
    return v


def _encapsulations(v: Any) -> list[str]:
    for item in _str_list(v):
        if item not in ENCAPSULATIONS:
            raise ValueError(f"{_show(item)} is not an encapsulation recorderd opens ({', '.join(ENCAPSULATIONS)})")
    return v


def _addresses(v: Any) -> list[str]:
    for item in _str_list(v):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"{_show(item)} is not an IP address (e.g. 198.51.100.7)") from None
    return v


def _timezone(v: Any) -> ZoneInfo:
    try:
        return ZoneInfo(_str(v))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{_show(v)} is not a known time zone (e.g. Asia/Tokyo)") from None


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"{_show(v)} is not one of {', '.join(options)}")
        return v

    return check


def _listen(v: Any) -> str:
    if v == "":
        return v
    host, _, port = str(v).rpartition(":")
    if host not in ("127.0.0.1", "::1", "[::1]", "localhost") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{_show(v)} is not a loopback address:port (e.g. 127.0.0.1:9687); metrics stay on this box")
    return v


def _host(v: Any) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{_show(v)} is not an IP address (the console listens on one address of this box)") from None


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{_show(v)} is not true or false")
    return v


# key path -> (checker, default). None as default: required.
SCHEMA: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "capture.interfaces": (_str_list, ["eth1"]),
    "capture.trunk_networks": (_networks, []),
    "capture.direction": (_choice("inbound", "unknown"), "inbound"),
    "capture.ring_timeout_s": (_int(5, 3600), 180),
    "capture.idle_timeout_s": (_int(30, 86400), 900),
    "capture.max_calls": (_int(1, 1_000_000), 10_000),
    "capture.ring_mb": (_int(2, 4096), 64),
    "capture.block_timeout_ms": (_int(1, 1000), 64),
    "capture.promiscuous": (_bool, True),
    "capture.snaplen": (_int(64, 262144), 262144),  # bytes of each frame captured; below 1518 frames are cut
    "capture.encapsulations": (_encapsulations, []),  # remote SPAN: what to open (none unless configured)
    "capture.collectors": (_addresses, []),  # and from which mirror addresses only (empty: any)
    "store.path": (_str, None),
    "store.keep_pcap": (_bool, True),
    "store.require_encrypted_volume": (_bool, True),
    "store.warn_free_percent": (_int(0, 99), 10),
    "store.critical_free_mb": (_int(0, 1_000_000), 512),
    "retention.days": (_int(1, 3650), 14),
    "retention.timezone": (_timezone, "Asia/Tokyo"),
    "retention.anchor": (_choice("start", "end"), "start"),
    "dids_file": (_str, "dids.yaml"),
    "vault.key_file": (_str, "master.key"),
    "logging.level": (_choice("debug", "info", "warning", "error"), "info"),
    "logging.stats_interval_s": (_int(10, 86400), 300),
    "metrics.listen": (_listen, ""),
    "control.socket": (_str, "/run/recorderd/control.sock"),
    "roles.manager_group": (_str, "recorder-manager"),
    "roles.staff_group": (_str, "recorder-staff"),
    "roles.technician_group": (_str, "recorder-technician"),
    "roles.auditor_group": (_str, "recorder-auditor"),
    "export.expiry_days": (_int(1, 365), 7),
    "audit.retention_days": (_int(30, 36500), 365),
    "console.user": (_str, "recorderd-console"),  # the only uid the daemon lets act for a signed-in person
    "console.listen": (_host, "127.0.0.1"),  # the box's LAN address on a site; loopback for make run
    "console.port": (_int(1, 65535), 8443),
    "console.tls_cert": (_str, "/etc/recorderd/console/cert.pem"),
    "console.tls_key": (_str, "/etc/recorderd/console/key.pem"),
    "console.idle_timeout_min": (_int(1, 240), 15),
    "console.absolute_timeout_h": (_int(1, 24), 8),
    "console.lockout_failures": (_int(1, 100), 5),
    "console.lockout_min": (_int(1, 1440), 15),
}
PATH_KEYS = ("store.path", "dids_file", "vault.key_file", "console.tls_cert", "console.tls_key")


@dataclass(frozen=True)
class Config:
    file: str
    values: dict[str, Any]
    did_directory: DidDirectory | None
    dids_error: ConfigError | None = None  # the DID file on disk is broken (``load(..., dids_optional=True)``)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def dids(self) -> DidDirectory:
        """The designated numbers from the file on disk; its error when that file is broken."""
        if self.did_directory is None:
            raise self.dids_error or ConfigError(os.path.basename(self.values["dids_file"]), "", "not read")
        return self.did_directory

    @property
    def store_path(self) -> str:
        return self.values["store.path"]

    @property
    def tz(self) -> ZoneInfo:
        return self.values["retention.timezone"]


def read_text(path: str) -> str:
    """A config file's text: opened once (a FIFO or device is refused without waiting on it), at most
    MAX_FILE_BYTES, UTF-8 with or without a byte-order mark."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(name, "", "is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(name, "", f"is {st.st_size} bytes, more than a config file may be ({MAX_FILE_BYTES >> 20} MiB)")
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:  # it grew while we read
        raise ConfigError(name, "", f"is more than a config file may be ({MAX_FILE_BYTES >> 20} MiB)")
    return decode(name, data)


def decode(name: str, data: bytes) -> str:
    """UTF-8 (a UTF-8 byte-order mark is dropped); anything else is an error naming the byte offset."""
    skipped = 0
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            if encoding != "UTF-8":
                raise ConfigError(name, "", f"is {encoding} (byte-order mark at byte 0), not UTF-8: save it as UTF-8")
            skipped = len(bom)
            break
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(name, "", f"not UTF-8 text: a NUL byte at byte {nul} (UTF-16 without a byte-order mark?): "
                                    "save it as UTF-8")
    try:
        text = data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skipped + exc.start  # in the file as it is on disk
        line = data.count(b"\n", 0, at) + 1
        raise ConfigError(name, "", f"not UTF-8 at byte {at} (line {line}): save it as UTF-8 "
                                    "(Shift_JIS and UTF-16 are not read)") from None
    return text


class _Loader(yaml.SafeLoader):
    pass


def _read_yaml(path: str) -> Any:
    name = os.path.basename(path)
    text = read_text(path)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _refuse_duplicates(name, node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(name, "", f"not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(name, "", "not read: nested too deeply") from None


def _refuse_duplicates(name: str, root: yaml.Node) -> None:
    """A key given twice in one mapping is refused (YAML would keep the last one silently). Each node
    is visited once, so aliases (and YAML bombs made of them) cost nothing more."""
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = (key_node.tag, key_node.value)
                    where = f"{path}.{key_node.value}" if path else str(key_node.value)
                    line = key_node.start_mark.line + 1
                    if key in keys and key_node.value != "<<":
                        raise ConfigError(name, where, f"is given twice (lines {keys[key]} and {line}): "
                                                       "YAML would silently keep the last one; remove one")
                    keys[key] = line
                else:
                    where = path
                todo.append((value_node, where))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def _flatten(data: dict[str, Any], prefix: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + ".", name))
        else:
            out[path] = value
    return out


def load(path: str, *, dids_optional: bool = False) -> Config:
    """Read and validate the site config and the DID file it names. With ``dids_optional`` a broken
    DID file does not stop the rest (``recorderctl``: the running service keeps its own list); the
    config then raises its error only where the list is used (``Config.dids``)."""
    path = os.path.abspath(path)
    name = os.path.basename(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(name, "", "must be a mapping of settings")
    flat = _flatten(data, "", name)
    for key in flat:
        if key not in SCHEMA:
            raise ConfigError(name, key, "unknown setting")
    values: dict[str, Any] = {}
    for key, (check, default) in SCHEMA.items():
        if key not in flat:
            if default is None:
                raise ConfigError(name, key, "is required")
            value = default
        else:
            value = flat[key]
        try:
            values[key] = check(value)
        except ValueError as exc:
            raise ConfigError(name, key, str(exc)) from None
    if values["capture.direction"] == "unknown" and values["capture.trunk_networks"]:
        raise ConfigError(name, "capture.direction", '"unknown" while capture.trunk_networks names the trunk side: '
                                                     "remove capture.direction (calls are inbound when they come from the trunk)")
    base = os.path.dirname(path)
    for key in PATH_KEYS:
        values[key] = os.path.normpath(os.path.join(base, values[key]))
    if not dids_optional:
        return Config(path, values, load_dids(values["dids_file"]))
    try:
        return Config(path, values, load_dids(values["dids_file"]))
    except ConfigError as exc:
        return Config(path, values, None, exc)


def direction_problem(config: Config) -> str | None:
    """Why the live service may not start as configured (None: it may). With no trunk networks it
    cannot tell an inbound call from an internal or outbound one (Art. 2(1): inbound only)."""
    if config["capture.trunk_networks"] or config["capture.direction"] == "unknown":
        return None
    return (f"{os.path.basename(config.file)}: capture.trunk_networks: is empty, so inbound calls cannot be told from "
            "internal and outbound ones (only inbound calls may be recorded, Art. 2(1)): set it to the trunk "
            "side's networks, e.g. [203.0.113.0/24], or set capture.direction: unknown to record every call "
            "to a designated number, internal and outbound ones too")


COLLECTORS_ANY = ("encapsulated frames are opened from any address: set capture.collectors to the mirror's "
                  "addresses")


def collectors_warning(config: Config) -> str | None:
    """What the service and replay warn once at start (EVENT=capture-collectors-any), or None: a
    remote mirror's encapsulations are opened from any sender, so any host that reaches the capture
    port could send frames that claim to come from the trunk or the PBX."""
    return COLLECTORS_ANY if config["capture.encapsulations"] and not config["capture.collectors"] else None


def load_dids(path: str) -> DidDirectory:
    """Read the designated numbers; any problem names the file, entry and value."""
    name = os.path.basename(path)
    data = _read_yaml(path)
    if not isinstance(data, dict) or "dids" not in data:
        raise ConfigError(name, "dids", "is required (a list of {number, label})")
    entries = data["dids"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(name, "dids", "must be a non-empty list: with no designated number nothing is recorded")
    extra = set(data) - {"dids"}
    if extra:
        raise ConfigError(name, sorted(extra)[0], "unknown setting")
    dids: list[Did] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"dids[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(name, where, "must be a mapping with number and label")
        for key in entry:
            if key not in ("number", "label", "kind"):
                raise ConfigError(name, f"{where}.{key}", "unknown setting")
        number, label, kind = entry.get("number"), entry.get("label"), entry.get("kind", "auto")
        if kind not in ("auto", "user"):
            raise ConfigError(name, f"{where}.kind", f"{_show(kind)} is not auto or user")
        if isinstance(number, int) and not isinstance(number, bool):
            raise ConfigError(
                name, f"{where}.number", f'is unquoted (YAML read it as the integer {number}): quote it, e.g. "044-200-3939"'
            )
        if not isinstance(number, str):
            raise ConfigError(name, f"{where}.number", f"{_show(number)} is not a phone number")
        try:
            key = parse_did(number) if kind == "auto" else parse_user(number)
        except ValueError as exc:
            raise ConfigError(name, f"{where}.number", f"{_show(number)} {exc}") from None
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(name, f"{where}.label", f"{_show(label)} is not a non-empty label")
        if key in seen:
            raise ConfigError(name, f"{where}.number", f"{_show(number)} repeats dids[{seen[key]}]")
        seen[key] = i
        dids.append(Did(number, label.strip(), key))
    return DidDirectory(dids)
