"""Shared helpers: a store made from a config written for the test, replay through the real CLI
entry points (in-process), and the paths of the project's and the public captures."""
from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "pcap_fixtures"
PUBLIC = Path(os.environ.get("RECORDERD_PUBLIC_PCAPS") or ROOT.parent / "shared" / "pcaps" / "public")
sys.path.insert(0, str(FIXTURES))

from recorderd import cli, ctl  # noqa: E402

# Property tests: a few hundred examples in `make test`; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs
# every parser's properties on at least 100,000 generated inputs.
settings.register_profile("default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Each site has its own control socket, and the user running the tests has every role through its
# own primary group (the role tests give a site groups of their own: a top-level key of a test's
# settings replaces the default one, as a later YAML key did). The tests' stores are not on LUKS:
# their configs opt out (store.require_encrypted_volume: false) unless a test says otherwise.
_RUNNER_GROUP = grp.getgrgid(os.getgid()).gr_name
_ROLE_GROUPS = ", ".join(f"{role}_group: {_RUNNER_GROUP}" for role in ("manager", "staff", "technician", "auditor"))
SITE_DEFAULTS = f"control: {{socket: control.sock}}\nroles: {{{_ROLE_GROUPS}}}\n"
# The fixtures include remote mirrors' captures (encap-*): a site opens every encapsulation (the
# shipped default opens none) unless a test's own capture settings say otherwise.
SITE_DEFAULTS += "capture: {encapsulations: [erspan, gretap, vxlan, tzsp]}\n"


def _merged(*texts: str) -> dict:
    out: dict = {}
    for text in texts:
        out.update(yaml.safe_load(text) or {})
    out["store"].setdefault("require_encrypted_volume", False)
    return out


class Site:
    """A config + store in a temporary folder, driven through recorderd / recorderctl."""

    def __init__(self, root: Path, dids: list[dict] | None = None, settings: str = "") -> None:
        self.root = root
        self.config = root / "recorderd.yaml"
        if dids is None:
            shutil.copy(ROOT / "config" / "dids.yaml", root / "dids.yaml")
        else:
            (root / "dids.yaml").write_text(json.dumps({"dids": dids}, ensure_ascii=False), encoding="utf-8")
        config = _merged("store: {path: store}\ndids_file: dids.yaml\n", SITE_DEFAULTS, settings)
        self.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        self.store = root / "store"

    def ctl(self, *args: str) -> int:
        return ctl.main(["--config", str(self.config), *args])

    def init(self) -> Site:
        assert self.ctl("init") == 0
        return self

    def replay(self, *pcaps: str | Path) -> int:
        return cli.main(["replay", *map(str, pcaps), "--config", str(self.config)])

    def list(self, capsys: pytest.CaptureFixture[str]) -> list[dict]:
        capsys.readouterr()
        assert self.ctl("list", "--json") == 0
        return json.loads(capsys.readouterr().out)

    def stored_files(self) -> list[Path]:
        """The encrypted recordings (WAVs) in the store."""
        return sorted(p for p in (self.store / "recordings").rglob("*.rdv") if not p.name.endswith(".pcap.rdv"))

    def evidence_files(self) -> list[Path]:
        """The encrypted evidence pcaps in the store."""
        return sorted((self.store / "recordings").rglob("*.pcap.rdv"))

    def spool_files(self) -> list[Path]:
        return sorted((self.store / "spool").iterdir())

    def stored_path(self, recording: dict) -> Path:
        matches = [p for p in self.stored_files() if p.stem == recording["id"]]
        assert len(matches) == 1
        return matches[0]

    def open_store(self):  # type: ignore[no-untyped-def]
        from recorderd.config import load
        from recorderd.service import open_store

        return open_store(load(str(self.config))).open()

    def wav_bytes(self, recording: dict) -> bytes:
        """The recording's WAV, decrypted by the store (no export, so no audit row)."""
        store = self.open_store()
        try:
            return b"".join(store.reading.plaintext(store.reading.get(recording["id"])))
        finally:
            store.close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` mounted at ``path`` (a full disk on demand); needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path).init()


def public_capture(name: str) -> Path:
    path = PUBLIC / name
    if not path.exists():
        pytest.skip(f"public capture {name} not present (../shared/pcaps/public is absent)")
    return path


def needs_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package; `make deps` installs it as root)")
    if name == "faketime":
        clear_stale_faketime()
    return found


def clear_stale_faketime(shm: str = "/dev/shm") -> None:
    """The faketime wrapper makes a POSIX semaphore and shared memory named by its PID
    (``sem.faketime_sem_PID``, ``faketime_shm_PID``) and removes them when it exits; a wrapper that
    was killed (a test's timeout, a CI run stopped) leaves them, and a later wrapper that gets the
    same PID then fails with "sem_open: File exists". Those of processes no longer alive are removed
    (a running wrapper's are left: no new process can have its PID)."""
    try:
        names = os.listdir(shm)
    except OSError:
        return
    for entry in names:
        prefix, _, pid = entry.rpartition("_")
        if prefix not in ("sem.faketime_sem", "faketime_shm") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(shm, entry))


USER_TOOLS = ("useradd", "groupadd", "userdel", "groupdel")  # what a test with real Unix users needs


def needs_root(why: str, *tools: str) -> None:
    """Skip unless root, saying ``why`` root is needed, and unless each of ``tools`` is installed."""
    if os.geteuid() != 0:
        pytest.skip(f"{why}: needs root")
    for tool in tools:
        needs_tool(tool)


def python_for(user: str) -> list[str]:
    """An interpreter a test's Unix user may run: the venv's, or (when it lives in root's home) the
    system python3 of the same version with the venv's packages on PYTHONPATH."""
    site_packages = sysconfig.get_paths()["purelib"]
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    for cand in ([sys.executable], ["env", f"PYTHONPATH={ROOT}:{site_packages}", f"/usr/bin/python{minor}"]):
        probe = ["runuser", "-u", user, "--", *cand, "-c", "import recorderd.ctl, cryptography, yaml"]
        if subprocess.run(probe, capture_output=True, cwd="/").returncode == 0:
            return cand
    pytest.skip(f"no Python interpreter that user {user} may run can import recorderd (the venv's is {sys.executable})")


os.environ.pop("JOURNAL_STREAM", None)
os.environ.pop("INVOCATION_ID", None)
