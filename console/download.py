"""A copy from the daemon (``export``, ``provide``) streamed straight into the browser's download.

Nothing is written to disk by the console and at most a few chunks are held in memory. The daemon
sends the copy, then its signed manifest and the signature, as the outputs of one request
(:mod:`recorderd.wire`); each output lands in a streaming sink (``client.CallbackSink``), which
hands it chunk by chunk to the HTTP response. The response is one ZIP file, *stored* (no compression: the WAV inside is byte
for byte what ``recorderctl export`` writes), holding the WAV, ``.manifest.json`` and
``.manifest.sig``: one file for the police to take away, checked with standard tools (unzip,
openssl, sha256sum), rather than a WAV with a second download the browser might never fetch.

A sink tells the daemon "placed" only once the response has handed all that output's bytes to the
browser's connection: a browser that goes away makes the commit fail, and the daemon then
registers no copy. The daemon's refusal (a role, a purpose, a missing basis) arrives before any
byte, so it is shown as a page; a failure after the download started (an integrity check failing
half way) cuts the connection, and the browser reports the download as failed, never a short file
that looks whole.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from recorderd import client, wire

log = logging.getLogger("console")

DEPTH = 8  # chunks (up to 1 MiB each) between the daemon and the browser
STALL = 60.0  # s without progress on either side before the download is given up
MANIFEST, SIGNATURE = ".manifest.json", ".manifest.sig"


class Gone(OSError):
    """The browser (or the response) is no longer taking the download."""


class Download:
    """One request's outputs on their way from the daemon's thread to the response."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue(DEPTH)
        self.gone = threading.Event()

    def put(self, *event: Any) -> None:
        deadline = time.monotonic() + STALL
        while not self.gone.is_set():
            try:
                self.events.put(event, timeout=0.5)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    self.gone.set()
        raise Gone("the browser is no longer taking the download")

    async def next(self) -> tuple[Any, ...]:
        while True:
            event = await anyio.to_thread.run_sync(self._get)
            if event is not None:
                return event

    def _get(self) -> tuple[Any, ...] | None:
        try:
            return self.events.get(timeout=1.0)
        except queue.Empty:
            return None

    def sink(self, path: str) -> client.CallbackSink:
        """The daemon's output ``path`` as a streaming sink (``client.CallbackSink``) into this download."""

        def delivered(sha256: str) -> None:
            sent = threading.Event()
            self.put("end", path, sent)
            deadline = time.monotonic() + STALL
            while not sent.wait(0.5):
                if self.gone.is_set() or time.monotonic() > deadline:
                    raise Gone("the browser went away before the download ended")

        def aborted() -> None:
            self.put("abort", path)

        return client.CallbackSink(path, lambda chunk: self.put("data", path, chunk), delivered, aborted)


class _Chunks:
    """What the ZIP writer writes, taken away by the response after each step (no seek, no tell:
    zipfile then writes each entry's sizes and CRC after its data)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:  # zipfile never closes a file it was handed; declared for its type
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


async def zip_download(r: Any, action: str, args: dict[str, Any], *, out: str, name: str,
                       copies: dict[str, str] | None = None) -> Response:
    """Run ``action`` (whose copy goes to ``out``, its manifest and signature beside it) for the
    signed-in person and answer with ``name``.zip, or with the daemon's refusal as a page.
    ``copies`` (the daemon's output path -> the name in the ZIP): a request of several copies (every
    part of a conversation), each with its manifest and signature beside it."""
    download = Download()
    entries = {p: m for path, member in (copies or {out: name}).items()
               for p, m in ((path, member), (path + MANIFEST, member + MANIFEST), (path + SIGNATURE, member + SIGNATURE))}
    sinks = {path: download.sink(path) for path in entries}
    daemon, user, ip = r.app.daemon, r.user, r.ip

    def converse() -> None:
        try:
            reply: Any = daemon.call_sync(action, {**args, "out": out}, user=user, ip=ip, sinks=sinks)
        except client.Busy:
            reply = "error.busy"
        except (client.Unreachable, OSError, wire.WireError):
            reply = "error.daemon"
        except Exception as exc:  # the kind only: the args may carry a recipient's name
            log.error("console download: %s from the daemon", type(exc).__name__, extra={"EVENT": "console-error"})
            reply = "error.internal"
        try:
            download.put("reply", reply)
        except Gone:
            pass

    threading.Thread(target=converse, name="console-download", daemon=True).start()
    while True:  # the first byte, or the daemon's answer without one
        first = await download.next()
        if first[0] != "abort":
            break
    if first[0] == "reply":
        download.gone.set()
        reply = first[1]
        if isinstance(reply, str):
            return r.error(reply, 503)
        if reply.rc != 0:
            return r.refused(reply)
        return r.error("error.internal", 500)  # done, yet no copy came: never the case
    return _Streamed(download, _zip_body(download, first, entries), media_type="application/zip",
                     headers={"content-disposition": f'attachment; filename="{name}.zip"'})


class _Streamed(StreamingResponse):
    """The response, which says the download is over however it ends (a browser gone mid-way
    cancels it while a send waits: the daemon's commit must hear of it now, not when the body's
    generator is collected)."""

    def __init__(self, download: Download, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.download = download

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.download.gone.set()


class DownloadFailed(Exception):
    """The copy broke off after the download had started: the connection is cut, not ended."""


async def _zip_body(download: Download, first: tuple[Any, ...], entries: dict[str, str]) -> AsyncIterator[bytes]:
    chunks = _Chunks()
    archive = zipfile.ZipFile(chunks, "w", compression=zipfile.ZIP_STORED)
    entry: Any = None
    entry_path, event, whole = None, first, False
    try:
        while True:
            kind = event[0]
            if kind == "data":
                if entry_path != event[1]:
                    entry_path, entry = event[1], archive.open(_member(entries[event[1]]), "w")
                entry.write(event[2])
                data = chunks.take()
                if data:
                    yield data
            elif kind == "end":
                if entry_path != event[1]:  # an empty output: an empty member
                    archive.open(_member(entries[event[1]]), "w").close()
                elif entry is not None:
                    entry.close()
                entry, entry_path = None, None
                data = chunks.take()
                if data:
                    yield data  # resumed only once the server has sent it
                event[2].set()
            elif kind == "abort":
                raise DownloadFailed("the daemon abandoned the copy")
            elif kind == "reply":
                reply = event[1]
                if isinstance(reply, str) or reply.rc != 0:
                    raise DownloadFailed("the daemon did not complete the copy")
                archive.close()
                whole = True
                yield chunks.take()
                return
            event = await download.next()
    finally:
        download.gone.set()
        if not whole:  # close what was begun, into nothing: the browser never gets an end
            try:
                if entry is not None:
                    entry.close()
                archive.close()
            except (ValueError, OSError):
                pass
            chunks.take()


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16
    return info
