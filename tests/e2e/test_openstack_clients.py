"""The stock OpenStack clients, unmodified from PyPI, drive a running novalog.

python-openstackclient and python-novaclient run as subprocesses, as an operator
would run them, with nothing but the usual OS_* variables; openstacksdk is used as a
library. The command list is ../shared/OPENSTACK_CLIENTS.md section 5, in its order;
the assertions read what the clients print (-f json), not only their exit codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
HOST_MB = 8192  # m1.xlarge (16384 MB) fits no host: a build that ends in ERROR


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("clients") / "home", hosts=2,
                       extra_env={"NOVALOG_COMPUTE_MEMORY_MB": str(HOST_MB)}) as c:
        c.raise_quotas()
        yield c


_EXPORTS: dict[tuple[str, str], dict[str, str]] = {}


def os_env(cloud: Cloud, user: str = "admin", project: str = "admin") -> dict[str, str]:
    """What an operator exports, from `novalog openrc` as the README says: OS_* only."""
    assert user == project, "novalog's users each have their own project"
    if (cloud.api_url, user) in _EXPORTS:
        return _EXPORTS[cloud.api_url, user]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "NOVALOG_"))}
    exports = cloud.cli("openrc", "--user", user)
    assert exports.returncode == 0, exports.stderr
    for line in exports.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    assert env["OS_AUTH_URL"] == f"{cloud.api_url}/identity/v3"
    _EXPORTS[cloud.api_url, user] = env
    return env


def run(cloud: Cloud, *argv: str, user: str = "admin", project: str = "admin",
        ok: bool = True) -> subprocess.CompletedProcess[str]:
    """One client command; `ok`: it must exit 0 (the output is in the failure)."""
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=os_env(cloud, user, project),
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}\n{done.stderr}"
    return done


def osc(cloud: Cloud, *argv: str, user: str = "admin", project: str = "admin") -> Any:
    """`openstack ... -f json`, parsed."""
    return json.loads(run(cloud, "openstack", *argv, "-f", "json", user=user,
                          project=project).stdout or "null")


def until_status(cloud: Cloud, name: str, want: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        server = osc(cloud, "server", "show", name)
        if server["status"] == want:
            return dict(server)
        assert server["status"] != "ERROR" and time.monotonic() < deadline, server
        time.sleep(0.5)


def test_the_verified_command_list_works_unchanged(cloud: Cloud) -> None:
    """Every command of OPENSTACK_CLIENTS.md section 5, in its order."""
    token = osc(cloud, "token", "issue")
    assert token["project_id"] and token["user_id"] and token["expires"]
    flavors = {f["Name"]: f for f in osc(cloud, "flavor", "list")}
    assert {"m1.tiny", "m1.small", "m1.xlarge"} <= set(flavors)
    assert flavors["m1.tiny"]["RAM"] == 512 and flavors["m1.tiny"]["ID"] == "1"
    tiny = osc(cloud, "flavor", "show", "m1.tiny")
    assert (tiny["id"], tiny["vcpus"], tiny["disk"]) == ("1", 1, 1)
    images = osc(cloud, "image", "list")
    assert [(i["Name"], i["Status"]) for i in images] == [("cirros", "active")]
    image = osc(cloud, "image", "show", "cirros")
    assert image["id"] == images[0]["ID"] and image["disk_format"] == "qcow2"
    assert image["checksum"] and image["size"] > 0
    networks = osc(cloud, "network", "list")
    assert [n["Name"] for n in networks] == ["private"] and len(networks[0]["Subnets"]) == 1

    vm = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
             "--network", "private", "vm")
    assert vm["name"] == "vm" and vm["id"]
    vmw = osc(cloud, "server", "create", "--flavor", "m1.small", "--image", "cirros",
              "--wait", "vmw")
    assert vmw["status"] == "ACTIVE" and vmw["addresses"]["private"]
    assert vmw["flavor"].startswith("m1.small") and vmw["image"].startswith("cirros")
    until_status(cloud, "vm", "ACTIVE")
    listed = {s["Name"]: s for s in osc(cloud, "server", "list")}
    assert {n: s["Status"] for n, s in listed.items()} == {"vm": "ACTIVE", "vmw": "ACTIVE"}
    assert listed["vm"]["Image"] == "cirros" and listed["vm"]["Flavor"] == "m1.tiny"
    shown = osc(cloud, "server", "show", "vm")
    assert shown["id"] == vm["id"] and shown["OS-EXT-SRV-ATTR:host"] in cloud.compute_hosts()
    [address] = shown["addresses"]["private"]
    assert address.startswith("10.0.0.")

    run(cloud, "openstack", "server", "reboot", "vm")
    until_status(cloud, "vm", "ACTIVE")
    run(cloud, "openstack", "server", "reboot", "--hard", "vm")
    until_status(cloud, "vm", "ACTIVE")
    run(cloud, "openstack", "server", "stop", "vm")
    stopped = until_status(cloud, "vm", "SHUTOFF")
    assert stopped["OS-EXT-STS:power_state"] in ("Shutdown", 4)
    run(cloud, "openstack", "server", "start", "vm")
    until_status(cloud, "vm", "ACTIVE")
    events = osc(cloud, "server", "event", "list", "vm")
    assert sorted(e["Action"] for e in events) == ["create", "reboot", "reboot", "start",
                                                   "stop"]
    assert all(e["Request ID"].startswith("req-") for e in events)

    services = {(s["Binary"], s["Host"]): s for s in osc(cloud, "compute", "service", "list")}
    assert {h for b, h in services if b == "nova-compute"} == {"cmp1", "cmp2"}
    assert {s["State"] for s in services.values()} == {"up"}
    run(cloud, "openstack", "compute", "service", "set", "--disable", "cmp2", "nova-compute")
    assert {s["Host"]: s["Status"] for s in osc(cloud, "compute", "service", "list",
                                                 "--service", "nova-compute")} \
        == {"cmp1": "enabled", "cmp2": "disabled"}
    run(cloud, "openstack", "compute", "service", "set", "--enable", "cmp2", "nova-compute")
    assert {s["Status"] for s in osc(cloud, "compute", "service", "list",
                                      "--service", "nova-compute")} == {"enabled"}
    hypervisors = osc(cloud, "hypervisor", "list")
    assert sorted(h["Hypervisor Hostname"] for h in hypervisors) == ["cmp1", "cmp2"]
    assert {h["State"] for h in hypervisors} == {"up"}

    nova = run(cloud, "nova", "boot", "--flavor", "m1.tiny", "--image", "cirros", "--nic",
               "net-name=private", "vmn")
    assert "vmn" in nova.stdout
    run(cloud, "nova", "boot", "--flavor", "m1.tiny", "--image", "cirros", "vmn2")
    until_status(cloud, "vmn", "ACTIVE")
    until_status(cloud, "vmn2", "ACTIVE")
    listing = run(cloud, "nova", "list").stdout
    assert all(n in listing for n in ("vm ", "vmw", "vmn ", "vmn2")) and "ACTIVE" in listing
    assert "10.0.0." in run(cloud, "nova", "show", "vmn").stdout

    run(cloud, "openstack", "server", "delete", "vm")
    run(cloud, "openstack", "server", "delete", "--wait", "vmw", "vmn", "vmn2")
    deadline = time.monotonic() + 60
    while osc(cloud, "server", "list"):
        assert time.monotonic() < deadline, "servers still listed after delete"
        time.sleep(0.5)


def test_server_create_wait_exits_1_for_a_server_that_ends_in_error(cloud: Cloud) -> None:
    failed = run(cloud, "openstack", "server", "create", "--flavor", "m1.xlarge", "--image",
                 "cirros", "--wait", "too-big", ok=False)
    assert failed.returncode == 1 and "Error creating server: too-big" in failed.stderr
    shown = osc(cloud, "server", "show", "too-big")
    assert shown["status"] == "ERROR" and "No valid host" in json.dumps(shown["fault"])
    run(cloud, "openstack", "server", "delete", "--wait", "too-big")


def test_openstacksdk_creates_waits_lists_and_deletes(cloud: Cloud) -> None:
    import openstack

    conn = openstack.connect(
        auth_url=f"{cloud.api_url}/identity/v3", username="admin",
        password=cloud.env.get("NOVALOG_ADMIN_PASSWORD", "admin"), project_name="admin",
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
    image = conn.image.find_image("cirros")
    flavor = conn.compute.find_flavor("m1.tiny")
    network = conn.network.find_network("private")
    assert image is not None and flavor is not None and network is not None
    server = conn.compute.create_server(name="sdk-1", image_id=image.id, flavor_id=flavor.id,
                                        networks=[{"uuid": network.id}])
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=120, interval=1)
    assert server.status == "ACTIVE" and server.addresses["private"][0]["addr"]
    assert "sdk-1" in [s.name for s in conn.compute.servers()]
    ports = list(conn.network.ports(device_id=server.id))
    assert [p.fixed_ips[0]["ip_address"] for p in ports] == \
        [server.addresses["private"][0]["addr"]]
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=120, interval=1)
    assert "sdk-1" not in [s.name for s in conn.compute.servers()]


def test_identity_catalog_validation_and_directory(cloud: Cloud) -> None:
    """The catalog holds identity, compute, image, network and block storage (under both
    type names), public and internal; a token validates with GET and is gone after
    DELETE; projects and users list."""
    catalog = {e["Type"]: e for e in osc(cloud, "catalog", "list")}
    assert set(catalog) == {"identity", "compute", "image", "network", "block-storage",
                            "volumev3"}
    endpoints = {(kind, e["interface"], e["region"], e["url"])
                 for kind, entry in catalog.items() for e in entry["Endpoints"]}
    assert ("image", "public", "RegionOne", f"{cloud.api_url}/image") in endpoints
    assert ("compute", "internal", "RegionOne", f"{cloud.api_url}/compute/v2.1") in endpoints
    project = cloud.client().project_id  # Keystone substitutes it, as in Cinder's entry
    assert ("volumev3", "public", "RegionOne", f"{cloud.api_url}/volume/v3/{project}") \
        in endpoints
    assert len(endpoints) == 12
    assert {p["Name"] for p in osc(cloud, "project", "list")} == {"admin", "demo"}
    assert {u["Name"] for u in osc(cloud, "user", "list")} == {"admin", "demo"}
    denied = run(cloud, "openstack", "user", "list", user="demo", project="demo", ok=False)
    assert denied.returncode == 1 and "403" in denied.stderr

    token = cloud.client().token()
    with cloud.http() as http:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        valid = http.get("/identity/v3/auth/tokens", headers=headers)
        assert valid.status_code == 200 and valid.headers["X-Subject-Token"] == token
        assert valid.json()["token"]["project"]["name"] == "admin"
        assert http.delete("/identity/v3/auth/tokens", headers=headers).status_code == 204
        assert http.get("/compute/v2.1/flavors", headers={"X-Auth-Token": token}
                        ).status_code == 401


def test_the_catalog_advertises_novalog_public_url(cloud: Cloud, tmp_path: Path) -> None:
    """Behind a proxy: the API is started with NOVALOG_PUBLIC_URL, and every URL it hands
    out (catalog, version documents, links) starts with it."""
    from fastapi.testclient import TestClient

    from novalog.http import create_app  # the app alone, on the cloud's database

    settings = cloud.settings.__class__.from_env(
        {**cloud.env, "NOVALOG_PUBLIC_URL": "https://cloud.example.org:8443/nova"})
    with TestClient(create_app(settings)) as client:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"},
            "password": cloud.env.get("NOVALOG_ADMIN_PASSWORD", "admin")}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
        issued = client.post("/identity/v3/auth/tokens", json=body)
        assert issued.status_code == 201
        urls = [e["url"] for s in issued.json()["token"]["catalog"] for e in s["endpoints"]]
        assert urls and all(u.startswith("https://cloud.example.org:8443/nova/") for u in urls)
        assert client.get("/image").json()["versions"][0]["links"][0]["href"] == \
            "https://cloud.example.org:8443/nova/image/v2/"


def test_glance_and_neutron_reads(cloud: Cloud) -> None:
    """Names in a path are 404s; filters and paging as Glance and Neutron have them."""
    client = cloud.client()
    with cloud.http() as http:
        headers = {"X-Auth-Token": client.token()}
        assert http.get("/image").json()["versions"][0]["id"] == "v2.0"  # no token needed
        assert http.get("/image/v2/images/cirros", headers=headers).status_code == 404
        assert http.get("/networking/v2.0/networks/private", headers=headers).status_code \
            == 404
    image_id = cloud.image_id()
    assert [i["id"] for i in client.get("/image/v2/images", id=f"in:{image_id},x")["images"]] \
        == [image_id]
    assert client.get("/image/v2/images", status="queued")["images"] == []
    page = client.get("/image/v2/images", limit="0")
    assert page["images"] == [] and "marker" not in page.get("next", "")
    network = client.get("/networking/v2.0/networks", name="private")["networks"][0]
    [subnet] = client.get("/networking/v2.0/subnets", network_id=network["id"])["subnets"]
    assert subnet["id"] == network["subnets"][0] and subnet["cidr"] == "10.0.0.0/24"
    specs = client.get("/compute/v2.1/flavors/1/os-extra_specs")
    assert specs == {"extra_specs": {}}
    with cloud.http() as http:
        missing = http.get("/compute/v2.1/flavors/m1.tiny/os-extra_specs", headers=headers)
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["code"] == 404


def test_operator_views_quota_limits_and_hypervisor_stats(cloud: Cloud) -> None:
    stats = osc(cloud, "hypervisor", "stats", "show")
    assert stats["count"] == 2 and stats["memory_mb"] == 2 * HOST_MB
    shown = osc(cloud, "hypervisor", "show", "cmp1")
    assert shown["hypervisor_hostname"] == "cmp1" and shown["service_host"] == "cmp1"
    assert shown["state"] == "up" and shown["memory_mb"] == HOST_MB
    def quota(*argv: str, user: str = "admin") -> dict[str, Any]:
        rows = osc(cloud, "quota", "show", *argv, user=user, project=user)
        return {r["Resource"]: r["Limit"] for r in rows}

    admin = quota("--compute", "admin")
    assert admin["instances"] == -1 and admin["properties"] == 128  # raised; Nova's meta
    demo = quota("--compute", user="demo")
    assert (demo["instances"], demo["cores"], demo["ram"]) == (10, 20, 51200)  # Nova's
    assert quota(user="demo")["networks"] == -1  # Neutron's part: nothing is limited
    limits = {r["Name"]: r["Value"] for r in osc(cloud, "limits", "show", "--absolute",
                                                 user="demo", project="demo")}
    assert (limits["max_total_instances"], limits["total_instances_used"]) == (10, 0)


def test_microversions_are_checked_and_echoed(cloud: Cloud) -> None:
    """2.1 is the one microversion honoured: asked for, or 'latest', it is echoed; any
    other is Nova's 406, and a malformed one a 400."""
    with cloud.http() as http:
        headers = {"X-Auth-Token": cloud.client().token()}
        for asked in ({"OpenStack-API-Version": "compute 2.1"},
                      {"X-OpenStack-Nova-API-Version": "latest"}, {}):
            answer = http.get("/compute/v2.1/flavors", headers={**headers, **asked})
            assert answer.status_code == 200
            assert answer.headers["OpenStack-API-Version"] == "compute 2.1"
            assert answer.headers["X-OpenStack-Nova-API-Version"] == "2.1"
        too_new = http.get("/compute/v2.1/flavors", headers={
            **headers, "OpenStack-API-Version": "compute 2.53"})
        assert too_new.status_code == 406
        assert "maximum is 2.1" in too_new.json()["notAcceptable"]["message"]
        bad = http.get("/compute/v2.1/flavors", headers={
            **headers, "X-OpenStack-Nova-API-Version": "two"})
        assert bad.status_code == 400
        version = http.get("/compute/v2.1").json()["version"]
        assert (version["version"], version["min_version"]) == ("2.1", "2.1")


