"""Block storage end to end: the stock openstack client creates, attaches, detaches and
deletes volumes and boots servers from them on a running novalog (issue 14).

Each step is checked where it lands: the status the client prints, the volume's file
on the volume store, the disk in the domain's definition on the server's host (the
libvirt.xml the agent keeps from libvirt), and the history on the volumes topic.
Bad requests get Cinder's or Nova's status and message, and publish nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novalog.client import ApiFailure
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud
from tests.e2e.test_openstack_clients import osc, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("volumes") / "home", hosts=2,
                       extra_env={"NOVALOG_COMPUTE_MEMORY_MB": "8192"}) as c:  # no m1.xlarge
        c.raise_quotas()
        yield c


def until_volume(cloud: Cloud, name: str, want: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        volume = osc(cloud, "volume", "show", name)
        if volume["status"] == want:
            return dict(volume)
        assert volume["status"] != "error" and time.monotonic() < deadline, volume
        time.sleep(0.3)


def domain_disks(cloud: Cloud, server: dict[str, Any]) -> dict[str, str]:
    """device -> file of the server's domain, from the definition its host keeps."""
    import xml.etree.ElementTree as ElementTree

    host = server["OS-EXT-SRV-ATTR:host"]
    xml = (cloud.home / "compute" / host / "instances" / server["id"] / "libvirt.xml")
    disks = {}
    for disk in ElementTree.fromstring(xml.read_text()).iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        assert target is not None and source is not None
        disks[str(target.get("dev"))] = str(source.get("file"))
    return disks


def volume_file(cloud: Cloud, volume_id: str) -> Path:
    return cloud.home / "volumes" / f"volume-{volume_id}"


def history(cloud: Cloud, volume_id: str) -> list[dict[str, Any]]:
    client = cloud.client()
    events: list[dict[str, Any]] = client.get(
        f"/volume/v3/{client.project_id}/volumes/{volume_id}/audit")["events"]
    return events


def volume_events(cloud: Cloud) -> int:
    return len(cloud.topic_events(f"{cloud.settings.topic_prefix}.volumes"))


