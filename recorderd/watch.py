"""Watch the DID file for edits (inotify through ``watchdog``), so a technician's change takes effect
without a restart, and read it off the capture thread (``DidReloader``). The watch callback only asks
for a read. Editors that save by writing a new file and renaming it are covered (the directory is
watched, not the inode)."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from capture.dids import DidDirectory
from storage.worker import Worker

from .config import ConfigError, load_dids

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
            def on_any_event(self, event) -> None:
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


class DidReloader(Worker):
    """Reads and validates the DID file in a thread of its own (from ``start()``), so that a large or
    slow file never holds up the capture loop (nor the watchdog): the loop only takes the result, a
    new list or the error, between two ring blocks and swaps the list in at once. Requests made while
    a read is in progress are answered by one more read when it ends (the file as it is then)."""

    name = "did-reload"
    join_timeout = 2.0

    def __init__(self, path: str, on_start: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.path = path
        self.on_start = on_start
        self.result: tuple[DidDirectory | None, ConfigError | None] | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()

    def request(self) -> None:
        self._wanted.set()

    def take(self) -> tuple[DidDirectory | None, ConfigError | None] | None:
        """The last read's outcome, once (None: nothing new). Cheap enough to ask between blocks."""
        if self.result is None:
            return None
        with self._lock:
            result, self.result = self.result, None
        return result

    def run(self) -> None:
        while True:
            self._wanted.wait()
            if self.stopping.is_set():
                return
            self._wanted.clear()
            self.on_start()
            try:
                outcome: tuple[DidDirectory | None, ConfigError | None] = (load_dids(self.path), None)
            except ConfigError as exc:
                outcome = (None, exc)
            except Exception as exc:  # never let the reader die: the next edit must still be read
                log.exception("reading the DID file failed")
                outcome = (None, ConfigError(os.path.basename(self.path), "", f"not read ({type(exc).__name__})"))
            with self._lock:
                self.result = outcome

    def wake(self) -> None:
        self._wanted.set()
