"""Where novalog answers as Nova does (issue 17): views, headers, messages and placement,
on a 2-host cloud in zone az1 whose hosts have 2 CPUs each (ratio 16), with two
scheduler replicas (real broker, Postgres, libvirt test driver)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOVALID = "No valid host was found. There are not enough hosts available."


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    env = {"NOVALOG_COMPUTE_ZONE": "az1", "NOVALOG_COMPUTE_VCPUS": "2",
           "NOVALOG_CPU_ALLOCATION_RATIO": "16"}
    with running_cloud(infra, tmp_path_factory.mktemp("parity") / "home", hosts=2,
                       replicas=2, extra_env=env) as c:
        c.raise_quotas()
        yield c


def _create(cloud: Cloud, name: str, hints: dict[str, str] | None = None,
            **server: Any) -> tuple[dict[str, Any], Any]:
    client = cloud.client()
    body: dict[str, Any] = {"server": {"name": name, "flavorRef": "1",
                                       "imageRef": cloud.image_id(), **server}}
    if hints:
        body["os:scheduler_hints"] = hints
    response = client.http.post("/compute/v2.1/servers", json=body,
                                headers={"X-Auth-Token": client.token()})
    assert response.status_code == 202, response.text
    return response.json(), response.headers


def _domain_name(cloud: Cloud, server: dict[str, Any]) -> str | None:
    xml = (cloud.home / "compute" / server["OS-EXT-SRV-ATTR:host"] / "instances" /
           server["id"] / "libvirt.xml")
    return ET.parse(xml).getroot().findtext("name")


def test_views_and_headers_are_novas(cloud: Cloud) -> None:
    """202 with Location (the self link); progress only where Nova shows it; the host's
    zone; instance_name as Nova's template makes it, and the libvirt domain's name."""
    body, headers = _create(cloud, "viewed")
    assert headers["Location"] == next(
        link["href"] for link in body["server"]["links"] if link["rel"] == "self")
    server_id = body["server"]["id"]
    admin = cloud.client()
    server = cloud.wait_servers([server_id])[server_id]
    assert server["status"] == "ACTIVE" and server["progress"] == 0
    assert server["OS-EXT-AZ:availability_zone"] == "az1"  # asked for none: the host's zone
    name = server["OS-EXT-SRV-ATTR:instance_name"]
    assert re.fullmatch(r"instance-[0-9a-f]{8,}", name) and _domain_name(cloud, server) == name
    admin.request("POST", f"/compute/v2.1/servers/{server_id}/action", json={"os-stop": None})
    deadline = time.monotonic() + 30
    while (shown := admin.get(f"/compute/v2.1/servers/{server_id}")["server"])["status"] \
            != "SHUTOFF":
        assert time.monotonic() < deadline, shown["status"]
        time.sleep(0.2)
    assert "progress" not in shown  # SHUTOFF is not among Nova's _progress_statuses


def test_a_flavor_wider_than_every_host_is_no_valid_host_and_only_admins_see_why(
        cloud: Cloud) -> None:
    """4 vCPUs fit 2 CPUs x ratio 16 but not placement's max_unit (the 2 physical CPUs)."""
    admin = cloud.client()
    admin.request("POST", "/compute/v2.1/flavors", json={"flavor": {
        "name": "m1.wide", "id": "wide", "vcpus": 4, "ram": 512, "disk": 1}})
    demo = cloud.client("demo", "demo", "demo")
    created = demo.request("POST", "/compute/v2.1/servers", json={"server": {
        "name": "wide", "flavorRef": "wide", "imageRef": cloud.image_id()}})
    server_id = created["server"]["id"]
    assert cloud.wait_servers([server_id])[server_id]["status"] == "ERROR"
    mine = demo.get(f"/compute/v2.1/servers/{server_id}")["server"]
    assert mine["fault"]["message"] == NOVALID and "details" not in mine["fault"]
    seen = admin.get(f"/compute/v2.1/servers/{server_id}")["server"]
    assert seen["fault"]["message"] == NOVALID
    assert seen["fault"]["details"] == "CoreFilter removed 2 of 2"


def test_a_forced_host_takes_a_build_even_disabled(cloud: Cloud) -> None:
    admin = cloud.client()
    admin.request("PUT", "/compute/v2.1/os-services/disable",
                  json={"host": "cmp2", "binary": "nova-compute"})
    try:
        body, _ = _create(cloud, "forced", availability_zone="az1:cmp2")
        server_id = body["server"]["id"]
        server = cloud.wait_servers([server_id])[server_id]
        assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", "cmp2")
        body, _ = _create(cloud, "unforced")  # the scheduler's own choice avoids it
        other = cloud.wait_servers([body["server"]["id"]])[body["server"]["id"]]
        assert other["OS-EXT-SRV-ATTR:host"] == "cmp1"
    finally:
        admin.request("PUT", "/compute/v2.1/os-services/enable",
                      json={"host": "cmp2", "binary": "nova-compute"})


def _group(cloud: Cloud, name: str) -> str:
    return str(cloud.client().request("POST", "/compute/v2.1/os-server-groups", json={
        "server_group": {"name": name, "policies": ["anti-affinity"]}})["server_group"]["id"])


