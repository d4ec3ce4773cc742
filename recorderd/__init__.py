"""recorderd: the service, its configuration, control tools and wiring of capture and storage."""
from __future__ import annotations

import argparse
from typing import Any


def version() -> str:
    """The installed distribution's version: pyproject.toml's ``version``, the one place it is kept
    (the Debian package takes its version from there too)."""
    from importlib import metadata  # here: ~50 ms of imports (email, zipfile...) only --version needs

    try:
        return metadata.version("recorderd")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


class VersionAction(argparse.Action):
    """``--version``: ``PROG VERSION``, the version looked up only when asked for (argparse's own
    action needs the string, and so the lookup, at every start)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {version()}")  # on stdout, as argparse's own
        parser.exit()