def test_a_member_sees_only_its_project_and_no_admin_views(cloud: Cloud) -> None:
    """demo (member of demo) and admin each boot a server: neither listing shows the
    other's, demo's show / delete of admin's is a 404, admin-only views are 403 for demo."""
    mine = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
               "--network", "private", "--wait", "demo-vm", user="demo", project="demo")
    theirs = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--wait", "admin-vm")
    assert [s["Name"] for s in osc(cloud, "server", "list", user="demo",
                                   project="demo")] == ["demo-vm"]
    assert "demo-vm" not in [s["Name"] for s in osc(cloud, "server", "list")]
    assert {s["Name"] for s in osc(cloud, "server", "list", "--all-projects")} \
        >= {"demo-vm", "admin-vm"}
    for argv in (("server", "show", theirs["id"]), ("server", "delete", theirs["id"])):
        denied = run(cloud, "openstack", *argv, user="demo", project="demo", ok=False)
        assert denied.returncode == 1 and "No Server found" in denied.stderr, denied.stderr
    ports = osc(cloud, "port", "list", user="demo", project="demo")
    assert [p["Fixed IP Addresses"][0]["ip_address"] for p in ports] == \
        mine["addresses"]["private"]
    admin_only: list[tuple[str, ...]] = [("compute", "service", "list"), ("hypervisor", "list"),
                                          ("server", "list", "--all-projects")]
    for words in admin_only:
        denied = run(cloud, "openstack", *words, user="demo", project="demo", ok=False)
        assert denied.returncode == 1 and "403" in denied.stderr, (words, denied.stderr)
    refused = run(cloud, "openstack", "compute", "service", "set", "--disable", "cmp1",
                  "nova-compute", user="demo", project="demo", ok=False)
    assert refused.returncode == 1 and "failed to set" in refused.stderr  # OSC hides the 403
    assert {s["Status"] for s in osc(cloud, "compute", "service", "list", "--service",
                                      "nova-compute")} == {"enabled"}
    forced = run(cloud, "openstack", "server", "create", "--flavor", "m1.tiny", "--image",
                 "cirros", "--availability-zone", "nova:cmp1", "forced", user="demo",
                 project="demo", ok=False)
    assert forced.returncode == 1 and "403" in forced.stderr
    assert "admin-vm" in [s["Name"] for s in osc(cloud, "server", "list")]  # untouched
    run(cloud, "openstack", "server", "delete", "--wait", "demo-vm", user="demo",
        project="demo")
    run(cloud, "openstack", "server", "delete", "--wait", "admin-vm")


