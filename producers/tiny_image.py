"""`novalog image build-tiny`: a bootable guest made from Debian packages only.

Debian's kernel (decompressed to the ELF vmlinux that QEMU boots directly, 5-10 s
faster under emulation, ../shared/REAL_HYPERVISOR.md) and a busybox initramfs whose
/init prints a marker line with the instance's uuid and name (from the kernel
command line that compute writes) and then stays up: busybox acpid turns the ACPI
power button into a power-off, which is how Nova's soft reboot and stop ask a guest.

It is registered the way Nova boots a kernel and ramdisk from Glance: `tiny-kernel`
(aki), `tiny-ramdisk` (ari) and `tiny` (ami, a small blank root disk) with the
kernel_id, ramdisk_id and os_command_line properties, plus hypervisor_type=qemu so
the scheduler's ImagePropertiesFilter places it on a real QEMU host only.
"""

from __future__ import annotations

import gzip
import lzma
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novalog.client import ApiFailure, NovalogClient
from novalog.image_files import md5_of

MARKER = "novalog-guest:"  # the line /init prints; tests and the bench look for it
COMMAND_LINE = "console=ttyS0 quiet panic=-1 no_timer_check"
XZ_MAGIC = b"\xfd7zXZ\x00"
# virtio so the guest sees its disks; evdev and button so acpid sees the power button
MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
           "drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
           "drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
           "drivers/input/evdev.ko", "drivers/acpi/button.ko")
ROOT_DISK_BYTES = 1 << 20

INIT = f"""#!/bin/sh
# novalog's tiny guest: mount, load drivers, print the marker, wait for the power button
/bin/busybox mkdir -p /proc /sys /dev /tmp /etc/acpi/PWRF
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
for module in /lib/modules/*.ko; do insmod "$module" 2>/dev/null; done
uuid=unknown; name=unknown
for word in $(cat /proc/cmdline); do
  case "$word" in
    novalog.uuid=*) uuid="${{word#novalog.uuid=}}" ;;
    novalog.name=*) name="$(printf '%b' "$(echo "${{word#novalog.name=}}" | sed 's/%/\\\\x/g')")" ;;
  esac
done
sleep 1  # virtio disks appear asynchronously
disks=$(ls /sys/block | grep '^vd' | tr '\\n' ' ')
echo "{MARKER} uuid=$uuid name=$name up $(cut -d' ' -f1 /proc/uptime)s disks=${{disks% }}"
printf '#!/bin/sh\\necho "{MARKER} power button: powering off"\\nexec poweroff -f\\n' \\
  > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -d -c /etc/acpi &  # in the foreground of its own: it says what it saw
while :; do sleep 3600; done
"""


class BuildError(Exception):
    """What stops the build, with what to do about it."""


@dataclass(frozen=True)
class TinyFiles:
    kernel: Path
    ramdisk: Path
    disk: Path
    kernel_version: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def kernel_package() -> str:
    """The kernel that Debian's linux-image-amd64 names today."""
    try:
        out = _run(["apt-cache", "depends", "linux-image-amd64"])
    except BuildError:
        out = ""
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
    if not found:  # empty package lists on a fresh machine
        _run(["apt-get", "update", "-qq"])
        found = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)",
                          _run(["apt-cache", "depends", "linux-image-amd64"]))
    if not found:
        raise BuildError("apt-cache names no kernel for linux-image-amd64")
    return found.group(1)


