"""The compute driver and image cache with the real libvirt test driver and qemu-img."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from consumers.compute.driver import LibvirtDriver, domain_xml, host_definition
from consumers.compute.image_cache import ImageCache, ImageError
from consumers.compute.manager import ComputeIdentity, ComputeManager
from consumers.compute.resource_tracker import HostTotals, ResourceTracker
from novalog.db import make_pool
from novalog.domain.claims import claim_of
from novalog.image_files import md5_of
from novalog.kafka import Topics
from novalog.migrations import migrate
from novalog.read_model import ServerState
from novalog.settings import Settings
from producers.catalog import make_image_file
from schemas import payloads
from tests.fakes import FakeProjection, InMemorySink, publisher

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


def test_disks_copied_from_the_first_are_the_bytes_qemu_img_makes(tmp_path: Path) -> None:
    """Disks after the first of a kind are copies: each one byte for byte what qemu-img
    makes itself, a valid qcow2 on its own, and independent of the others."""
    cache = ImageCache(tmp_path / "instances")
    img = image(tmp_path)
    disks = [cache.prepare_disks(name, img, FLAVOR) for name in ("a", "b", "c")]
    base = str(cache.base_path(img))
    made = tmp_path / "by-qemu-img"
    made.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                    str(made / "disk"), "2G"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(made / "disk.eph0"), "1G"],
                   check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(made / "disk.swap"),
                    "512M"], check=True)
    for layout in disks:
        for disk in layout:
            path = Path(disk["path"])
            assert path.read_bytes() == (made / path.name).read_bytes(), path
            subprocess.run(["qemu-img", "check", "-q", str(path)], check=True)
    # written into one overlay, the others do not change
    subprocess.run(["qemu-io", "-c", "write -P 7 0 64k", disks[0][0]["path"]], check=True,
                   capture_output=True)
    assert Path(disks[1][0]["path"]).read_bytes() == (made / "disk").read_bytes()
    assert not list((tmp_path / "instances").rglob("*.part"))


def test_a_bad_checksum_is_refused_and_caches_nothing(tmp_path) -> None:
    cache = ImageCache(tmp_path / "instances")
    with pytest.raises(ImageError, match="checksum"):
        cache.base_image({**image(tmp_path), "checksum": "0" * 32})
    assert not any(cache.base_dir.iterdir())


def test_spawn_defines_and_starts_a_domain_idempotently_and_destroy_removes_it(tmp_path):
    (tmp_path / "host.xml").write_text(host_definition(8, 16384))
    driver = LibvirtDriver(f"test://{tmp_path / 'host.xml'}", "cmpx")
    assert driver.host_resources() == (8, 16384)
    uuid_ = str(uuid.uuid4())
    port: payloads.Port = {"port_id": "p", "network_id": "n", "network_name": "private",
                           "mac_address": "fa:16:3e:00:00:09", "ip_address": "10.0.0.9"}
    disks: list[payloads.Disk] = [{"device": "vda", "path": str(tmp_path / "disk"),
                                   "format": "qcow2", "size_gb": 1, "backing_file": None}]
    xml = domain_xml(uuid_, "vm<1>", FLAVOR, disks, [port], tmp_path / "console.log", "cmpx")
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


def test_hosts_sharing_one_libvirt_touch_only_their_own_domains(tmp_path: Path) -> None:
    """qemu1 and qemu2 on one machine's libvirt: after a move, the destination's domain
    has the instance's uuid, and the source's clean-up must not destroy it."""
    (tmp_path / "host.xml").write_text(host_definition(8, 16384))
    one = LibvirtDriver(f"test://{tmp_path / 'host.xml'}", "qemu1", "cloud")
    two = LibvirtDriver(one.uri, "qemu2", "cloud")
    two._conn = one.conn  # one daemon, two compute hosts
    one.shared = two.shared = True
    uid = str(uuid.uuid4())
    one.spawn(domain_xml(uid, "vm", FLAVOR, [], [], tmp_path / "c.log", one.owner),
              tmp_path / "one.xml")
    other = LibvirtDriver(one.uri, "qemu1", "another-cloud")  # its own qemu1
    other._conn, other.shared = one.conn, True
    assert one.instance_uuids() == [uid] and two.instance_uuids() == []
    assert other.instance_uuids() == [] and other.power_state_of(uid) is None
    assert (one.running_count(), two.running_count()) == (1, 0)
    two.destroy(uid)  # not qemu2's: left alone
    assert one.power_state_of(uid) == 1 and two.power_state_of(uid) is None
    two.spawn(domain_xml(uid, "vm", FLAVOR, [], [], tmp_path / "c.log", two.owner),
              tmp_path / "two.xml")  # the move's destination defines it as its own
    one.destroy(uid)  # the source's clean-up
    assert two.instance_uuids() == [uid] and one.instance_uuids() == []
    two.destroy(uid)
    with pytest.raises(libvirt.libvirtError):
        one.conn.lookupByUUIDString(uid)
    one.close()


def test_the_power_state_sync_follows_what_libvirt_says(settings: Settings,
                                                        tmp_path: Path) -> None:
    """A guest shut off behind novalog's back becomes stopped, a vanished one is reported
    once, a stopped one started behind its back is stopped again, and nothing is touched
    while a task is in progress (real libvirt test driver, real claims in Postgres)."""
    schema = f"sync_{uuid.uuid4().hex[:8]}"
    migrate(settings, schema)
    pool = make_pool(replace(settings, db_schema=schema))
    (tmp_path / "host.xml").write_text(host_definition(8, 16384))
    driver = LibvirtDriver(f"test://{tmp_path / 'host.xml'}", "cmpx")
    tracker = ResourceTracker(pool, "cmpx", HostTotals(8, 16384, 100, 4.0, 1.0, 1.0))
    tracker.register()
    sink, projection = InMemorySink(), FakeProjection()
    manager = ComputeManager(ComputeIdentity("cmpx"), tracker, driver,
                             ImageCache(tmp_path / "instances"), publisher(sink, "compute"),
                             Topics("t"), projection)
    off, gone, busy = (str(uuid.uuid4()) for _ in range(3))
    for uid in (off, gone, busy):
        command = payloads.BuildAndRunInstance(
            instance_uuid=uid, host="cmpx", node="cmpx", attempt=1, name=uid[:8],
            project_id="p", user_id="u", flavor=FLAVOR, image=None, networks=[],
            block_device_mapping=[],
            key_name=None, user_data=None, metadata={}, server_group=None,
            config_drive=False, admin_password=None, key_data=None, launch_index=0)
        assert tracker.claim(uid, 1, claim_of(FLAVOR), command).accepted
        tracker.set_stage(uid, "active")
        driver.spawn(domain_xml(uid, uid[:8], FLAVOR, [], [], tmp_path / f"{uid}.log", "cmpx"),
                     tmp_path / f"{uid}.xml")
    projection.servers[busy] = ServerState("active", "rebooting", "cmpx", 1)
    driver.conn.lookupByUUIDString(off).destroy()  # shut off behind novalog's back
    driver.conn.lookupByUUIDString(busy).destroy()  # ... while a reboot is under way
    driver.destroy(gone)  # vanished
    manager.sync_power_states()
    seen = [(e.event_type, e.aggregate_id, e.payload["power_state"]) for e in sink.events()]
    assert sorted(seen) == sorted([("InstanceStopped", off, 4),
                                   ("InstancePowerStateChanged", gone, 0)])
    assert tracker.instances_at("stopped") == [off]
    manager.sync_power_states()  # nothing new: each fact is said once
    assert len(sink.events()) == 2
    driver.conn.lookupByUUIDString(off).create()  # started behind novalog's back
    manager.sync_power_states()
    assert not driver.conn.lookupByUUIDString(off).isActive() and len(sink.events()) == 2
    driver.close()
    pool.close()


def _command(uid: str, host: str, flavor: payloads.Flavor,
             group: payloads.ServerGroupPolicy | None) -> payloads.BuildAndRunInstance:
    return payloads.BuildAndRunInstance(
        instance_uuid=uid, host=host, node=host, attempt=1, name=uid[:8], project_id="p",
        user_id="u", flavor=flavor, image=None, networks=[], block_device_mapping=[],
        key_name=None, user_data=None, metadata={}, server_group=group, config_drive=False,
        admin_password=None, key_data=None, launch_index=0)


def test_a_claim_refuses_what_is_larger_than_the_host_and_a_broken_group_policy(
        settings: Settings) -> None:
    """The host's late checks, in Postgres under its claim lock: no instance larger than
    the host whatever the ratio (placement's max_unit), and a build that a racing one
    would put beside its anti-affinity peer (or away from its affinity peers) is refused
    (Nova's _validate_instance_group_policy), so the conductor reschedules it."""
    schema = f"claims_{uuid.uuid4().hex[:8]}"
    migrate(settings, schema)
    pool = make_pool(replace(settings, db_schema=schema))
    hosts = {h: ResourceTracker(pool, h, HostTotals(4, 8192, 100, 16.0, 1.5, 1.0))
             for h in ("cmpa", "cmpb")}
    for tracker in hosts.values():
        tracker.register()
    a = hosts["cmpa"]
    wide: payloads.Flavor = {**FLAVOR, "vcpus": 5}  # 64 vCPUs after the ratio, 4 CPUs
    result = a.claim("wide", 1, claim_of(wide), _command("wide", "cmpa", wide, None))
    assert (result.accepted, result.reason) == (
        False, "Insufficient vCPU on cmpa: 5 requested, the host has 4")
    big: payloads.Flavor = {**FLAVOR, "memory_mb": 9000}  # fits 8192 x 1.5, not one host's 8192
    assert not a.claim("big", 1, claim_of(big), _command("big", "cmpa", big, None)).accepted
    apart: payloads.ServerGroupPolicy = {"group_id": "g1", "policy": "anti-affinity"}
    assert a.claim("m1", 1, claim_of(FLAVOR), _command("m1", "cmpa", FLAVOR, apart)).accepted
    late = a.claim("m2", 1, claim_of(FLAVOR), _command("m2", "cmpa", FLAVOR, apart))
    assert (late.accepted, late.reason) == (
        False, "Anti-affinity instance group policy was violated.")
    assert hosts["cmpb"].claim("m2", 2, claim_of(FLAVOR),
                               _command("m2", "cmpb", FLAVOR, apart)).accepted
    assert a.claim("m1", 1, claim_of(FLAVOR),  # a re-delivered claim is still the same one
                   _command("m1", "cmpa", FLAVOR, apart)).duplicate
    together: payloads.ServerGroupPolicy = {"group_id": "g2", "policy": "affinity"}
    assert a.claim("t1", 1, claim_of(FLAVOR), _command("t1", "cmpa", FLAVOR, together)).accepted
    away = hosts["cmpb"].claim("t2", 1, claim_of(FLAVOR),
                               _command("t2", "cmpb", FLAVOR, together))
    assert (away.accepted, away.reason) == (False, "Affinity instance group policy was violated.")
    soft: payloads.ServerGroupPolicy = {"group_id": "g3", "policy": "soft-anti-affinity"}
    for uid in ("s1", "s2"):  # a soft policy is the weighers' preference, never a refusal
        assert a.claim(uid, 1, claim_of(FLAVOR), _command(uid, "cmpa", FLAVOR, soft)).accepted
    pool.close()
