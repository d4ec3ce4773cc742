"""Spool files made ahead, off the capture thread, as files with no name until a call takes one.

A recorded call opens three spool files when it starts (its sidecar, its WAV, its evidence pcap).
Making a file is the dear part: the file system allocates its inode, and where many files were
deleted lately (every kept call unlinks one from the spool, every erasure two from the store) ext4's
allocator looks past the recently freed ones: ~0.6-1 ms a file on the development machine's disk.
The capture thread must not wait for that, so a thread of its own keeps a few files ready: each
made with ``O_TMPFILE`` in the spool folder itself (0600, read-write, no name: nothing any other
process can open; nothing left behind if the process dies, and after a power cut ext4's journal
frees them at the next mount, or fsck where the file system has no journal), and a new spool file is one of
them given its name with ``linkat`` (through ``/proc/self/fd``, ``AT_SYMLINK_FOLLOW``: open(2)'s own
recipe) into the folder opened at start, which refuses a name that is there already, a symbolic
link included, as ``O_EXCL`` does; the file is checked to be the one made, before and after.

Why unnamed files (the first edition named them in ``spool-new/``, then linked and unlinked them):
making a named file holds its folder's lock while the inode is allocated, so the capture thread's
unlink of the ready name waited, spinning, for the maker's allocation (~3-8 % of a replay's capture
thread); an unnamed file takes no folder's lock, and taking it is one system call. No two
processes share the files ready (each holds its own), so ``recorderd replay`` beside the service
makes its own ahead too.

When the file system cannot make unnamed files (``EOPNOTSUPP``: before Linux 3.11, some network
and FUSE file systems) or ``/proc`` is not there, each file is made where it is needed, as before.
A ``spool-new/`` folder an earlier release left is emptied of its files at start (empty files: they
never held anything) and removed; decommission removes whatever is still in it.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import threading

from .sealed import new_file

log = logging.getLogger(__name__)

READY = 128  # files kept ready (the burst of a busy minute's new calls: 3 files a call)
_PROC_FD = "/proc/self/fd"
_UNNAMED = getattr(os, "O_TMPFILE", 0)  # Linux: (O_TMPFILE includes O_DIRECTORY)


class SpoolFiles:
    """Spool files made ahead in ``spool_dir`` (``create`` is ``sealed.new_file`` with one of them,
    when one is ready). ``old_pool``: an earlier release's folder of named ready files, cleared."""

    def __init__(self, spool_dir: str, ready: int = READY, old_pool: str | None = None) -> None:
        self.spool_dir = spool_dir
        self.size = ready
        self.old_pool = old_pool
        self._ready: list[tuple[int, int, int]] = []  # (descriptor, device, inode) of unnamed files in spool_dir, O_RDWR
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = False
        self._linkable = True  # False once unnamed files proved impossible here
        self._failing = False  # the last file could not be made (said once)
        self.taken = 0  # spool files given one made ahead
        self.made_here = 0  # spool files made where they were needed (none ready)
        self._thread: threading.Thread | None = None
        self._dir_fd = -1  # spool_dir, open while files are made in it

    def start(self) -> SpoolFiles:
        """Clear an earlier release's ready files, check that unnamed files can be made and named
        here, then start making them. If they cannot: files made where needed (said once)."""
        if self.old_pool is not None:
            clear_old(self.old_pool)
        if not _UNNAMED or not os.path.isdir(_PROC_FD):
            self._direct("this system cannot give a file made without a name one later (no O_TMPFILE or no /proc)")
            return self
        try:
            self._dir_fd = os.open(self.spool_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            fd = self._make()
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL) or self._dir_fd < 0:
                self._direct(f"the spool cannot make files without a name ({exc.strerror})")
                return self
            fd = -1  # a full disk, or no descriptor left: the thread tries again, and says so
        if fd >= 0:
            self._ready.append(_known(fd))
        self._thread = threading.Thread(target=self._run, name="spool-files", daemon=True)
        self._thread.start()
        self._wanted.set()
        return self

    def _make(self) -> int:
        """One unnamed file in the spool, 0600, read-write (the interpreter lock released meanwhile)."""
        return os.open(".", _UNNAMED | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd)

    def create(self, path: str, flags: int) -> int:
        """A new spool file at ``path``, open with ``flags``' access mode (read-write when made
        ahead); ``FileExistsError`` if the name is taken, as ``O_EXCL``."""
        folder, name = os.path.split(path)
        item = None
        if self._linkable and folder == self.spool_dir:  # (a file made ahead lives in the spool's folder)
            with self._lock:
                if self._ready:
                    item = self._ready.pop()
            if len(self._ready) < self.size // 2:
                self._wanted.set()
        if item is None:
            return self._made_here(path, flags)
        fd, dev, ino = item
        try:
            made = os.fstat(fd)  # still the unnamed file made (a descriptor number reused would name another)
            if (made.st_dev, made.st_ino, made.st_nlink) != (dev, ino, 0):
                raise OSError(errno.EBADF, "the descriptor of a file made ahead is not that file any more")
            # linkat(dir, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW): the new name, in the spool
            # folder opened at start, is never followed (src_dir_fd makes Python call linkat: its plain
            # link() would not follow the /proc link and fail with EXDEV)
            os.link(f"{_PROC_FD}/{fd}", name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd, follow_symlinks=True)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EEXIST:
                raise
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EBADF):
                self._direct(f"a file made without a name cannot be given one here ({exc.strerror})")
            return self._made_here(path, flags)  # refused, or the disk full for the folder's entry: as without them
        try:
            named = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except BaseException:
            os.close(fd)
            raise
        if (named.st_dev, named.st_ino, named.st_nlink) != (dev, ino, 1):  # not ours at that name (or twice named)
            os.close(fd)
            raise OSError(errno.EEXIST, f"{path}: the spool file made for it was replaced")
        self.taken += 1
        return fd

    def _made_here(self, path: str, flags: int) -> int:
        fd = new_file(path, flags)
        self.made_here += 1
        return fd

    def _direct(self, why: str) -> None:
        """No more files made ahead (those ready closed: unnamed, they are gone): each made where
        it is needed."""
        with self._lock:
            first, self._linkable = self._linkable, False
            useless, self._ready = self._ready, []
        for fd, _, _ in useless:
            os.close(fd)
        if first:  # (said once: two calls may find it out at once)
            log.info("spool files are made as calls start: %s", why, extra={"EVENT": "spool-files-direct"})

    def close(self) -> None:
        """Stop making files; those ready are closed (unnamed: nothing is left on the disk)."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            ready, self._ready = self._ready, []
        for fd, _, _ in ready:
            os.close(fd)
        if self._dir_fd >= 0 and not (self._thread is not None and self._thread.is_alive()):  # (a thread stuck
            # in the file system past the join keeps the folder's descriptor: the process is ending)
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _run(self) -> None:
        while not self._stopping:
            self._wanted.wait()
            self._wanted.clear()
            while not self._stopping and self._linkable and len(self._ready) < self.size:
                try:
                    fd = self._make()
                except OSError as exc:  # a full disk, no descriptor left: the calls make their own
                    if not self._failing:  # said once, until a file can be made again
                        self._failing = True
                        log.warning("spool files cannot be made ahead (%s): calls make their own", exc.strerror,
                                    extra={"EVENT": "spool-files-failed"})
                    break
                self._failing = False
                item = _known(fd)
                with self._lock:
                    if self._stopping or not self._linkable:  # closing, or given up meanwhile
                        os.close(fd)
                        break
                    self._ready.append(item)


def _known(fd: int) -> tuple[int, int, int]:
    """A file made ahead, with what identifies it (checked when it is given its name)."""
    st = os.fstat(fd)
    return fd, st.st_dev, st.st_ino


def clear_old(pool_dir: str) -> None:
    """An earlier release's ``spool-new/`` (empty files made ahead with names): its files and links
    removed (none followed), then the folder if that left it empty; a folder in it (a technician's)
    is left alone, and so is the rest. Nothing there ever held a byte of a call."""
    try:
        names = os.listdir(pool_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(pool_dir, name)
        if not os.path.isdir(path) or os.path.islink(path):
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        os.rmdir(pool_dir)
    except OSError:
        pass


def clear(pool_dir: str) -> int:
    """Remove everything in an earlier release's ``pool_dir`` (decommission): the files made ahead
    (empty, never given a name in the spool), and whatever else was put there, folders with what is
    in them (links are removed, never followed)."""
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
