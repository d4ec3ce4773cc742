"""Unrecoverable erasure of one file: overwrite in place with random bytes, fsync, unlink, fsync the
directory, and confirm it is gone. Overwriting in place (not replacing) means that even a process
still holding the file open reads only the random bytes afterwards.

Together with destroying the file's wrapped data key (the vault's crypto-erase) this is the
"purge" of NIST SP 800-88 that the software can do; a whole-device purge (``cryptsetup luksErase``,
NVMe sanitize) is the technician's, see the README.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable

BLOCK = 1 << 20
_LEAF = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FOLDER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unreachable(Exception):
    """A file outside the store that must be left alone (a link, not a regular file, not the
    holder's): the message says why, for the report."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def erase_file(path: str, *, pattern: str = "random", sync_dir: bool = True) -> int:
    """Overwrite, unlink and verify; returns the bytes overwritten (0 if the file was already gone,
    as after an erasure interrupted past its unlink). ``pattern`` "zeros" is for spool copies being
    replaced by their encrypted twin (no key to protect, and much cheaper than random bytes);
    ``sync_dir=False`` lets a caller erasing several files of one folder fsync it once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file: left alone")
        size = _overwrite(fd, st.st_size, pattern)
    finally:
        os.close(fd)
    os.unlink(path)
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")
    if os.path.lexists(path):
        raise OSError(f"{path} still exists after unlink")
    return size


def _overwrite(fd: int, size: int, pattern: str = "random") -> int:
    """Overwrite ``size`` bytes from the start of ``fd`` in place, and fsync."""
    done = 0
    zeros = bytes(min(BLOCK, size)) if pattern == "zeros" else b""
    while done < size:
        n = min(BLOCK, size - done)
        done += os.pwrite(fd, zeros[:n] if zeros else os.urandom(n), done)
    os.fsync(fd)
    return size


def _open_folder(path: str) -> int:
    """The folder at the absolute ``path``, walked from / one component at a time without following
    a symbolic link anywhere (a folder swapped for a link mid-way is refused, not followed)."""
    fd = os.open("/", _FOLDER)
    try:
        for part in [p for p in path.split("/") if p]:
            if part == "..":
                raise Unreachable("its path goes up a folder ('..'): left alone")
            try:
                nxt = os.open(part, _FOLDER, dir_fd=fd)
            except NotADirectoryError:  # O_PATH | O_NOFOLLOW on a link: ENOTDIR, not ELOOP
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise Unreachable(f"a folder on its path ({part}) is a symbolic link: left alone") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def erase_copy(path: str, owner_uid: int, sha256: str) -> int:
    """Erase a copy outside the store (an exported WAV) if, and only if, it is a regular file with
    one link, owned by ``owner_uid`` (who exported it), whose bytes still hash to ``sha256``.

    The file is opened once (``O_NOFOLLOW | O_NONBLOCK``, each folder of its path walked without
    following links) and checked, hashed and overwritten through that one descriptor; its name is
    unlinked only if it still names the same file. A FIFO, a link swapped in, someone else's file:
    :class:`Unreachable`, nothing touched. Returns the bytes overwritten."""

    def unchanged(fd: int, st: os.stat_result) -> int:
        digest = hashlib.sha256()
        offset = 0
        while block := os.pread(fd, BLOCK, offset):
            digest.update(block)
            offset += len(block)
        if digest.hexdigest() != sha256:
            raise Unreachable("a different file is there now (left alone)")
        return offset

    return _erase_held(path, owner_uid, unchanged, missing_ok=False) or 0


def erase_beside(path: str, owner_uid: int, *, limit: int = 1 << 20) -> int:
    """Erase a small file kept beside an erased copy (its signed manifest, its signature) with the
    care of :func:`erase_copy`, if it is at most ``limit`` bytes. Returns the bytes overwritten, 0 if
    it is not there (a copy made before manifests, or one its holder tidied). Anything else:
    :class:`Unreachable`."""

    def small(fd: int, st: os.stat_result) -> int:
        if st.st_size > limit:
            raise Unreachable(f"it is {st.st_size} bytes, larger than a manifest: left alone")
        return st.st_size

    return _erase_held(path, owner_uid, small, missing_ok=True) or 0


def _erase_held(path: str, owner_uid: int, check: Callable[[int, os.stat_result], int], *,
                missing_ok: bool) -> int | None:
    """The one way a file outside the store is erased: the path absolute, each folder walked without
    following links, the file opened once and, through that descriptor, found to be a regular file
    of ``owner_uid`` with one link and to pass ``check`` (which returns how many bytes to
    overwrite), then overwritten; its name unlinked only if it still names that file. None: not
    there (``missing_ok``)."""
    if not os.path.isabs(path):
        raise Unreachable("its path is not absolute: left alone")
    folder, name = os.path.split(path)
    try:
        dir_fd = _open_folder(folder)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    try:
        try:
            fd = os.open(name, _LEAF, dir_fd=dir_fd)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unreachable("it is a symbolic link now: left alone") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Unreachable("it is not a regular file (a FIFO, a device, a socket): left alone")
            if st.st_uid != owner_uid:
                raise Unreachable(f"it belongs to uid {st.st_uid}, not to the copy's holder (uid {owner_uid}): "
                                  "left alone")
            if st.st_nlink != 1:
                raise Unreachable(f"it has {st.st_nlink} hard links: left alone")
            size = _overwrite(fd, check(fd, st))
        finally:
            os.close(fd)
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(name, dir_fd=dir_fd)
        return size
    finally:
        os.close(dir_fd)
