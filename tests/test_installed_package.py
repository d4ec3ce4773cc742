"""The package as a box gets it: ``pip install .`` (not editable) into a fresh venv, run from ``/``
so nothing can come from the checkout. Every module of the checkout must import from the installed
copy, the C fast path must be built, and both commands must start. A subpackage left out of the
distribution (as ``storage.codecs`` and ``recorderd.ops`` once were) fails here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("recorderd", "capture", "storage", "console")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":  # `python -m console` runs the server: not imported here
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("installed")
    venv, tree = base / "venv", base / "tree"
    # the project's files only (what git has, or would add), never the checkout's build/ output: a
    # stale build/lib from an earlier install would hide a package the distribution leaves out
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (tree / source.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / source.relative_to(ROOT))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", str(tree)],
                          capture_output=True, text=True, timeout=600, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECORDERD_PURE_PYTHON")}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd="/", env=env)


def test_every_module_imports_from_the_installed_copy(installed: Path) -> None:
    modules = _modules()
    assert "storage.codecs.g711" in modules and "recorderd.ops.records" in modules and "console.pages.signin" in modules
    probe = (
        "import importlib, json, sys\n"
        "out = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    out[name] = importlib.import_module(name).__file__\n"
        "from capture.fast import MODE\n"
        "print(json.dumps({'files': out, 'mode': MODE}))\n"
    )
    done = _run(installed, str(installed / "bin" / "python"), "-c", probe, json.dumps(modules))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    site = str(installed)
    outside = {name: f for name, f in result["files"].items() if not f.startswith(site)}
    assert not outside, f"imported from outside the installed venv: {outside}"
    assert result["mode"] == "native", "the installed package has no C fast path"
    # the console's templates and static files are package data: a page without them is a 500
    done = _run(installed, str(installed / "bin" / "python"), "-c",
                "import console, pathlib; p = pathlib.Path(console.__file__).parent; "
                "print(all((p / f).is_file() for f in ('templates/base.html', 'templates/signin.html', 'static/console.js')))")
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_both_commands_start_and_report_the_one_version(installed: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for command in ("recorderd", "recorderctl", "recorderd-console"):
        done = _run(installed, str(installed / "bin" / command), "--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{command} {version}"
    done = _run(installed, str(installed / "bin" / "recorderctl"), "--help")
    assert done.returncode == 0 and "export" in done.stdout, done.stderr
    done = _run(installed, str(installed / "bin" / "recorderd"), "--help")
    assert done.returncode == 0 and "replay" in done.stdout, done.stderr
