"""The compute driver and image cache with the real libvirt test driver and qemu-img."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from consumers.compute.driver import LibvirtDriver, domain_xml, host_definition
from consumers.compute.image_cache import ImageCache, ImageError, md5_of
from producers.catalog import make_image_file
from schemas import payloads

pytestmark = pytest.mark.integration

FLAVOR: payloads.Flavor = {"flavorid": "9", "name": "m1.test", "vcpus": 2, "memory_mb": 1024,
                           "root_gb": 2, "ephemeral_gb": 1, "swap_mb": 512, "extra_specs": {}}


def image(tmp_path: Path) -> payloads.ImageToBoot:
    path = make_image_file(tmp_path / "store")
    return {"id": str(uuid.uuid4()), "name": "cirros", "disk_format": "qcow2",
            "checksum": md5_of(path), "size": path.stat().st_size, "location": str(path),
            "properties": {}}


def test_disks_are_an_overlay_on_a_base_fetched_once_plus_ephemeral_and_swap(tmp_path) -> None:
    cache = ImageCache(tmp_path / "instances")
    img = image(tmp_path)
    first = cache.prepare_disks("a", img, FLAVOR)
    again = cache.prepare_disks("a", img, FLAVOR)  # re-delivered build: nothing new
    cache.prepare_disks("b", img, FLAVOR)
    assert first == again and cache.fetches == 1
    assert [d["device"] for d in first] == ["vda", "vdb", "vdc"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", first[0]["path"]],
                                     check=True, capture_output=True, text=True).stdout)
    base = cache.base_dir / hashlib.sha1(str(img["id"]).encode(),
                                         usedforsecurity=False).hexdigest()
    assert info["backing-filename"] == str(base) and info["virtual-size"] == 2 * 1024**3
    cache.remove("a")
    assert not (tmp_path / "instances" / "a").exists() and base.exists()


def test_a_bad_checksum_is_refused_and_caches_nothing(tmp_path) -> None:
    cache = ImageCache(tmp_path / "instances")
    with pytest.raises(ImageError, match="checksum"):
        cache.base_image({**image(tmp_path), "checksum": "0" * 32})
    assert not any(cache.base_dir.iterdir())


def test_spawn_defines_and_starts_a_domain_idempotently_and_destroy_removes_it(tmp_path):
    (tmp_path / "host.xml").write_text(host_definition(8, 16384))
    driver = LibvirtDriver(f"test://{tmp_path / 'host.xml'}")
    assert driver.host_resources() == (8, 16384)
    uuid_ = str(uuid.uuid4())
    port: payloads.Port = {"port_id": "p", "network_id": "n", "network_name": "private",
                           "mac_address": "fa:16:3e:00:00:09", "ip_address": "10.0.0.9"}
    disks: list[payloads.Disk] = [{"device": "vda", "path": str(tmp_path / "disk"),
                                   "format": "qcow2", "size_gb": 1, "backing_file": None}]
    xml = domain_xml(uuid_, "vm<1>", FLAVOR, disks, [port], tmp_path / "console.log")
    driver.spawn(xml, tmp_path / "libvirt.xml")
    driver.spawn(xml, tmp_path / "libvirt.xml")  # again: still one running domain
    dom = driver.conn.lookupByUUIDString(uuid_)
    assert dom.isActive() and dom.info()[3] == 2 and dom.maxMemory() == 1024 * 1024
    assert driver.instance_uuids() == [uuid_]
    assert "fa:16:3e:00:00:09" in (tmp_path / "libvirt.xml").read_text()
    driver.destroy(uuid_)
    driver.destroy(uuid_)  # twice: no error
    assert driver.instance_uuids() == []
    with pytest.raises(libvirt.libvirtError):
        driver.conn.lookupByUUIDString(uuid_)
    driver.close()
