"""The store's volume (issue 16, item 12; REQUIREMENTS 5(4)): the live service refuses a store that is
not on an encrypted volume unless the site opts out, and then says so at each start.

The walk down the device stack is checked on sysfs trees laid out as the kernel lays them out (dm
devices with ``dm/uuid`` and ``slaves/``, partitions, md), the detection itself on this box's real
/sys with real loop devices, and on a real LUKS volume where the kernel has device-mapper."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Site, needs_tool

from storage.volume import block_device, examine

BIN = Path(sys.executable).parent


class FakeSys:
    """A sysfs tree under ``root``: /sys/dev/block/MAJ:MIN links to the devices, as the kernel makes them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "dev" / "block").mkdir(parents=True)

    def device(self, path: str, number: str, *, uuid: str | None = None, slaves: tuple[str, ...] = (),
               partition: bool = False) -> Path:
        dev = self.root / "devices" / path
        dev.mkdir(parents=True, exist_ok=True)
        (self.root / "dev" / "block" / number).symlink_to(os.path.relpath(dev, self.root / "dev" / "block"))
        if uuid is not None:
            (dev / "dm").mkdir()
            (dev / "dm" / "uuid").write_text(uuid + "\n")
        (dev / "slaves").mkdir(exist_ok=True)
        for slave in slaves:
            target = self.root / "devices" / slave
            (dev / "slaves" / target.name).symlink_to(os.path.relpath(target, dev / "slaves"))
        if partition:
            (dev / "partition").write_text("3\n")
        return dev


def test_luks_under_lvm_on_a_partition_is_encrypted(tmp_path: Path) -> None:
    fake = FakeSys(tmp_path)
    fake.device("pci0/block/vda", "254:0")
    fake.device("pci0/block/vda/vda3", "254:3", partition=True)
    fake.device("virtual/block/dm-0", "253:0", uuid="CRYPT-LUKS2-6f1e0c9b2a7d4e55-cryptroot", slaves=("pci0/block/vda/vda3",))
    fake.device("virtual/block/dm-1", "253:1", uuid="LVM-Qx3vZ8sE", slaves=("virtual/block/dm-0",))
    volume = block_device(253, 1, "ext4", str(tmp_path))
    assert volume.encrypted and volume.how == "dm-crypt LUKS2 (dm-0) under ext4"


def test_lvm_on_a_plain_partition_is_not_encrypted(tmp_path: Path) -> None:
    fake = FakeSys(tmp_path)
    fake.device("pci0/block/vda", "254:0")
    fake.device("pci0/block/vda/vda3", "254:3", partition=True)
    fake.device("virtual/block/dm-1", "253:1", uuid="LVM-Qx3vZ8sE", slaves=("pci0/block/vda/vda3",))
    volume = block_device(253, 1, "ext4", str(tmp_path))
    assert not volume.encrypted and volume.how == "ext4 on dm-1 <- vda3 <- vda, no dm-crypt layer"


def test_raid_is_encrypted_only_when_every_member_is(tmp_path: Path) -> None:
    fake = FakeSys(tmp_path)
    fake.device("pci0/block/sda", "8:0")
    fake.device("pci0/block/sdb", "8:16")
    fake.device("virtual/block/dm-2", "253:2", uuid="CRYPT-LUKS2-aaaa-m0", slaves=("pci0/block/sda",))
    fake.device("virtual/block/dm-3", "253:3", uuid="CRYPT-LUKS1-bbbb-m1", slaves=("pci0/block/sdb",))
    fake.device("virtual/block/md0", "9:0", slaves=("virtual/block/dm-2", "virtual/block/dm-3"))
    fake.device("virtual/block/md1", "9:1", slaves=("virtual/block/dm-2", "pci0/block/sdb"))
    both = block_device(9, 0, "xfs", str(tmp_path))
    assert both.encrypted and both.how == "dm-crypt LUKS2 (dm-2), dm-crypt LUKS1 (dm-3) under xfs"
    assert not block_device(9, 1, "xfs", str(tmp_path)).encrypted  # one member in the clear


def test_a_loop_in_the_tree_ends(tmp_path: Path) -> None:
    fake = FakeSys(tmp_path)
    a = fake.device("virtual/block/dm-5", "253:5", uuid="LVM-a")
    fake.device("virtual/block/dm-6", "253:6", uuid="LVM-b", slaves=("virtual/block/dm-5",))
    (a / "slaves" / "dm-6").symlink_to("../../dm-6")
    assert not block_device(253, 5, "ext4", str(tmp_path)).encrypted


