"""Unrecoverable erasure of one file: overwrite in place with random bytes, fsync, unlink, fsync the
directory, and confirm it is gone. Overwriting in place (not replacing) means that even a process
still holding the file open reads only the random bytes afterwards.

Together with destroying the file's wrapped data key (the vault's crypto-erase) this is the
"purge" of NIST SP 800-88 that the software can do; a whole-device purge (``cryptsetup luksErase``,
NVMe sanitize) is the technician's, see the README.
"""
from __future__ import annotations

import os

BLOCK = 1 << 20


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
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        done = 0
        zeros = bytes(min(BLOCK, size)) if pattern == "zeros" else b""
        while done < size:
            n = min(BLOCK, size - done)
            done += os.write(fd, zeros[:n] if zeros else os.urandom(n))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")
    if os.path.lexists(path):
        raise OSError(f"{path} still exists after unlink")
    return size