def test_create_attach_detach_delete_with_the_stock_client(cloud: Cloud) -> None:
    created = osc(cloud, "volume", "create", "--size", "1", "v1")
    assert (created["name"], created["size"], created["status"]) == ("v1", 1, "creating")
    volume = until_volume(cloud, "v1", "available")
    assert volume["bootable"] is False and volume["attachments"] == []
    path = volume_file(cloud, volume["id"])
    assert path.is_file()
    assert [(v["Name"], v["Status"]) for v in osc(cloud, "volume", "list")] == \
        [("v1", "available")]

    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--network", "private", "--wait", "vm")
    attached = osc(cloud, "server", "add", "volume", "vm", "v1")
    assert attached["Device"] == "/dev/vdb" and attached["Volume ID"] == volume["id"]
    in_use = until_volume(cloud, "v1", "in-use")
    [attachment] = in_use["attachments"]
    assert (attachment["server_id"], attachment["device"]) == (server["id"], "/dev/vdb")
    server = osc(cloud, "server", "show", "vm")
    assert domain_disks(cloud, server)["vdb"] == str(path)
    assert [v["Volume ID"] for v in osc(cloud, "server", "volume", "list", "vm")] == \
        [volume["id"]]
    listed = {v["Name"]: v for v in osc(cloud, "volume", "list")}
    assert listed["v1"]["Status"] == "in-use"
    assert [a["server_id"] for a in listed["v1"]["Attached to"]] == [server["id"]]

    before = volume_events(cloud)
    refused = run(cloud, "openstack", "volume", "delete", "v1", ok=False)
    assert refused.returncode == 1 and "Invalid volume: Volume status must be available" \
        in refused.stderr
    assert osc(cloud, "volume", "show", "v1")["status"] == "in-use"
    assert volume_events(cloud) == before  # refused: nothing published

    run(cloud, "openstack", "server", "remove", "volume", "vm", "v1")
    until_volume(cloud, "v1", "available")
    assert "vdb" not in domain_disks(cloud, osc(cloud, "server", "show", "vm"))
    run(cloud, "openstack", "volume", "delete", "v1")
    deadline = time.monotonic() + 30
    while osc(cloud, "volume", "list"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert not path.exists()
    steps = [(e["event_type"], e["status"]) for e in history(cloud, volume["id"])]
    assert [s for _, s in steps] == ["creating", "available", "reserved", "attaching",
                                     "in-use", "detaching", "available", "deleting",
                                     "deleted"], steps
    run(cloud, "openstack", "server", "delete", "--wait", "vm")


def test_boot_from_volume_and_from_an_existing_volume(cloud: Cloud) -> None:
    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--network", "private", "--boot-from-volume", "1", "--wait", "bfv")
    assert server["status"] == "ACTIVE" and server["image"] == "N/A (booted from volume)"
    [root] = server["volumes_attached"]
    volume = osc(cloud, "volume", "show", root["id"])
    assert (volume["status"], volume["bootable"], volume["size"]) == ("in-use", True, 1)
    assert volume["attachments"][0]["device"] == "/dev/vda"
    disks = domain_disks(cloud, server)
    assert disks == {"vda": str(volume_file(cloud, root["id"]))}  # no local root disk
    refused = run(cloud, "openstack", "server", "remove", "volume", "bfv", root["id"],
                  ok=False)
    assert "Cannot detach a root device volume" in refused.stderr

    run(cloud, "openstack", "server", "delete", "--wait", "bfv")
    kept = until_volume(cloud, root["id"], "available")  # delete_on_termination false
    assert kept["attachments"] == []
    again = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--volume", root["id"],
                "--network", "private", "--wait", "bfv2")
    assert again["status"] == "ACTIVE"
    assert domain_disks(cloud, again) == {"vda": str(volume_file(cloud, root["id"]))}
    until_volume(cloud, root["id"], "in-use")
    run(cloud, "openstack", "server", "delete", "--wait", "bfv2")
    until_volume(cloud, root["id"], "available")
    run(cloud, "openstack", "volume", "delete", root["id"])

    client = cloud.client()  # delete_on_termination true, through the API
    net = client.find("network", "private")["id"]
    created = client.request("POST", "/compute/v2.1/servers", json={"server": {
        "name": "bfv3", "flavorRef": "1", "imageRef": "", "networks": [{"uuid": net}],
        "block_device_mapping_v2": [{
            "uuid": cloud.image_id(), "source_type": "image", "destination_type": "volume",
            "boot_index": 0, "volume_size": 1, "delete_on_termination": True}]}})
    server_id = created["server"]["id"]
    assert cloud.wait_servers([server_id])[server_id]["status"] == "ACTIVE"
    [root] = client.get(f"/compute/v2.1/servers/{server_id}")["server"][
        "os-extended-volumes:volumes_attached"]
    assert volume_file(cloud, root["id"]).exists()
    run(cloud, "openstack", "server", "delete", "--wait", server_id)
    deadline = time.monotonic() + 30
    while volume_file(cloud, root["id"]).exists() or osc(cloud, "volume", "list"):
        assert time.monotonic() < deadline, "the volume outlived its server"
        time.sleep(0.3)