def test_key_pairs_generated_imported_used_and_deleted(cloud: Cloud, tmp_path: Path) -> None:
    """openstack keypair create (the client makes the key) and --public-key (imported);
    Nova 2.1's own generation through the API; a server booted with one shows its
    key_name; a second key pair of one name is a 409, a bad key a 400."""
    made = run(cloud, "openstack", "keypair", "create", "made").stdout
    assert "PRIVATE KEY-----" in made
    public = tmp_path / "k.pub"
    public.write_text(_ed25519_public())
    imported = osc(cloud, "keypair", "create", "--public-key", str(public), "imported")
    assert imported["name"] == "imported" and imported["fingerprint"].count(":") == 15
    listed = {k["Name"]: k["Fingerprint"] for k in osc(cloud, "keypair", "list")}
    assert set(listed) == {"made", "imported"} and listed["imported"] == \
        imported["fingerprint"]
    assert osc(cloud, "keypair", "list", user="demo", project="demo") == []  # the user's own
    client = cloud.client()
    generated = client.request("POST", "/compute/v2.1/os-keypairs",
                               json={"keypair": {"name": "by-nova"}})["keypair"]
    assert generated["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert generated["public_key"].startswith("ssh-rsa ")
    duplicate = run(cloud, "openstack", "keypair", "create", "--public-key", str(public),
                    "imported", ok=False)
    assert duplicate.returncode == 1 and "409" in duplicate.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-rsa not-base64 x\n")
    invalid = run(cloud, "openstack", "keypair", "create", "--public-key", str(bad), "bad",
                  ok=False)
    assert invalid.returncode == 1 and "Keypair data is invalid" in invalid.stderr
    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--key-name", "imported", "--wait", "keyed")
    assert server["key_name"] == "imported"
    unknown = run(cloud, "openstack", "server", "create", "--flavor", "m1.tiny", "--image",
                  "cirros", "--key-name", "nope", "unkeyed", ok=False)
    assert unknown.returncode == 1 and "Invalid key_name provided" in unknown.stderr
    racing = [cloud.client() for _ in range(4)]  # four creates of one name at once
    for c in racing:
        c.token()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda c: c.http.post(
            "/compute/v2.1/os-keypairs", headers={"X-Auth-Token": c.token()},
            json={"keypair": {"name": "raced", "public_key": _ed25519_public()}}).status_code,
            racing))
    assert sorted(answers) == [200, 409, 409, 409]
    assert [k["Name"] for k in osc(cloud, "keypair", "list")].count("raced") == 1
    for name in ("made", "imported", "by-nova", "raced"):
        run(cloud, "openstack", "keypair", "delete", name)
    assert osc(cloud, "keypair", "list") == []
    assert osc(cloud, "server", "show", "keyed")["key_name"] == "imported"  # kept, as Nova
    run(cloud, "openstack", "server", "delete", "--wait", "keyed")


