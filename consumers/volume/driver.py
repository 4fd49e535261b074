"""Volume backends, behind one boundary (Cinder's VolumeDriver, reduced).

A backend makes, fills and removes volumes and says how a host reaches one
(`connection`, Cinder's connection_info). `FileDriver` keeps each volume as a
qcow2 file in a directory ($NOVALOG_HOME/volumes), as Cinder's NFS driver keeps
files on a share: hosts on one machine (or sharing the directory) reach it by
path. An LVM, NFS or Ceph backend implements the same four methods and answers
with its own `driver_volume_type` (iscsi, nfs, rbd), which the compute host's
disk XML would then have to speak.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from novalog.image_files import cached_name, fetch_verified, qemu_format, qemu_img
from schemas import payloads


class VolumeDriver(Protocol):
    backend: str

    def create(self, volume_id: str, size_gb: int) -> payloads.VolumeConnection:
        """An empty volume; the same answer when it exists already (idempotent)."""

    def create_from_image(self, volume_id: str, size_gb: int,
                          image: payloads.ImageToBoot) -> payloads.VolumeConnection:
        """A volume holding the image's data (bootable); idempotent."""

    def delete(self, volume_id: str) -> None:
        """Gone, whether it was there or not."""

    def exists(self, volume_id: str) -> bool: ...


class FileDriver:
    """qcow2 files `volume-<id>` (Cinder's name) under one directory; images are cached
    once in `_base/`, then each volume is a full copy grown to its size."""

    backend = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def path(self, volume_id: str) -> Path:
        return self.root / f"volume-{volume_id}"

    def _connection(self, volume_id: str) -> payloads.VolumeConnection:
        return payloads.VolumeConnection(driver_volume_type="file",
                                         path=str(self.path(volume_id)), format="qcow2")

    def exists(self, volume_id: str) -> bool:
        return self.path(volume_id).exists()

    def create(self, volume_id: str, size_gb: int) -> payloads.VolumeConnection:
        target = self.path(volume_id)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            qemu_img("create", "-q", "-f", "qcow2", str(partial), f"{size_gb}G")
            partial.rename(target)  # a crash before this leaves no volume, only a .part
        return self._connection(volume_id)

    def create_from_image(self, volume_id: str, size_gb: int,
                          image: payloads.ImageToBoot) -> payloads.VolumeConnection:
        target = self.path(volume_id)
        if not target.exists():
            base = self.root / "_base" / cached_name(image["id"])
            with self._lock:
                fetch_verified(image["id"], image["location"], image["checksum"], base)
            partial = target.with_suffix(".part")
            qemu_img("convert", "-q", "-f", qemu_format(image["disk_format"]), "-O", "qcow2",
                     str(base), str(partial))
            qemu_img("resize", "-q", "-f", "qcow2", str(partial), f"{size_gb}G")
            partial.rename(target)
        return self._connection(volume_id)

    def delete(self, volume_id: str) -> None:
        self.path(volume_id).unlink(missing_ok=True)
        self.path(volume_id).with_suffix(".part").unlink(missing_ok=True)