def test_the_host_refuses_a_member_beside_its_anti_affinity_peer(cloud: Cloud) -> None:
    """A forced host skips the scheduler's filters, so the second member reaches the
    host its peer is on: the host's own late check refuses it (Nova's
    _validate_instance_group_policy), and a forced build is not rescheduled."""
    group = _group(cloud, "forced-apart")
    first, _ = _create(cloud, "apart-1", availability_zone="az1:cmp1", hints={"group": group})
    cloud.wait_servers([first["server"]["id"]])
    second, _ = _create(cloud, "apart-2", availability_zone="az1:cmp1", hints={"group": group})
    refused = cloud.wait_servers([second["server"]["id"]])[second["server"]["id"]]
    assert refused["status"] == "ERROR"
    assert "Anti-affinity instance group policy was violated." in refused["fault"]["message"]


def test_racing_anti_affinity_members_never_share_a_host(cloud: Cloud) -> None:
    """Pairs of members asked for at once, each pair's two builds likely on the two
    scheduler replicas: whatever the schedulers decide, the hosts' late check keeps
    every pair apart (a refused claim is rescheduled to the other host)."""
    pairs = [(_group(cloud, f"race-{i}"), i) for i in range(6)]
    created: list[tuple[str, str]] = []
    lock = threading.Lock()

    def boot(group: str, name: str) -> None:
        body, _ = _create(cloud, name, hints={"group": group})
        with lock:
            created.append((group, body["server"]["id"]))

    threads = [threading.Thread(target=boot, args=(g, f"race-{i}-{m}"))
               for g, i in pairs for m in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    servers = cloud.wait_servers([s for _, s in created], timeout=120)
    hosts: dict[str, list[str]] = {}
    for group, server_id in created:
        assert servers[server_id]["status"] == "ACTIVE", servers[server_id].get("fault")
        hosts.setdefault(group, []).append(servers[server_id]["OS-EXT-SRV-ATTR:host"])
    assert all(len(set(h)) == 2 for h in hosts.values()), hosts
    events = cloud.topic_events(f"{cloud.settings.topic_prefix}.instances")
    late = [e for e in events if e.event_type == "InstanceClaimRefused"
            and "Anti-affinity" in str(e.payload["reason"])]
    print(f"{len(late)} late anti-affinity refusals in {len(pairs)} racing pairs")


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \d+ [A-Z]+ [\w.]+ "
                      r"\[(req-[0-9a-f-]{36}|-) (req-[0-9a-f-]{36}|-)\] .* \(\w+\.py:\d+\)")