def _ed25519_public() -> str:
    """An OpenSSH public key made by the cryptography library, as ssh-keygen would."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " me\n"


def test_server_groups_place_their_members(cloud: Cloud) -> None:
    """anti-affinity: two members on the two hosts, a third has nowhere to go (ERROR,
    No valid host); affinity: both on one host; the groups list their live members."""
    apart = osc(cloud, "server", "group", "create", "--policy", "anti-affinity", "apart")
    assert apart["policies"] == "anti-affinity" or apart["policies"] == ["anti-affinity"]
    hosts = []
    for name in ("apart-1", "apart-2"):
        server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                     "--hint", f"group={apart['id']}", "--wait", name)
        hosts.append(server["OS-EXT-SRV-ATTR:host"])
    assert sorted(hosts) == ["cmp1", "cmp2"]
    third = run(cloud, "openstack", "server", "create", "--flavor", "m1.tiny", "--image",
                "cirros", "--hint", f"group={apart['id']}", "--wait", "apart-3", ok=False)
    assert third.returncode == 1 and "Error creating server: apart-3" in third.stderr
    assert "No valid host" in json.dumps(osc(cloud, "server", "show", "apart-3")["fault"])
    together = osc(cloud, "server", "group", "create", "--policy", "affinity", "together")
    placed = {osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                  "--hint", f"group={together['id']}", "--wait", name
                  )["OS-EXT-SRV-ATTR:host"] for name in ("together-1", "together-2")}
    assert len(placed) == 1
    shown = osc(cloud, "server", "group", "show", "apart")
    ids = {osc(cloud, "server", "show", n)["id"] for n in ("apart-1", "apart-2", "apart-3")}
    assert set(shown["members"] if isinstance(shown["members"], list)
               else shown["members"].split(", ")) == ids
    assert osc(cloud, "server", "group", "list", user="demo", project="demo") == []
    for name in ("apart-1", "apart-2", "apart-3", "together-1", "together-2"):
        run(cloud, "openstack", "server", "delete", "--wait", name)
    run(cloud, "openstack", "server", "group", "delete", "apart", "together")
    assert osc(cloud, "server", "group", "list") == []


def test_an_operator_adds_an_image_boots_it_and_deletes_it(cloud: Cloud, tmp_path: Path) -> None:
    """image create --file: queued, uploaded, checksummed, active; a server boots from
    it; data of another format than the one declared is refused; a member cannot
    delete the cloud's image; deleting removes the record and the data."""
    disk = tmp_path / "mine.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    data = disk.read_bytes()
    image = osc(cloud, "image", "create", "--file", str(disk), "--disk-format", "qcow2",
                "--container-format", "bare", "mine")
    assert image["status"] == "active" and image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert image["virtual_size"] == 64 << 20 and image["visibility"] == "shared"
    [stored] = (cloud.home / "images").glob(f"{image['id']}.*")
    assert stored.read_bytes() == data
    assert "mine" not in [i["Name"] for i in osc(cloud, "image", "list", user="demo",
                                                 project="demo")]  # shared: the owner's
    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "mine",
                 "--wait", "on-mine")
    assert server["status"] == "ACTIVE" and server["image"].startswith("mine")
    wrong = run(cloud, "openstack", "image", "create", "--file", str(disk), "--disk-format",
                "raw", "wrong", ok=False)
    assert wrong.returncode == 1 and "the data is qcow2" in wrong.stderr
    refused = run(cloud, "openstack", "image", "delete", "cirros", user="demo",
                  project="demo", ok=False)
    assert refused.returncode == 1
    run(cloud, "openstack", "server", "delete", "--wait", "on-mine")
    run(cloud, "openstack", "image", "delete", "mine")  # "wrong": the SDK deleted it
    assert [i["Name"] for i in osc(cloud, "image", "list")] == ["cirros"]
    assert not stored.exists()


