"""Whether capture's per-packet loops run in C (``capture/_fastpath.c``) or in Python.

The C module is built with the package (``setup.py``); the Python loops it replaces stay as the
specification and the fallback. ``RECORDERD_PURE_PYTHON=1`` in the environment turns the C module
off (the tests compare both); without a compiler the package still works, only slower, and
``recorderd`` says so when it starts.
"""
from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("RECORDERD_PURE_PYTHON", "") in ("1", "yes", "true"):
        return None
    try:
        from . import _fastpath
    except ImportError:  # not built (no compiler): the Python loops do the work
        return None
    module: ModuleType = _fastpath
    return module


fastpath = _load()

FRAMES: type | None = fastpath.Frames if fastpath is not None else None
"""The C module's in-place batch type (``Frames``), or None without it."""

MODE = "native" if fastpath is not None else "python"