def test_bad_volume_requests_get_cinder_and_nova_errors_and_change_nothing(
        cloud: Cloud) -> None:
    admin, demo = cloud.client(), cloud.client("demo", project="demo")
    base, demo_base = f"/volume/v3/{admin.project_id}", f"/volume/v3/{demo.project_id}"
    mine = admin.request("POST", f"{base}/volumes", json={"volume": {"size": 1, "name": "a"}})
    theirs = demo.request("POST", f"{demo_base}/volumes",
                          json={"volume": {"size": 1, "name": "d"}})
    until_volume(cloud, "a", "available")
    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--network", "private", "--wait", "bad")
    attach = f"/compute/v2.1/servers/{server['id']}/os-volume_attachments"
    before = volume_events(cloud)

    def refused(client: Any, method: str, path: str, status: int, message: str,
                **body: Any) -> None:
        with pytest.raises(ApiFailure) as caught:
            client.request(method, path, **({"json": body} if body else {}))
        assert caught.value.status == status and message in caught.value.message, \
            caught.value

    refused(admin, "POST", attach, 404, "Volume 00000000-0000-0000-0000-000000000000 could "
            "not be found.", volumeAttachment={"volumeId": "00000000-0000-0000-0000-"
                                                            "000000000000"})
    refused(admin, "POST", attach, 404, "could not be found",  # another project's volume
            volumeAttachment={"volumeId": theirs["volume"]["id"]})
    refused(demo, "GET", f"{demo_base}/volumes/{mine['volume']['id']}", 404,
            "could not be found")
    refused(demo, "GET", f"{base}/volumes/detail", 403, "Policy doesn't allow")
    refused(admin, "POST", f"{base}/volumes", 413, "VolumeSizeExceedsAvailableQuota: "
            "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 2000G, "
            "quota is 1000G", volume={"size": 2000, "name": "huge"})
    run(cloud, "openstack", "quota", "set", "--gigabytes", "1", "demo")  # Cinder's quota
    refused(demo, "POST", f"{demo_base}/volumes", 413, "Requested 1G, quota is 1G and 1G has "
            "been consumed.", volume={"size": 1, "name": "one-too-many"})
    refused(admin, "POST", f"{base}/volumes", 400, "Volume size must be specified",
            volume={"name": "sizeless"})
    refused(admin, "DELETE", f"{base}/volumes/00000000-0000-0000-0000-000000000000", 404,
            "could not be found")
    refused(admin, "DELETE", f"{attach}/{mine['volume']['id']}", 404,
            f"Instance {server['id']} is not attached to volume {mine['volume']['id']}")
    net = admin.find("network", "private")["id"]
    bfv = {"name": "nope", "flavorRef": "1", "imageRef": "", "networks": [{"uuid": net}]}
    image_to_volume = {"uuid": cloud.image_id(), "source_type": "image",
                       "destination_type": "volume", "boot_index": 0}
    refused(admin, "POST", "/compute/v2.1/servers", 400, "Images with destination_type "
            "'volume' need to have a non-zero size specified",
            server={**bfv, "block_device_mapping_v2": [image_to_volume]})
    refused(admin, "POST", "/compute/v2.1/servers", 400, "Block Device Mapping is Invalid: "
            f"failed to get volume {theirs['volume']['id']}.",
            server={**bfv, "block_device_mapping_v2": [{
                "uuid": theirs["volume"]["id"], "source_type": "volume",
                "destination_type": "volume", "boot_index": 0}]})
    refused(admin, "POST", "/compute/v2.1/servers", 400,
            f"Block Device {mine['volume']['id']} is not bootable.",
            server={**bfv, "block_device_mapping_v2": [{
                "uuid": mine["volume"]["id"], "source_type": "volume",
                "destination_type": "volume", "boot_index": 0}]})
    osc(cloud, "flavor", "create", "--ram", "256", "--vcpus", "1", "--disk", "0", "zero")
    refused(demo, "POST", "/compute/v2.1/servers", 403, "Only volume-backed servers are "
            "allowed for flavors with zero disk.", server={
                "name": "nope", "flavorRef": osc(cloud, "flavor", "show", "zero")["id"],
                "imageRef": cloud.image_id(), "networks": "auto"})
    run(cloud, "openstack", "flavor", "delete", "zero")
    assert volume_events(cloud) == before  # nothing refused was published
    assert {v["name"]: v["status"] for v in admin.get(f"{base}/volumes/detail")["volumes"]} \
        == {"a": "available"}

    admin.request("POST", attach, json={"volumeAttachment": {"volumeId": mine["volume"]["id"]}})
    until_volume(cloud, "a", "in-use")
    other = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                "--network", "private", "--wait", "other")
    refused(admin, "POST", f"/compute/v2.1/servers/{other['id']}/os-volume_attachments", 400,
            f"Invalid volume: volume {mine['volume']['id']} is already attached to instances: "
            f"{server['id']}", volumeAttachment={"volumeId": mine["volume"]["id"]})
    run(cloud, "openstack", "server", "delete", "--wait", "bad", "other")
    free = until_volume(cloud, "a", "available")  # the delete let go of the attachment
    assert free["attachments"] == []
    run(cloud, "openstack", "volume", "delete", "a")
    demo.request("DELETE", f"{demo_base}/volumes/{theirs['volume']['id']}")


