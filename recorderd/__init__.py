"""recorderd: the service, its configuration, control tools and wiring of capture and storage."""
from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed distribution's version: pyproject.toml's ``version``, the one place it is kept
    (the Debian package takes its version from there too)."""
    try:
        return metadata.version("recorderd")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