def test_an_admin_adds_a_network_and_servers_get_addresses_on_it(cloud: Cloud) -> None:
    net = osc(cloud, "network", "create", "net2")
    assert net["subnets"] in ([], "", None)
    nosub = run(cloud, "openstack", "server", "create", "--flavor", "m1.tiny", "--image",
                "cirros", "--network", "net2", "nosub", ok=False)
    assert nosub.returncode == 1 and "has no subnet" in nosub.stderr
    subnet = osc(cloud, "subnet", "create", "--network", "net2", "--subnet-range",
                 "10.1.0.0/24", "sub2")
    assert (subnet["cidr"], subnet["gateway_ip"], subnet["name"]) == \
        ("10.1.0.0/24", "10.1.0.1", "sub2")
    again = run(cloud, "openstack", "subnet", "create", "--network", "net2",
                "--subnet-range", "10.2.0.0/24", "sub3", ok=False)
    assert again.returncode == 1 and "409" in again.stderr
    member = run(cloud, "openstack", "network", "create", "mine", user="demo",
                 project="demo", ok=False)
    assert member.returncode == 1 and "403" in member.stderr
    assert "net2" not in [n["Name"] for n in osc(cloud, "network", "list", user="demo",
                                                 project="demo")]  # admin's, not shared
    server = osc(cloud, "server", "create", "--flavor", "m1.tiny", "--image", "cirros",
                 "--network", "net2", "--network", "private", "--wait", "two-nics")
    assert server["addresses"]["net2"][0].startswith("10.1.0.")
    assert server["addresses"]["private"][0].startswith("10.0.0.")
    ports = osc(cloud, "port", "list", "--server", "two-nics")
    assert len(ports) == 2
    busy = run(cloud, "openstack", "network", "delete", "net2", ok=False)
    assert busy.returncode == 1 and "still in use" in busy.stderr
    run(cloud, "openstack", "server", "delete", "--wait", "two-nics")
    run(cloud, "openstack", "network", "delete", "net2")
    assert [n["Name"] for n in osc(cloud, "network", "list")] == ["private"]


