"""Empty spool files made ahead, off the capture thread.

A recorded call opens three spool files when it starts (its sidecar, its WAV, its evidence pcap).
Making a file is the dear part: ext4 allocates its inode, and where many files were deleted lately
(every kept call unlinks three from the spool, every erasure two from the store) its allocator looks
past the recently freed ones, ~0.6 ms a file on the development machine's disk against ~16 us for
giving an existing file a name. The capture thread must not wait for that, so a thread of its own
keeps a few empty files ready in ``STORE/spool-new/`` (made ``O_CREAT | O_EXCL | O_NOFOLLOW``, 0600,
their descriptors held open), and a new spool file is one of them given its name in the spool:
``link`` (which, as ``O_EXCL``, refuses a name that is there already) then ``unlink`` of the ready
name, and the descriptor is the one made with the file (checked to be the file now at that name).
When none is ready, or the spool is on another file system than ``spool-new/`` (``EXDEV``), the file
is made where it is needed, as before.

The ready files hold nothing. Those still ready when recorderd stops stay in ``spool-new/`` for the
next start, which takes them again (each checked to be an empty regular 0600 file of ours with one
name; other files and links there are removed, folders left alone); decommission removes everything
there. One process at a time makes files ahead for a store: ``spool-new/`` is locked (``flock``) by the
one that does, and another (``recorderd replay`` beside the service) makes its files where needed.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat
import threading

from .sealed import new_file

log = logging.getLogger(__name__)

DIR_MODE = 0o700  # as the store's other folders
READY = 128  # files kept ready (the burst of a busy minute's new calls: 3 files a call)

class SpoolFiles:
    """Spool files made ahead (``create`` is ``sealed.new_file`` with one of them, when one is ready)."""

    def __init__(self, pool_dir: str, ready: int = READY) -> None:
        self.pool_dir = pool_dir
        self.size = ready
        self._ready: list[tuple[int, str]] = []  # (descriptor, name in pool_dir), O_RDWR
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = False
        self._linkable = True  # False once the spool proved to be on another file system
        self._failing = False  # the last file could not be made (said once)
        self.taken = 0  # spool files given one made ahead
        self.made_here = 0  # spool files made where they were needed (none ready)
        self._thread: threading.Thread | None = None
        self._dir_fd = -1  # pool_dir, open and locked while this one makes files in it

    def start(self) -> SpoolFiles:
        """Lock ``pool_dir``, take the files an earlier run left ready there, then start making more.
        Another process holding the lock (or a folder that cannot be made): files made where needed."""
        try:
            os.makedirs(self.pool_dir, mode=DIR_MODE, exist_ok=True)
            fd = os.open(self.pool_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("spool files cannot be made ahead (%s): calls make their own", exc.strerror,
                        extra={"EVENT": "spool-files-failed"})
            self._linkable = False
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.info("another recorderd makes this store's spool files ahead: this one makes its own as calls start",
                     extra={"EVENT": "spool-files-direct"})
            self._linkable = False
            return self
        self._dir_fd = fd
        os.fchmod(fd, DIR_MODE)
        self._adopt()
        self._thread = threading.Thread(target=self._run, name="spool-files", daemon=True)
        self._thread.start()
        self._wanted.set()
        return self

    def create(self, path: str, flags: int) -> int:
        """A new spool file at ``path``, open with ``flags``' access mode (read-write when made
        ahead); ``FileExistsError`` if the name is taken, as ``O_EXCL``."""
        item = None
        if self._linkable:
            with self._lock:
                if self._ready:
                    item = self._ready.pop()
            if len(self._ready) < self.size // 2:
                self._wanted.set()
        if item is None:
            self.made_here += 1
            return new_file(path, flags)
        fd, name = item
        try:
            os.link(name, path)  # refuses an existing name (a symbolic link included: never followed)
        except OSError as exc:
            _drop(fd, name)
            if exc.errno == errno.EEXIST:
                raise
            if exc.errno == errno.EXDEV:
                self._direct("the spool is on another file system than spool-new/")
            # EXDEV, or the file made ahead gone (ENOENT), refused: this one made here, as without them
            self.made_here += 1
            return new_file(path, flags)
        try:
            os.unlink(name)
            made, there = os.fstat(fd), os.lstat(path)
        except BaseException:
            os.close(fd)
            raise
        if (made.st_dev, made.st_ino) != (there.st_dev, there.st_ino) or made.st_nlink != 1:
            os.close(fd)  # not the file made ahead at that name, or it has another name too
            raise OSError(errno.EEXIST, f"{path}: the spool file made for it was replaced")
        self.taken += 1
        return fd

    def _direct(self, why: str) -> None:
        """No more files made ahead (those ready removed): each made where it is needed."""
        self._linkable = False
        with self._lock:
            useless, self._ready = self._ready, []
        for fd, name in useless:
            _drop(fd, name)
        log.info("spool files are made as calls start: %s", why, extra={"EVENT": "spool-files-direct"})

    def close(self) -> None:
        """Stop making files; those ready are closed and left for the next start (empty files)."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            ready, self._ready = self._ready, []
        for fd, _ in ready:
            os.close(fd)
        if self._dir_fd >= 0:
            os.close(self._dir_fd)  # the lock let go
            self._dir_fd = -1

    def _adopt(self) -> None:
        """The files left ready in ``pool_dir`` taken again: each an empty regular 0600 file of this
        user with no other name (opened without following a link); other files and links removed,
        folders left alone."""
        me = os.geteuid()
        for name in sorted(os.listdir(self.pool_dir)):
            path = os.path.join(self.pool_dir, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:  # a symbolic link (ELOOP), a folder, a socket: not one of ours
                _remove(path)
                continue
            st = os.fstat(fd)
            if (not stat.S_ISREG(st.st_mode) or st.st_size or st.st_nlink != 1 or st.st_uid != me
                    or stat.S_IMODE(st.st_mode) != 0o600 or len(self._ready) >= 2 * self.size):
                _drop(fd, path)
                continue
            os.set_blocking(fd, True)
            self._ready.append((fd, path))

    def _run(self) -> None:
        while not self._stopping:
            self._wanted.wait()
            self._wanted.clear()
            while not self._stopping and self._linkable and len(self._ready) < self.size:
                name = os.path.join(self.pool_dir, secrets.token_hex(8))
                try:
                    fd = new_file(name, os.O_RDWR)  # the interpreter lock released while the inode is made
                except OSError as exc:  # a full disk, no descriptor left: the calls make their own
                    if not self._failing:  # said once, until a file can be made again
                        self._failing = True
                        log.warning("spool files cannot be made ahead (%s): calls make their own", exc.strerror,
                                    extra={"EVENT": "spool-files-failed"})
                    break
                self._failing = False
                with self._lock:
                    if self._stopping or not self._linkable:  # closing, or given up meanwhile
                        _drop(fd, name)
                        break
                    self._ready.append((fd, name))


def clear(pool_dir: str) -> int:
    """Remove everything in ``pool_dir`` (decommission): the files made ahead (empty, never given a
    name in the spool), and whatever else was put there, folders with what is in them (links are
    removed, never followed)."""
    removed = 0
    try:
        names = os.listdir(pool_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(pool_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed += 1
    return removed


def _drop(fd: int, name: str) -> None:
    os.close(fd)
    _remove(name)


def _remove(path: str) -> None:
    """A file or link that is not one of the files made ahead, removed; a folder left alone."""
    try:
        os.unlink(path)
    except OSError:
        pass
