"""Image files on a host: fetched from the image store once, checked, and qemu-img.

Shared by the compute agent's base-image cache (consumers/compute/image_cache.py)
and the volume backend's image cache (consumers/volume/driver.py): both fetch a
Glance image into a local cache the same way, under a name derived from its id.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


class ImageError(Exception):
    """The image could not be fetched or does not match its checksum."""


def qemu_format(disk_format: str) -> str:
    """qemu-img's name for a Glance disk format: an AMI root disk (and an AKI kernel or
    ARI ramdisk) is raw data."""
    return "raw" if disk_format in ("aki", "ari", "ami") else disk_format


def qemu_img(*args: str) -> None:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"qemu-img {' '.join(args)}: {result.stderr.strip()}")


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_name(image_id: str) -> str:
    """Nova's name for a cached base image: the SHA-1 of the image id."""
    return hashlib.sha1(image_id.encode(), usedforsecurity=False).hexdigest()


def fetch_verified(image_id: str, location: str, checksum: str, target: Path) -> bool:
    """Copy the image at `location` to `target` unless it is there; False when it was.
    The copy is checked against `checksum` before it takes the name, so a target that
    exists is whole and right."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    source = Path(location)
    if not source.is_file():
        raise ImageError(f"image {image_id} not found at {source}")
    partial = target.with_suffix(f".part{os.getpid()}")
    shutil.copyfile(source, partial)
    if md5_of(partial) != checksum:
        partial.unlink()
        raise ImageError(f"image {image_id} does not match its checksum")
    partial.rename(target)
    return True
