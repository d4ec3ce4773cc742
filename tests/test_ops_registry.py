"""The operations' registry (recorderd/ops/framework.py): full whichever part of recorderd.ops a
process imports first, every module of operations loaded by the package, and no module of them
depending on the package's own names (they import the framework)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "recorderd" / "ops"
NOT_OPERATIONS = {"__init__", "framework"}


def _actions_after_importing(module: str) -> list[str]:
    """The registered action names in a fresh interpreter that imported only ``module``."""
    code = f"import json, {module}, recorderd.ops.framework as f; print(json.dumps(sorted(f.ACTIONS)))"
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_every_module_of_operations_is_loaded_by_the_package() -> None:
    from recorderd import ops

    on_disk = {p.stem for p in OPS.glob("*.py")} - NOT_OPERATIONS
    assert {m.__name__.rsplit(".", 1)[1] for m in ops.MODULES} == on_disk
    registering = {a.fn.__module__.rsplit(".", 1)[1] for a in ops.ACTIONS.values()}
    assert registering == on_disk  # each registers at least one action, and only they do


@pytest.mark.parametrize("first", ["recorderd.ops.framework", "recorderd.ops", "recorderd.ops.playback",
                                   "recorderd.ops.signin", "recorderd.ctl", "recorderd.control"])
def test_the_registry_is_full_whatever_is_imported_first(first: str) -> None:
    from recorderd import ops

    assert _actions_after_importing(first) == sorted(ops.ACTIONS)
    assert {"list", "show", "export", "hold", "status", "console-signin", "audit-verify"} <= set(ops.ACTIONS)


def test_modules_of_operations_import_the_framework_not_the_package() -> None:
    for path in sorted(OPS.glob("*.py")):
        if path.stem in NOT_OPERATIONS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        from_package = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                        and n.module is None and any(a.name[0].isupper() or a.name in ("action", "iso", "run")
                                                     for a in n.names)]
        assert not from_package, f"{path.name}:{from_package}: import the framework's names from .framework"