def test_no_block_device_is_not_encrypted(tmp_path: Path) -> None:
    FakeSys(tmp_path)
    assert block_device(0, 45, "tmpfs", str(tmp_path)).how == "tmpfs, not on a block device (0:45)"


def test_ecryptfs_is_an_encrypted_file_system(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    number = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"31 27 {number} /home/.Private /srv/store rw - ecryptfs /home/.Private rw,ecryptfs_cipher=aes\n")
    volume = examine(str(tmp_path), sys_root=str(tmp_path / "nosys"), mountinfo=str(mountinfo))
    assert volume.encrypted and volume.how == "ecryptfs (an encrypted file system)"


def test_this_box_real_sys_names_the_real_device(tmp_path: Path) -> None:
    volume = examine(str(tmp_path))
    assert not volume.encrypted  # the test machine has no dm-crypt under /tmp
    st = os.stat(tmp_path)
    real = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if real.exists():
        assert real.resolve().name in volume.how


def _root_with(tool: str) -> str:
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root")
    return needs_tool(tool)


def test_a_real_loop_device_with_ext4_is_named_and_not_encrypted(tmp_path: Path) -> None:
    _root_with("losetup")
    needs_tool("mkfs.ext4")
    image, mnt = tmp_path / "plain.img", tmp_path / "mnt"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    mnt.mkdir()
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            volume = examine(str(mnt))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert not volume.encrypted and volume.how == f"ext4 on {os.path.basename(loop)}, no dm-crypt layer"


def test_a_real_luks_volume_is_encrypted(tmp_path: Path) -> None:
    cryptsetup = _root_with("cryptsetup")
    needs_tool("mkfs.ext4")
    image, mnt, name = tmp_path / "luks.img", tmp_path / "mnt", f"B-luks-{os.getpid()}"
    subprocess.run(["truncate", "-s", "40M", str(image)], check=True)
    subprocess.run([cryptsetup, "-q", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
                    "1000", str(image), "--key-file", "-"], input=b"pw", check=True)
    opened = subprocess.run([cryptsetup, "open", str(image), name, "--key-file", "-"], input=b"pw", capture_output=True)
    if opened.returncode != 0:
        pytest.skip(f"the kernel refuses dm-crypt here ({opened.stderr.decode().strip().splitlines()[0]})")
    try:
        subprocess.run(["mkfs.ext4", "-q", f"/dev/mapper/{name}"], check=True)
        mnt.mkdir()
        subprocess.run(["mount", f"/dev/mapper/{name}", str(mnt)], check=True)
        try:
            volume = examine(str(mnt))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run([cryptsetup, "close", name], check=False)
    assert volume.encrypted and volume.how.startswith("dm-crypt LUKS2 (dm-") and volume.how.endswith(" under ext4")


def _service(site: Site) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID")}
    return subprocess.run([str(BIN / "recorderd"), "--config", str(site.config)], capture_output=True, text=True,
                          env=env, timeout=60)


LIVE = "capture: {interfaces: [B-nosuch0], trunk_networks: [203.0.113.0/24]}\n"


def test_the_service_refuses_a_store_not_on_an_encrypted_volume(tmp_path: Path) -> None:
    site = Site(tmp_path, settings=LIVE + "store: {path: store, require_encrypted_volume: true}\n").init()
    done = _service(site)
    assert done.returncode == 2, done.stderr
    assert f"the store {site.store} is not on an encrypted volume (" in done.stderr
    assert "not starting. Put it on a LUKS volume (cryptsetup luksFormat), or set store.require_encrypted_volume: false" in done.stderr
    assert "EVENT=store-volume-unencrypted" in done.stderr
    assert "cannot open capture" not in done.stderr  # refused before capturing anything


def test_encrypted_volume_required_by_default(tmp_path: Path) -> None:
    site = Site(tmp_path, settings=LIVE).init()
    site.config.write_text(site.config.read_text().replace("require_encrypted_volume: false", "keep_pcap: true"))
    done = _service(site)
    assert done.returncode == 2 and "is not on an encrypted volume" in done.stderr, done.stderr


def test_an_opt_out_is_said_loudly_and_the_service_goes_on(tmp_path: Path) -> None:
    site = Site(tmp_path, settings=LIVE).init()  # the tests' sites opt out
    done = _service(site)
    assert f"CRITICAL recorderd.daemon: the store {site.store} is NOT on an encrypted volume (" in done.stderr
    assert "running because store.require_encrypted_volume is false [EVENT=store-volume-unencrypted]" in done.stderr
    assert "cannot open capture" in done.stderr  # it went on, to the capture (no such interface here)