def test_the_novalog_volume_verbs_and_a_replay_agree(cloud: Cloud) -> None:
    created = cloud.cli("volume", "create", "cli-vol", "--size", "1", "--wait")
    assert created.returncode == 0 and "available" in created.stdout, created.stderr
    boot = cloud.cli("boot", "cli-vm", "--flavor", "m1.tiny", "--image", "cirros", "--wait")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    attached = cloud.cli("volume", "attach", "cli-vm", "cli-vol", "--wait")
    assert attached.returncode == 0 and "in-use" in attached.stdout, attached.stderr
    listed = cloud.cli("volume", "list")
    assert "cli-vol" in listed.stdout and "in-use" in listed.stdout
    shown = cloud.cli("volume", "history", "cli-vol")
    assert shown.returncode == 0 and "VolumeAttached" in shown.stdout, shown.stderr
    replay = cloud.cli("replay", "--verify", timeout=300)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    detached = cloud.cli("volume", "detach", "cli-vm", "cli-vol", "--wait")
    assert detached.returncode == 0 and "available" in detached.stdout, detached.stderr
    deleted = cloud.cli("volume", "delete", "cli-vol", "--wait")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout, deleted.stderr
    assert cloud.cli("delete", "cli-vm", "--wait").returncode == 0


def test_volumes_move_with_their_server_and_a_delete_lets_them_go(cloud: Cloud) -> None:
    """A live migration and a resize carry the attached volume to the destination, on the
    same device; the attachment then names the new host."""
    osc(cloud, "volume", "create", "--size", "1", "mv")
    volume = until_volume(cloud, "mv", "available")
    boot = cloud.cli("boot", "mover", "--flavor", "m1.tiny", "--image", "cirros", "--wait")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    run(cloud, "openstack", "server", "add", "volume", "mover", "mv")
    until_volume(cloud, "mv", "in-use")
    path = str(volume_file(cloud, volume["id"]))
    for step in (("live-migrate", "mover"), ("resize", "mover", "m1.small"),
                 ("confirm-resize", "mover")):
        before = osc(cloud, "server", "show", "mover")["OS-EXT-SRV-ATTR:host"]
        moved = cloud.cli(*step, "--wait", timeout=240)
        assert moved.returncode == 0, (step, moved.stdout + moved.stderr)
        server = osc(cloud, "server", "show", "mover")
        if step[0] != "confirm-resize":
            assert server["OS-EXT-SRV-ATTR:host"] != before, step
        assert domain_disks(cloud, server)["vdb"] == path, step
        deadline = time.monotonic() + 30
        while (shown := osc(cloud, "volume", "show", "mv"))["attachments"][0].get(
                "host_name") != server["OS-EXT-SRV-ATTR:host"]:
            assert time.monotonic() < deadline, (step, shown["attachments"])
            time.sleep(0.3)
    run(cloud, "openstack", "server", "delete", "--wait", "mover")
    assert until_volume(cloud, "mv", "available")["attachments"] == []
    run(cloud, "openstack", "volume", "delete", "mv")


def test_a_volume_from_an_image_is_released_by_a_build_that_finds_no_host(
        cloud: Cloud) -> None:
    import json
    import subprocess

    osc(cloud, "volume", "create", "--image", "cirros", "--size", "1", "boot-vol")
    volume = until_volume(cloud, "boot-vol", "available")
    assert volume["bootable"] is True
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(volume_file(cloud, volume["id"]))],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 2**30)
    failed = run(cloud, "openstack", "server", "create", "--flavor", "m1.xlarge", "--volume",
                 "boot-vol", "--network", "private", "--wait", "too-big", ok=False)
    assert failed.returncode == 1
    server = osc(cloud, "server", "show", "too-big")
    assert server["status"] == "ERROR"
    assert until_volume(cloud, "boot-vol", "available")["attachments"] == []
    refused = run(cloud, "openstack", "server", "add", "volume", "too-big", "boot-vol",
                  ok=False)  # Nova's state check: an ERROR server takes no volume
    assert f"Cannot 'attach_volume' instance {server['id']} while it is in vm_state error" \
        in refused.stderr
    run(cloud, "openstack", "server", "delete", "--wait", "too-big")
    run(cloud, "openstack", "volume", "delete", "boot-vol")
