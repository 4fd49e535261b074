"""The config drive's content and its ISO 9660 image (pycdlib, no hypervisor)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from consumers.compute import config_drive
from schemas import payloads

NET: payloads.NetworkToAttach = {
    "network_id": "net-1", "name": "private", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
    "allocation_start": "10.0.0.2", "allocation_end": "10.0.0.254", "fixed_ip": None}
PORT: payloads.Port = {"port_id": "0123456789abcdef", "network_id": "net-1",
                       "network_name": "private", "ip_address": "10.0.0.7",
                       "mac_address": "fa:16:3e:00:00:07"}
FLAVOR: payloads.Flavor = {"flavorid": "1", "name": "m1.tiny", "vcpus": 1, "memory_mb": 512,
                           "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0, "extra_specs": {}}


def command(**kw: object) -> payloads.BuildAndRunInstance:
    base: payloads.BuildAndRunInstance = {
        "instance_uuid": "u-1", "host": "cmp1", "node": "cmp1", "attempt": 1,
        "name": "Web Server_1", "project_id": "p", "user_id": "u", "flavor": FLAVOR,
        "image": None, "networks": [NET], "block_device_mapping": [], "key_name": "mykey",
        "user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
        "metadata": {"role": "web"}, "server_group": None, "config_drive": True,
        "admin_password": None, "key_data": "ssh-ed25519 AAAA test", "launch_index": 2}
    return {**base, **kw}  # type: ignore[typeddict-item]


def test_the_drive_reads_back_as_novas_openstack_layout(tmp_path: Path) -> None:
    path = tmp_path / "disk.config"
    config_drive.write(path, config_drive.files(command(), [PORT], "az1", "s3cret"))
    assert config_drive.volume_label(path) == "config-2"
    back = config_drive.read(path)
    assert {p.split("/")[1] for p in back} == set(config_drive.VERSIONS)
    meta = json.loads(back["openstack/latest/meta_data.json"])
    assert (meta["uuid"], meta["name"], meta["hostname"], meta["launch_index"]) == \
        ("u-1", "Web Server_1", "web-server-1", 2)
    assert (meta["availability_zone"], meta["project_id"], meta["meta"]) == \
        ("az1", "p", {"role": "web"})
    assert meta["public_keys"] == {"mykey": "ssh-ed25519 AAAA test"}
    assert meta["keys"] == [{"name": "mykey", "type": "ssh", "data": "ssh-ed25519 AAAA test"}]
    assert meta["admin_pass"] == "s3cret" and len(base64.b64decode(meta["random_seed"])) == 512
    assert back["openstack/latest/user_data"] == b"#!/bin/sh\necho hi\n"
    net = json.loads(back["openstack/2018-08-27/network_data.json"])
    assert net["links"] == [{"id": "tap0123456789a", "vif_id": PORT["port_id"],
                             "type": "ethernet", "ethernet_mac_address": "fa:16:3e:00:00:07",
                             "mtu": 1500}]
    assert net["networks"] == [{
        "id": "network0", "type": "ipv4", "link": "tap0123456789a", "ip_address": "10.0.0.7",
        "netmask": "255.255.255.0", "network_id": "net-1", "services": [],
        "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}]}]
    assert json.loads(back["openstack/latest/vendor_data2.json"]) == {}
    assert not list(tmp_path.glob("*.part"))


def test_what_was_not_given_is_not_on_the_drive(tmp_path: Path) -> None:
    path = tmp_path / "disk.config"
    bare = command(key_name=None, key_data=None, user_data=None)
    config_drive.write(path, config_drive.files(bare, [], "nova", None))
    back = config_drive.read(path)
    meta = json.loads(back["openstack/latest/meta_data.json"])
    assert "public_keys" not in meta and "admin_pass" not in meta
    assert "openstack/latest/user_data" not in back
    assert json.loads(back["openstack/latest/network_data.json"])["links"] == []


def test_hostnames_are_sanitized_as_novas() -> None:
    assert config_drive.hostname("My.Host Name_x!") == "my-host-name-x"
    assert config_drive.hostname("---") == "server"
    assert len(config_drive.hostname("a" * 100)) == 63