def test_an_admin_manages_flavors(cloud: Cloud) -> None:
    flavor = osc(cloud, "flavor", "create", "--ram", "256", "--vcpus", "1", "--disk", "1",
                 "--property", "hw:cpu_policy=shared", "m1.nano")
    assert (flavor["ram"], flavor["properties"]) in (
        (256, {"hw:cpu_policy": "shared"}), (256, "hw:cpu_policy='shared'"))
    taken = run(cloud, "openstack", "flavor", "create", "--ram", "1", "--vcpus", "1",
                "m1.nano", ok=False)
    assert taken.returncode == 1 and "409" in taken.stderr
    run(cloud, "openstack", "flavor", "set", "--property", "quota:disk=1", "m1.nano")
    run(cloud, "openstack", "flavor", "unset", "--property", "hw:cpu_policy", "m1.nano")
    specs = cloud.client().get(f"/compute/v2.1/flavors/{flavor['id']}/os-extra_specs")
    assert specs == {"extra_specs": {"quota:disk": "1"}}
    member = run(cloud, "openstack", "flavor", "create", "--ram", "1", "--vcpus", "1", "x",
                 user="demo", project="demo", ok=False)
    assert member.returncode == 1 and "403" in member.stderr
    server = osc(cloud, "server", "create", "--flavor", "m1.nano", "--image", "cirros",
                 "--wait", "nano")
    assert server["status"] == "ACTIVE"
    run(cloud, "openstack", "flavor", "delete", "m1.nano")
    assert "m1.nano" not in [f["Name"] for f in osc(cloud, "flavor", "list")]
    shown = cloud.client().get(f"/compute/v2.1/servers/{server['id']}")["server"]
    assert shown["flavor"]["id"] == flavor["id"] and shown["status"] == "ACTIVE"
    run(cloud, "openstack", "server", "delete", "--wait", "nano")
