"""Is the store on an encrypted volume? (guideline REQUIREMENTS 5(4): the service refuses to run on
an unsuitable volume unless configured otherwise.)

The recordings are encrypted file by file (the spool too, as written: storage/sealed.py), but the
index and the audit log are in the clear apart from their sealed fields, and blocks the file system
once held (journal, SSD spare area) outlive any erasure: the volume under the store should itself be
encrypted. Found from the kernel's own description, nothing guessed:

- the file system the store is on (``/proc/self/mountinfo``, by the store's ``st_dev``): ``ecryptfs``
  is an encrypted file system; a folder under fscrypt (ext4/f2fs ``encrypt``) answers the
  ``FS_IOC_GET_ENCRYPTION_POLICY`` ioctl;
- otherwise its block device, ``/sys/dev/block/MAJ:MIN``, walked down through device-mapper (LVM,
  dm-crypt), md and partitions (``slaves/``, the whole disk of a partition): a layer whose
  ``dm/uuid`` starts with ``CRYPT-`` is dm-crypt (LUKS1/2, plain). A device is encrypted when it is
  such a layer or everything it is built on is (a RAID of LUKS members).
"""
from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

SYS = "/sys"
MOUNTINFO = "/proc/self/mountinfo"
ENCRYPTED_FS = ("ecryptfs",)
_FS_IOC_GET_ENCRYPTION_POLICY = 0x400C6615  # _IOW('f', 21, struct fscrypt_policy_v1): 12 bytes
_MAX_DEPTH = 16  # device stacks are a few layers deep; a loop in a (fake) tree must end


@dataclass(frozen=True)
class Volume:
    encrypted: bool
    how: str  # what was found, for the log and status: "dm-crypt LUKS2 (dm-0) under ext4", "ext4 on vda"


def examine(path: str, sys_root: str = SYS, mountinfo: str = MOUNTINFO) -> Volume:
    """The volume ``path`` (the store's folder) is on, opened once, and whether it is encrypted."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        fscrypt = _fscrypt(fd)
    finally:
        os.close(fd)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    fstype = _fstype(major, minor, mountinfo)
    if fstype in ENCRYPTED_FS:
        return Volume(True, f"{fstype} (an encrypted file system)")
    if fscrypt:
        return Volume(True, f"fscrypt on {fstype}")
    return block_device(major, minor, fstype, sys_root)


def block_device(major: int, minor: int, fstype: str = "?", sys_root: str = SYS) -> Volume:
    """Whether block device MAJ:MIN (as ``sys_root`` describes it) is encrypted at some layer."""
    top = os.path.join(sys_root, "dev", "block", f"{major}:{minor}")
    if not os.path.isdir(top):
        return Volume(False, f"{fstype}, not on a block device ({major}:{minor})")
    found = _encrypted(os.path.realpath(top), 0)
    if found:
        return Volume(True, f"{found} under {fstype}")
    return Volume(False, f"{fstype} on {_chain(os.path.realpath(top))}, no dm-crypt layer")


def _encrypted(dev: str, depth: int) -> str | None:
    """'dm-crypt LUKS2 (dm-0)' when ``dev`` or everything under it is dm-crypt, else None."""
    if depth > _MAX_DEPTH:
        return None
    uuid = _read(os.path.join(dev, "dm", "uuid"))
    if uuid.startswith("CRYPT-"):
        kind = uuid.split("-")[1] if uuid.count("-") >= 2 else "dm-crypt"
        return f"dm-crypt {kind} ({os.path.basename(dev)})"
    below = _below(dev)
    if not below:
        return None
    found = [_encrypted(b, depth + 1) for b in below]
    return ", ".join(f for f in found if f) if all(found) else None


def _below(dev: str) -> list[str]:
    """The devices ``dev`` is built on: its ``slaves/``, or for a partition the whole disk."""
    try:
        names = sorted(os.listdir(os.path.join(dev, "slaves")))
    except OSError:
        names = []
    if names:
        return [os.path.realpath(os.path.join(dev, "slaves", n)) for n in names]
    if os.path.exists(os.path.join(dev, "partition")):
        return [os.path.dirname(dev)]
    return []


def _chain(dev: str) -> str:
    names, todo, depth = [], [dev], 0
    while todo and depth <= _MAX_DEPTH:
        names.append(os.path.basename(todo[0]))
        todo, depth = _below(todo[0]), depth + 1
    return " <- ".join(names)


def _fstype(major: int, minor: int, mountinfo: str) -> str:
    """The file system type mounted from MAJ:MIN (mountinfo field 3, the type after the ' - ')."""
    want = f"{major}:{minor}"
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return "?"


def _fscrypt(fd: int) -> bool:
    """Whether the folder has an fscrypt policy (ENODATA: none; ENOTTY/EOPNOTSUPP: not supported)."""
    try:
        fcntl.ioctl(fd, _FS_IOC_GET_ENCRYPTION_POLICY, bytearray(12))
    except OSError as exc:
        return exc.errno == errno.EOVERFLOW  # a v2 policy: encrypted (the v1 answer does not fit it)
    return True


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(256).strip()
    except OSError:
        return ""
