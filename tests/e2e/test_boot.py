"""The boot flow end to end on a 4-host cloud: real broker, Postgres, libvirt test driver."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from novalog.tokens import TokenService
from schemas import payloads
from schemas.typed import payload_of
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY_MB = 512


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("cloud") / "home", hosts=4) as c:
        admin = c.client().get("/identity/v3")  # warm the API
        assert admin["version"]["id"].startswith("v3")
        yield c


def task_states(events: list[dict[str, Any]]) -> list[str | None]:
    out: list[str | None] = []
    for e in events:
        if not out or out[-1] != e["task_state"]:
            out.append(e["task_state"])
    return out


def test_one_boot_reaches_active_with_a_domain_and_an_overlay(cloud: Cloud) -> None:
    result = cloud.cli("boot", "vm1", "--flavor", "m1.small", "--image", "cirros", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "InstanceSpawned" in result.stdout and "ACTIVE" in result.stdout
    client = cloud.client()
    server = client.find("server", "vm1")
    events = client.get(f"/novalog/v1/servers/{server['id']}/events")["events"]
    assert task_states(events) == ["scheduling", "networking", "block_device_mapping",
                                   "spawning", None]
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] == 1
    host, image = server["OS-EXT-SRV-ATTR:host"], server["image"]
    assert host is not None and isinstance(image, dict)
    instance_dir = cloud.home / "compute" / host / "instances" / server["id"]
    domain = ET.parse(instance_dir / "libvirt.xml").getroot()  # what libvirt returned
    assert domain.findtext("uuid") == server["id"]
    assert domain.findtext("vcpu") == "1"
    memory = domain.find("memory")
    assert memory is not None and memory.get("unit") == "KiB" and memory.text == str(2048 * 1024)
    mac = domain.find("devices/interface/mac")
    ports = server["addresses"]["private"]
    assert mac is not None and mac.get("address") == ports[0]["OS-EXT-IPS-MAC:mac_addr"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json",
                                      str(instance_dir / "disk")], check=True,
                                     capture_output=True, text=True).stdout)
    base = cloud.home / "compute" / host / "instances" / "_base" / hashlib.sha1(
        image["id"].encode(), usedforsecurity=False).hexdigest()
    assert info["format"] == "qcow2" and info["virtual-size"] == 20 * 1024**3
    assert Path(info["backing-filename"]) == base and base.is_file()


def test_changes_since_lists_recent_servers_and_refuses_a_bad_moment(cloud: Cloud) -> None:
    client = cloud.client()
    server = client.find("server", "vm1")
    since = server["updated"]
    ids = [s["id"] for s in client.get("/compute/v2.1/servers", **{"changes-since": since,
                                                                   "status": "ACTIVE"})[
        "servers"]]
    assert server["id"] in ids
    later = client.get("/compute/v2.1/servers", **{"changes-since": "2999-01-01T00:00:00Z"})
    assert later["servers"] == []
    before = client.get("/compute/v2.1/servers/detail")["servers"]
    response = cloud.http().get("/compute/v2.1/servers", params={"changes-since": "yesterday"},
                                headers={"X-Auth-Token": client.token()})
    assert response.status_code == 400
    assert "changes-since" in response.json()["badRequest"]["message"]
    assert client.get("/compute/v2.1/servers/detail")["servers"] == before


def test_forty_boots_spread_with_unique_ips_and_usage_matching_flavors_and_libvirt(
        cloud: Cloud) -> None:
    admin = cloud.client()
    cloud.raise_quotas()
    body = {"server": {"name": "many", "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": 40, "max_count": 40, "return_reservation_id": True}}
    reservation = admin.request("POST", "/compute/v2.1/servers", json=body)["reservation_id"]
    deadline = time.monotonic() + 30
    while len(ids := [s["id"] for s in admin.get("/compute/v2.1/servers",
                                                 reservation_id=reservation)["servers"]]) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    done = cloud.wait_servers(ids, timeout=120)
    assert Counter(s["status"] for s in done.values()) == {"ACTIVE": 40}
    everything = admin.get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]
    ips = [a["addr"] for s in everything for a in s["addresses"].get("private", [])]
    macs = [a["OS-EXT-IPS-MAC:mac_addr"] for s in everything
            for a in s["addresses"].get("private", [])]
    assert len(ips) == len(everything) and len(set(ips)) == len(ips)
    assert len(set(macs)) == len(macs)
    per_host = Counter(s["OS-EXT-SRV-ATTR:host"] for s in done.values())
    assert set(per_host) == {"cmp1", "cmp2", "cmp3", "cmp4"}  # spread by the weighers
    flavors = {f["id"]: f for f in admin.get("/compute/v2.1/flavors/detail")["flavors"]}
    deadline = time.monotonic() + 30
    while True:  # the last resource reports may still be on their way
        nodes = {h["service"]["host"]: h for h in
                 admin.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]}
        mismatches = []
        for host, node in nodes.items():
            mine = [s for s in everything if s["OS-EXT-SRV-ATTR:host"] == host]
            want = (sum(flavors[s["flavor"]["id"]]["vcpus"] for s in mine),
                    sum(flavors[s["flavor"]["id"]]["ram"] for s in mine),
                    sum(flavors[s["flavor"]["id"]]["disk"] for s in mine), len(mine))
            domains = len(list((cloud.home / "compute" / host / "instances").glob(
                "*/libvirt.xml")))
            have = (node["vcpus_used"], node["memory_mb_used"], node["local_gb_used"],
                    node["running_vms"])
            if have != want or domains != len(mine):
                mismatches.append((host, have, want, domains))
        if not mismatches:
            break
        assert time.monotonic() < deadline, mismatches
        time.sleep(0.5)


def test_a_flavor_larger_than_every_host_is_no_valid_host_with_filter_counts(
        cloud: Cloud) -> None:
    cloud.publish_catalog("FlavorCreated", "99", {
        "flavorid": "99", "name": "m1.huge", "vcpus": 2, "memory_mb": 64 * 1024,
        "root_gb": 10, "ephemeral_gb": 0, "swap_mb": 0, "is_public": True, "extra_specs": {}})
    client = cloud.client()
    deadline = time.monotonic() + 10
    while not any(f["id"] == "99" for f in client.get("/compute/v2.1/flavors")["flavors"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    result = cloud.cli("boot", "huge", "--flavor", "m1.huge", "--image", "cirros", "--wait")
    assert result.returncode == 1
    assert "No valid host was found" in result.stderr, result.stderr
    server = client.find("server", "huge")
    assert server["status"] == "ERROR"
    assert server["fault"]["message"] == \
        "No valid host was found. There are not enough hosts available."
    assert server["fault"]["details"] == "RamFilter removed 4 of 4"  # for the admin only
    events = client.get(f"/novalog/v1/servers/{server['id']}/events")["events"]
    novalid = next(e for e in events if e["event_type"] == "InstanceNoValidHost")
    counts = {f["filter"]: (f["hosts_in"], f["hosts_out"]) for f in novalid["payload"]["filters"]}
    assert counts["ComputeFilter"] == (4, 4) and counts["RamFilter"] == (4, 0)


def _body(cloud: Cloud, **server: Any) -> dict[str, Any]:
    base = {"name": "bad", "flavorRef": "1", "imageRef": cloud.image_id()}
    return {"server": {**base, **server}}


def _drop(body: dict[str, Any], key: str) -> dict[str, Any]:
    body["server"].pop(key)
    return body


CASES: list[tuple[str, Any, int, str, str]] = [
    # (what, body or builder, status, fault name, message fragment)
    ("no server", lambda c: {"srv": {}}, 400, "badRequest", "server"),
    ("unknown field", lambda c: _body(c, colour="blue"), 400, "badRequest",
     "Invalid input for field/attribute server. Additional properties are not allowed "
     "('colour' was unexpected)"),
    # above the advertised microversion (2.1), as Nova refuses them there
    ("tags at 2.1", lambda c: _body(c, tags=["web"]), 400, "badRequest",
     "Additional properties are not allowed ('tags' was unexpected)"),
    ("trusted certificates at 2.1", lambda c: _body(c, trusted_image_certificates=["x"]), 400,
     "badRequest", "Additional properties are not allowed ('trusted_image_certificates' was "
                   "unexpected)"),
    ("bdm tag at 2.1", lambda c: _body(c, block_device_mapping_v2=[
        {"source_type": "image", "uuid": c.image_id(), "boot_index": 0, "tag": "root"}]),
     400, "badRequest", "('tag' was unexpected)"),
    ("bdm guest format", lambda c: _body(c, block_device_mapping_v2=[
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
         "guest_format": "ext4"}]), 400, "badRequest",
     "Block Device Mapping is Invalid: guest_format is not supported"),
    ("bdm scsi bus", lambda c: _body(c, block_device_mapping_v2=[
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
         "disk_bus": "scsi"}]), 400, "badRequest",
     "Block Device Mapping is Invalid: disk_bus scsi is not supported"),
    ("bdm cdrom", lambda c: _body(c, block_device_mapping_v2=[
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
         "device_type": "cdrom"}]), 400, "badRequest",
     "Block Device Mapping is Invalid: device_type cdrom is not supported"),
    ("bdm no device", lambda c: _body(c, block_device_mapping_v2=[
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
         "no_device": True}]), 400, "badRequest",
     "Block Device Mapping is Invalid: no_device"),
    ("config drive not a boolean", lambda c: _body(c, config_drive="maybe"), 400,
     "badRequest", "Invalid input for field/attribute config_drive. Value: maybe."),
    ("empty name", lambda c: _body(c, name=""), 400, "badRequest", "name"),
    ("blank-edged name", lambda c: _body(c, name=" vm"), 400, "badRequest", "whitespace"),
    ("long name", lambda c: _body(c, name="x" * 256), 400, "badRequest", "name"),
    ("no flavor", lambda c: _drop(_body(c), "flavorRef"), 400, "badRequest", "flavorRef"),
    ("unknown flavor", lambda c: _body(c, flavorRef="42"), 400, "badRequest",
     "Invalid flavorRef provided."),
    ("image not a uuid", lambda c: _body(c, imageRef="cirros"), 400, "badRequest",
     "Invalid imageRef provided."),
    ("unknown image", lambda c: _body(c, imageRef=str(uuid.uuid4())), 400, "badRequest",
     "Can not find requested image"),
    ("no image", lambda c: _drop(_body(c), "imageRef"), 400, "badRequest",
     "Missing imageRef attribute"),
    ("min > max", lambda c: _body(c, min_count=3, max_count=2), 400, "badRequest",
     "min_count must be <= max_count"),
    ("zero count", lambda c: _body(c, min_count=0), 400, "badRequest", "min_count"),
    ("absurd count", lambda c: _body(c, max_count=10**18), 400, "badRequest", "max_count"),
    ("mixed bdm", lambda c: _body(c, block_device_mapping=[{"volume_id": "x"}],
                                  block_device_mapping_v2=[{"source_type": "image"}]),
     400, "badRequest", "different block_device_mapping syntaxes"),
    ("bad network uuid", lambda c: _body(c, networks=[{"uuid": "net"}]), 400, "badRequest",
     "network uuid is not in proper format"),
    ("unknown network", lambda c: _body(c, networks=[{"uuid": str(uuid.uuid4())}]), 400,
     "badRequest", "could not be found"),
    ("unknown key pair", lambda c: _body(c, key_name="nope"), 400, "badRequest",
     "Invalid key_name provided."),
    ("user data not base64", lambda c: _body(c, user_data="%%%"), 400, "badRequest",
     "User data needs to be valid base 64."),
    ("user data too large", lambda c: _body(c, user_data=base64.b64encode(b"x" * 60000)
                                            .decode()), 400, "badRequest",
     "User data too large"),
    ("metadata value too long", lambda c: _body(c, metadata={"k": "v" * 256}), 400,
     "badRequest", "metadata"),
    ("too many metadata items", lambda c: _body(c, metadata={f"k{i}": "v" for i in range(129)}),
     403, "forbidden", "Maximum number of metadata items exceeds 128"),
    ("fixed ip for many", lambda c: _body(c, max_count=2, networks=[
        {"uuid": str(uuid.uuid4()), "fixed_ip": "10.0.0.9"}]), 400, "badRequest",
     "Failed to launch instances: max_count cannot be greater than 1 if an fixed_ip is "
     "specified."),
    ("port twice", lambda c: _body(c, networks=[{"port": str(uuid.UUID(int=5))}] * 2), 400,
     "badRequest", f"Port ID '{uuid.UUID(int=5)}' was specified twice: you cannot attach a "
                   "port multiple times."),
    ("unknown port", lambda c: _body(c, networks=[{"port": str(uuid.UUID(int=5))}]), 400,
     "badRequest", f"Port id {uuid.UUID(int=5)} could not be found."),
    ("unknown server group", lambda c: {**_body(c), "os:scheduler_hints": {
        "group": str(uuid.UUID(int=6))}}, 400, "badRequest",
     f"Instance group {uuid.UUID(int=6)} could not be found."),
    ("unknown zone", lambda c: _body(c, availability_zone="moon"), 400, "badRequest",
     "The requested availability zone is not available"),
    ("forced host as member", None, 403, "forbidden", "forced_host"),
    ("unknown forced host", lambda c: _body(c, availability_zone="nova:cmp99"), 400,
     "badRequest", "Compute host cmp99 could not be found."),
    ("image larger than flavor", None, 400, "badRequest",
     "Flavor's disk is too small for requested image."),
]


def build_requests(cloud: Cloud) -> list[str]:
    """Names of every build requested on the log (earlier builds may still be going on,
    so other events are no measure of "nothing published")."""
    return [payload_of(e, payloads.InstanceBuildRequested)["name"] for e in cloud.topic_events(
        f"{cloud.settings.topic_prefix}.instances") if e.event_type == "InstanceBuildRequested"]


@pytest.mark.parametrize(("what", "build", "status", "fault", "fragment"), CASES,
                         ids=[c[0] for c in CASES])
def test_every_validation_rule_answers_novas_code_and_publishes_nothing(
        cloud: Cloud, what: str, build: Any, status: int, fault: str, fragment: str) -> None:
    before = build_requests(cloud)
    client = cloud.client()
    if what == "forced host as member":
        client = cloud.client("demo", "demo", "demo")
        body = _body(cloud, availability_zone="nova:cmp1")
    elif what == "image larger than flavor":
        cloud.publish_catalog("FlavorCreated", "0", {
            "flavorid": "0", "name": "m1.nano", "vcpus": 1, "memory_mb": 64, "root_gb": 0,
            "ephemeral_gb": 0, "swap_mb": 0, "is_public": True, "extra_specs": {}})
        cloud.publish_catalog("ImageRegistered", "big", {
            "image_id": str(uuid.UUID(int=7)), "name": "big", "status": "active",
            "disk_format": "qcow2", "container_format": "bare", "size": 1, "checksum": "x",
            "min_disk": 50, "min_ram": 0, "location": "/nonexistent", "visibility": "public",
            "properties": {}})
        time.sleep(1)
        body = _body(cloud, imageRef=str(uuid.UUID(int=7)))
    else:
        body = build(cloud)
    response = client.http.post("/compute/v2.1/servers", json=body,
                                headers={"X-Auth-Token": client.token()})
    assert response.status_code == status, response.text
    payload = response.json()
    assert list(payload) == [fault]
    assert payload[fault]["code"] == status
    assert fragment in payload[fault]["message"]
    assert "Location" not in response.headers
    time.sleep(0.3)
    assert build_requests(cloud) == before


def test_malformed_json_is_a_400(cloud: Cloud) -> None:
    client = cloud.client()
    response = client.http.post("/compute/v2.1/servers", content=b"{not json",
                                headers={"X-Auth-Token": client.token(),
                                         "Content-Type": "application/json"})
    assert response.status_code == 400 and "badRequest" in response.json()


def test_tokens_missing_wrong_forged_or_expired_are_401(cloud: Cloud) -> None:
    http = cloud.http()
    assert http.get("/compute/v2.1/servers").status_code == 401
    assert http.get("/compute/v2.1/servers",
                    headers={"X-Auth-Token": "garbage"}).status_code == 401
    forged = TokenService([Fernet.generate_key()]).issue("u", "p", ["admin"])[0]
    assert http.get("/compute/v2.1/servers", headers={"X-Auth-Token": forged}).status_code == 401
    expired = TokenService([cloud.token_key.encode()], timedelta(hours=1)).issue(
        "u", "p", ["admin"], now=datetime.now(UTC) - timedelta(hours=2))[0]
    response = http.get("/compute/v2.1/servers", headers={"X-Auth-Token": expired})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == \
        "The request you have made requires authentication."
    bad_password = http.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "admin", "password": "x"}}}}})
    assert bad_password.status_code == 401
    assert cloud.client().get("/compute/v2.1/servers") is not None  # the real token works


def test_quota_of_a_project_is_enforced_with_novas_message(cloud: Cloud) -> None:
    demo = cloud.client("demo", "demo", "demo")
    body = {"server": {"name": "q", "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": 10, "max_count": 10, "return_reservation_id": True}}
    demo.request("POST", "/compute/v2.1/servers", json=body)
    before = build_requests(cloud)
    one_more = {"server": {"name": "q11", "flavorRef": "1", "imageRef": cloud.image_id()}}
    response = demo.http.post("/compute/v2.1/servers", json=one_more,
                              headers={"X-Auth-Token": demo.token()})
    assert response.status_code == 403
    assert response.json()["forbidden"]["message"] == \
        "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
    time.sleep(0.3)
    assert build_requests(cloud) == before and "q11" not in before
    # members see only their project's servers; another project's server is a 404
    names = {s["name"] for s in demo.get("/compute/v2.1/servers")["servers"]}
    assert names == {f"q-{i}" for i in range(1, 11)}
    refused = demo.http.put(f"/compute/v2.1/os-quota-sets/{events_project(demo)}",
                            json={"quota_set": {"instances": 99}},
                            headers={"X-Auth-Token": demo.token()})
    assert refused.status_code == 403 and "os-quota-sets:update" in refused.text
    admin_server = cloud.client().find("server", "vm1")["id"]
    with pytest.raises(Exception, match="404"):
        demo.get(f"/compute/v2.1/servers/{admin_server}")


def events_project(client: Any) -> str:
    return str(client.get("/compute/v2.1/servers/detail")["servers"][0]["tenant_id"])


def test_multi_create_shares_one_reservation_and_admin_can_force_a_host(cloud: Cloud) -> None:
    admin = cloud.client()
    body = {"server": {"name": "pair", "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": 2, "max_count": 2, "availability_zone": "nova:cmp3"}}
    first = admin.request("POST", "/compute/v2.1/servers", json=body)["server"]
    done = cloud.wait_servers([first["id"]])
    assert done[first["id"]]["OS-EXT-SRV-ATTR:host"] == "cmp3"
    pair = [s for s in admin.get("/compute/v2.1/servers/detail")["servers"]
            if s["name"].startswith("pair-")]
    assert len(pair) == 2
    events = [cloud.client().get(f"/novalog/v1/servers/{s['id']}/events")["events"][0]
              for s in pair]
    assert len({e["payload"]["reservation_id"] for e in events}) == 1
    assert len({e["request_id"] for e in events}) == 1
    actions = admin.get(f"/compute/v2.1/servers/{first['id']}/os-instance-actions")
    action = actions["instanceActions"][0]
    assert action["action"] == "create" and action["request_id"] == events[0]["request_id"]
    detail = admin.get(f"/compute/v2.1/servers/{first['id']}/os-instance-actions/"
                       f"{action['request_id']}")["instanceAction"]
    steps = {(e["event"], e["result"]) for e in detail["events"]}
    assert steps == {("schedule_instances", "Success"),
                     ("compute__do_build_and_run_instance", "Success")}