def decompress_kernel(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (its XZ stream), which QEMU boots through PVH."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        raise BuildError("the kernel has no XZ stream to decompress")
    vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    if not vmlinux.startswith(b"\x7fELF"):
        raise BuildError("the decompressed kernel is not an ELF file")
    return vmlinux


def _extract(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Members of the package's data, streamed from dpkg-deb."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        for member in archive:
            if member.isfile() and wanted(member.name):
                data = archive.extractfile(member)
                assert data is not None
                out[member.name] = data.read()
    if proc.wait() != 0:
        raise BuildError(f"dpkg-deb could not read {deb}")
    return out


def initramfs(busybox: Path, modules: dict[str, bytes]) -> bytes:
    """busybox as /bin/busybox (and /bin/sh), the drivers, /init; cpio newc, gzipped."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "lib" / "modules").mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        for order, name in enumerate(MODULES):
            (root / "lib" / "modules" / f"{order}-{Path(name).name}").write_bytes(modules[name])
        init = root / "init"
        init.write_text(INIT)
        init.chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                 input="\n".join(names).encode(), capture_output=True)
        if archive.returncode != 0:
            raise BuildError(f"cpio failed: {archive.stderr.decode().strip()}")
        return gzip.compress(archive.stdout, mtime=0)


def build(work: Path, say: Callable[[str], None]) -> TinyFiles:
    """The three files under `work`; what is built already is kept (a second run only
    checks the kernel Debian names)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists() or shutil.which("cpio") is None:
        raise BuildError("busybox-static and cpio are missing: run `novalog hypervisor "
                         "setup` first (or apt-get install busybox-static cpio)")
    work.mkdir(parents=True, exist_ok=True)
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    files = TinyFiles(work / f"vmlinux-{version}", work / f"initramfs-{version}.gz",
                      work / "disk.raw", version)
    if not (files.kernel.exists() and files.ramdisk.exists()):
        say(f"downloading {package} (Debian, ~70 MB)")
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            _run(["apt-get", "download", "-q", package], cwd=Path(tmp))
            deb = next(Path(tmp).glob("*.deb"))
            prefix = f"./lib/modules/{version}/kernel/"
            found = _extract(deb, lambda n: n.startswith("./boot/vmlinuz-")
                             or n.removeprefix(prefix) in MODULES)
        bzimage = next((data for name, data in found.items() if "/boot/vmlinuz-" in name), None)
        if bzimage is None:
            raise BuildError(f"{package} holds no /boot/vmlinuz")
        modules = {name.removeprefix(prefix): data for name, data in found.items()
                   if name.startswith(prefix)}
        if set(modules) != set(MODULES):
            raise BuildError(f"{package} lacks {sorted(set(MODULES) - set(modules))}")
        say("decompressing the kernel and packing the initramfs")
        _write(files.ramdisk, initramfs(busybox, modules))
        _write(files.kernel, decompress_kernel(bzimage))
    if not files.disk.exists():
        _write(files.disk, bytes(ROOT_DISK_BYTES))
    return files


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.rename(path)


def _image(client: NovalogClient, name: str) -> dict[str, Any] | None:
    found = client.get("/image/v2/images", name=name)["images"]
    return found[0] if found else None


def _upload(client: NovalogClient, name: str, path: Path, fmt: str,
            properties: dict[str, str]) -> str:
    """The image `name` with this file's data: the one there if its checksum matches,
    else a new one (Glance image data never changes; an old one is deleted first)."""
    existing = _image(client, name)
    if existing is not None and existing.get("checksum") == md5_of(path) and \
            all(existing.get(k) == v for k, v in properties.items()):
        return str(existing["id"])
    if existing is not None:
        client.request("DELETE", f"/image/v2/images/{existing['id']}")
    created = client.request("POST", "/image/v2/images", json={
        "name": name, "disk_format": fmt, "container_format": fmt, "visibility": "public",
        **properties})
    with open(path, "rb") as data:
        client.request("PUT", f"/image/v2/images/{created['id']}/file", content=data,
                       headers={"Content-Type": "application/octet-stream"})
    return str(created["id"])


def register(client: NovalogClient, files: TinyFiles) -> tuple[str, bool]:
    """(the `tiny` image's id, whether anything was registered or replaced)."""
    before = {name: _image(client, name) for name in ("tiny-kernel", "tiny-ramdisk", "tiny")}
    try:
        kernel = _upload(client, "tiny-kernel", files.kernel, "aki", {})
        ramdisk = _upload(client, "tiny-ramdisk", files.ramdisk, "ari", {})
        tiny = _upload(client, "tiny", files.disk, "ami", {
            "kernel_id": kernel, "ramdisk_id": ramdisk, "os_command_line": COMMAND_LINE,
            "hypervisor_type": "qemu", "hw_architecture": "x86_64",
            "novalog_kernel_version": files.kernel_version})
    except ApiFailure as exc:
        raise BuildError(f"the image API refused the tiny image: {exc}") from None
    after = {"tiny-kernel": kernel, "tiny-ramdisk": ramdisk, "tiny": tiny}
    changed = any((b or {}).get("id") != after[name] for name, b in before.items())
    return tiny, changed