def test_one_request_id_from_the_response_through_every_roles_log(cloud: Cloud) -> None:
    """oslo's request ids: a fresh one per response (X-OpenStack-Request-ID, and
    X-Compute-Request-ID on compute), the caller's honoured as the global one; both in
    every role's lines for that request, which `novalog logs --request` gathers."""
    caller = "req-0b0e2c9c-5a4f-4f3b-9c61-1d2f3e4a5b6c"
    client = cloud.client()
    response = client.http.post("/compute/v2.1/servers", json={"server": {
        "name": "traced", "flavorRef": "1", "imageRef": cloud.image_id()}},
        headers={"X-Auth-Token": client.token(), "X-OpenStack-Request-ID": caller})
    assert response.status_code == 202
    mine = response.headers["X-OpenStack-Request-ID"]
    assert re.fullmatch(r"req-[0-9a-f-]{36}", mine) and mine != caller
    assert response.headers["X-Compute-Request-ID"] == mine
    server_id = response.json()["server"]["id"]
    assert cloud.wait_servers([server_id])[server_id]["status"] == "ACTIVE"
    actions = client.get(f"/compute/v2.1/servers/{server_id}/os-instance-actions")
    assert [a["request_id"] for a in actions["instanceActions"]] == [mine]
    identity = cloud.http().get("/identity/v3")
    assert re.fullmatch(r"req-[0-9a-f-]{36}", identity.headers["X-OpenStack-Request-ID"])
    assert "X-Compute-Request-ID" not in identity.headers
    deadline = time.monotonic() + 15
    while True:
        result = cloud.cli("logs", "--request", mine)
        roles = {re.sub(r"-\d+$", "", line.split()[0]) for line in result.stdout.splitlines()}
        if {"api", "scheduler", "conductor", "network"} <= roles and \
                any(r.startswith("compute-cmp") for r in roles) and \
                "seconds to spawn the instance" in result.stdout:  # the last line it causes
            break
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)
    for line in result.stdout.splitlines():
        assert LOG_LINE.fullmatch(line.split(None, 1)[1]), line
        assert f"[{caller} {mine}]" in line, line
    by_caller = cloud.cli("logs", "--request", caller)
    assert by_caller.stdout == result.stdout
    missing = cloud.cli("logs", "--request", "req-00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no log line" in missing.stdout
    assert cloud.cli("logs", "--request", "bogus").returncode == 1


def test_what_a_post_gives_reaches_the_guest_on_its_config_drive(cloud: Cloud) -> None:
    """user_data, the key pair's public key, adminPass, metadata and the port's address
    on an ISO 9660 config-2 drive attached to the domain, read back and parsed; the
    security groups shown as given; the password on the log only sealed."""
    from consumers.compute import config_drive

    admin = cloud.client()
    key = admin.request("POST", "/compute/v2.1/os-keypairs",
                        json={"keypair": {"name": "drive-key"}})["keypair"]
    user_data = base64.b64encode(b"#cloud-config\nhostname: drive\n").decode()
    body, _ = _create(cloud, "drive", config_drive=True, key_name="drive-key",
                      user_data=user_data, adminPass="Pa55-word", metadata={"tier": "web"},
                      security_groups=[{"name": "web"}, {"name": "ssh"}])
    assert body["server"]["adminPass"] == "Pa55-word"
    assert body["server"]["security_groups"] == [{"name": "web"}, {"name": "ssh"}]
    server_id = body["server"]["id"]
    server = cloud.wait_servers([server_id])[server_id]
    assert server["status"] == "ACTIVE" and server["config_drive"] == "True"
    assert server["security_groups"] == [{"name": "web"}, {"name": "ssh"}]
    xml = ET.parse(cloud.home / "compute" / server["OS-EXT-SRV-ATTR:host"] / "instances" /
                   server_id / "libvirt.xml").getroot()
    cdrom = next(d for d in xml.iterfind("devices/disk") if d.get("device") == "cdrom")
    target, source = cdrom.find("target"), cdrom.find("source")
    assert target is not None and source is not None and cdrom.find("readonly") is not None
    assert (target.get("dev"), target.get("bus")) == ("hdd", "ide")
    drive = Path(str(source.get("file")))
    assert config_drive.volume_label(drive) == "config-2"
    files = config_drive.read(drive)
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert (meta["uuid"], meta["name"], meta["meta"]) == (server_id, "drive", {"tier": "web"})
    assert meta["public_keys"] == {"drive-key": key["public_key"]}
    assert meta["admin_pass"] == "Pa55-word" and meta["availability_zone"] == "az1"
    assert files["openstack/latest/user_data"] == b"#cloud-config\nhostname: drive\n"
    network = json.loads(files["openstack/latest/network_data.json"])
    assert [n["ip_address"] for n in network["networks"]] == \
        [a["addr"] for a in server["addresses"]["private"]]
    requested = next(e for e in cloud.topic_events(f"{cloud.settings.topic_prefix}.instances")
                     if e.event_type == "InstanceBuildRequested" and e.aggregate_id == server_id)
    sealed = str(requested.payload["admin_password"])
    assert "Pa55-word" not in json.dumps(dict(requested.payload)) and sealed.startswith("gAAAA")
    plain, _ = _create(cloud, "no-drive")  # not asked for, not forced: no drive
    plain_server = cloud.wait_servers([plain["server"]["id"]])[plain["server"]["id"]]
    assert plain_server["config_drive"] == ""
    assert plain_server["security_groups"] == [{"name": "default"}]
    plain_xml = (cloud.home / "compute" / plain_server["OS-EXT-SRV-ATTR:host"] / "instances" /
                 plain_server["id"] / "libvirt.xml").read_text()
    assert "cdrom" not in plain_xml


def test_one_network_twice_is_two_ports_on_it(cloud: Cloud) -> None:
    """Nova allows it since Liberty (only a repeated port is refused)."""
    private = cloud.client().find("network", "private")["id"]
    body, _ = _create(cloud, "two-nics", networks=[{"uuid": private}, {"uuid": private}])
    server_id = body["server"]["id"]
    server = cloud.wait_servers([server_id])[server_id]
    assert server["status"] == "ACTIVE", server.get("fault")
    ips = [a["addr"] for a in server["addresses"]["private"]]
    assert len(ips) == 2 and len(set(ips)) == 2
    xml = ET.parse(cloud.home / "compute" / server["OS-EXT-SRV-ATTR:host"] / "instances" /
                   server_id / "libvirt.xml").getroot()
    assert len(xml.findall("devices/interface")) == 2


def test_service_and_hypervisor_ids_are_stable_numbers_not_positions(cloud: Cloud) -> None:
    """Nova's ids are database numbers: novalog's are derived from (host, binary), so a
    replay or another API replica gives the same; a hypervisor's is its service's."""
    from novalog.service import service_id

    admin = cloud.client()
    services = {s["host"]: s for s in admin.get("/compute/v2.1/os-services",
                                                binary="nova-compute")["services"]}
    nodes = admin.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
    assert {n["service"]["host"] for n in nodes} == {"cmp1", "cmp2"}
    for node in nodes:
        host = node["service"]["host"]
        assert node["id"] == services[host]["id"] == service_id(host, "nova-compute")
        assert node["state"] == "up" and node["status"] == "enabled"
        shown = admin.get(f"/compute/v2.1/os-hypervisors/{node['id']}")["hypervisor"]
        assert shown["hypervisor_hostname"] == node["hypervisor_hostname"]
    assert sorted(n["id"] for n in nodes) != [1, 2]
