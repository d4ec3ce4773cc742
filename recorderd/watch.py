"""Watch the DID file for edits (inotify through ``watchdog``), so a technician's change takes effect
without a restart. The callback only sets a flag; the main loop reloads. Editors that save by
writing a new file and renaming it are covered (the directory is watched, not the inode)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


class FileWatch:
    def __init__(self, path: str, on_change: Callable[[], None]) -> None:
        self.path = os.path.abspath(path)
        self.observer = None
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            log.warning("watchdog is not installed: the DID file is reloaded on SIGHUP only")
            return
        target = self.path

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                paths = {os.path.abspath(getattr(event, "src_path", "")), os.path.abspath(getattr(event, "dest_path", "") or "")}
                if target in paths and event.event_type in ("modified", "created", "moved", "closed"):
                    on_change()

        self.observer = Observer()
        self.observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
        self.observer.daemon = True
        self.observer.start()

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)
