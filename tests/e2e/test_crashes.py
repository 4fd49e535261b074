"""Crash every role at every crash point; nothing is lost and nothing is duplicated.

One cloud; before each scenario the test arms one crash in the plan file
(novalog/faults.py), boots a batch, and waits for the supervisor to restart the
killed role and for every server to be ACTIVE. The invariants are checked over
the whole cloud at the end: one domain per instance, one address per server, one
claim per instance, usage equal to the flavors, and the projection equal to a
replay of the log.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from novalog.client import ApiFailure
from novalog.faults import CRASH_POINTS
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, assert_one_of_everything, leftovers, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = [
    ("api", "api.after_commit"), ("api", "api.after_publish"),
    ("scheduler", "consume.after_flush"), ("scheduler", "consume.after_inbox"),
    ("conductor", "consume.after_flush"), ("conductor", "consume.after_inbox"),
    ("compute", "consume.after_flush"), ("compute", "compute.after_claim"),
    ("compute", "compute.after_disks"), ("compute", "compute.after_define"),
    ("network", "network.after_allocation"), ("projector", "projector.before_commit"),
]
# crashes inside a delete: the servers are booted first, then deleted with the crash armed
DELETE_SCENARIOS = [
    ("api", "api.after_commit"), ("conductor", "consume.after_flush"),
    ("compute", "consume.after_inbox"), ("compute", "compute.after_destroy"),
    ("compute", "compute.after_release"),
]
# crashes inside a move: one server on cmp1, moved with the crash armed, then deleted
MOVE_SCENARIOS = [
    ("compute.migration.after_claim", "resize-confirm"),
    ("compute.resize.after_power_off", "resize-confirm"),
    ("compute.migration.after_copy", "live"),
    ("compute.migration.after_spawn", "resize-revert"),
    ("compute.migration.after_spawn", "live"),
    ("compute.migration.after_cleanup", "resize-confirm"),
    ("compute.resize.after_revert_dest", "resize-revert"),
]
# crashes inside volume work: a volume created, attached, detached, deleted, one step armed
VOLUME_SCENARIOS = [
    ("volume", "volume.after_create", "create"),
    ("compute", "compute.volume.after_attach", "attach"),
    ("compute", "compute.volume.after_detach", "detach"),
    ("volume", "volume.after_delete", "delete"),
]
BATCH = 2


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    home = tmp_path_factory.mktemp("crash") / "home"
    plan = home.parent / "crash-plan"
    plan.write_text("")
    with running_cloud(infra, home, hosts=2,
                       extra_env={"NOVALOG_CRASH_PLAN": str(plan)}) as c:
        c.raise_quotas()
        yield c


def test_every_crash_point_is_exercised() -> None:
    assert {point for _, point in SCENARIOS + DELETE_SCENARIOS} | \
        {point for point, _ in MOVE_SCENARIOS} | \
        {point for _, point, _ in VOLUME_SCENARIOS} == set(CRASH_POINTS)


def api_ready(cloud: Cloud, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{cloud.api_url}/compute/v2.1", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "API did not come back"
        time.sleep(0.2)


def restarts(cloud: Cloud) -> dict[str, int]:
    status = json.loads(cloud.cli("status", "--json").stdout)
    return {c["name"]: c["restarts"] for c in status["components"]}


@pytest.mark.parametrize(("role", "point"), SCENARIOS, ids=[f"{r}:{p}" for r, p in SCENARIOS])
def test_a_crash_loses_nothing(cloud: Cloud, role: str, point: str) -> None:
    plan = Path(cloud.env["NOVALOG_CRASH_PLAN"])
    plan.write_text(f"{role}:{point}\n")
    before = restarts(cloud)
    name = f"{role}-{point.replace('.', '-').replace('_', '-')}"
    body = {"server": {"name": name, "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": BATCH, "max_count": BATCH}}
    client = cloud.client()
    try:
        client.request("POST", "/compute/v2.1/servers", json=body)
    except httpx.HTTPError:
        assert role == "api", "only the API's own crash may cut the request"
    api_ready(cloud)
    marker = cloud.home / "crashes" / f"{role}-{point}"
    deadline = time.monotonic() + 90
    while True:
        servers = [s for s in cloud.client().get("/compute/v2.1/servers/detail",
                                                  all_tenants="1")["servers"]
                   if s["name"].startswith(name)]
        if len(servers) == BATCH and all(s["status"] == "ACTIVE" for s in servers):
            break
        assert not any(s["status"] == "ERROR" for s in servers), servers
        assert time.monotonic() < deadline, (f"{name}: {[s['status'] for s in servers]}, "
                                             f"crashed: {marker.exists()}")
        time.sleep(0.3)
    plan.write_text("")
    assert marker.exists(), f"{role}:{point} never fired"
    wait_restarted(cloud, role, before)


def wait_restarted(cloud: Cloud, role: str, before: dict[str, int]) -> None:
    deadline = time.monotonic() + 60  # the supervisor respawns after its back-off
    while True:
        after = restarts(cloud)
        if any(n.startswith(role) and after[n] > before.get(n, 0) for n in after):
            break
        assert time.monotonic() < deadline, f"no {role} process was restarted"
        time.sleep(0.3)


@pytest.mark.parametrize(("role", "point"), DELETE_SCENARIOS,
                         ids=[f"delete-{r}:{p}" for r, p in DELETE_SCENARIOS])
def test_a_crash_inside_a_delete_leaves_nothing_behind(cloud: Cloud, role: str,
                                                       point: str) -> None:
    name = f"del-{role}-{point.replace('.', '-').replace('_', '-')}"
    client = cloud.client()
    created = client.request("POST", "/compute/v2.1/servers", json={"server": {
        "name": name, "flavorRef": "1", "imageRef": cloud.image_id(), "min_count": BATCH,
        "max_count": BATCH, "return_reservation_id": True}})
    deadline = time.monotonic() + 60
    while len(ids := [s["id"] for s in client.get(
            "/compute/v2.1/servers", reservation_id=created["reservation_id"])["servers"]]) \
            < BATCH:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cloud.wait_servers(ids)
    time.sleep(0.5)  # the boot's last events handled: the armed crash hits the delete
    plan = Path(cloud.env["NOVALOG_CRASH_PLAN"])
    before = restarts(cloud)
    marker = cloud.home / "crashes" / f"{role}-{point}"
    marker.unlink(missing_ok=True)  # the boot scenarios may have fired this point already
    plan.write_text(f"{role}:{point}\n")
    token = client.token()
    for server_id in ids:
        try:
            httpx.delete(f"{cloud.api_url}/compute/v2.1/servers/{server_id}",
                         headers={"X-Auth-Token": token}, timeout=10)
        except httpx.HTTPError:
            assert role == "api", "only the API's own crash may cut the request"
            api_ready(cloud)
    deadline = time.monotonic() + 90
    while True:
        gone = [i for i in ids if httpx.get(f"{cloud.api_url}/compute/v2.1/servers/{i}",
                                            headers={"X-Auth-Token": token}).status_code == 404]
        if len(gone) == len(ids) and not leftovers(cloud, set(ids)):
            break
        assert time.monotonic() < deadline, (gone, leftovers(cloud, set(ids)))
        time.sleep(0.3)
    plan.write_text("")
    assert marker.exists(), f"{role}:{point} never fired"
    wait_restarted(cloud, role, before)


@pytest.mark.parametrize(("point", "move"), MOVE_SCENARIOS,
                         ids=[f"{m}-{p}" for p, m in MOVE_SCENARIOS])
def test_a_crash_inside_a_move_loses_nothing_and_leaves_one_guest(cloud: Cloud, point: str,
                                                                   move: str) -> None:
    client = cloud.client()
    name = f"mv-{move}-{point.replace('.', '-').replace('_', '-')}"
    created = client.request("POST", "/compute/v2.1/servers", json={"server": {
        "name": name, "flavorRef": "1", "imageRef": cloud.image_id(),
        "availability_zone": "nova:cmp1"}})
    server_id = created["server"]["id"]
    cloud.wait_servers([server_id])
    addresses = client.get(f"/compute/v2.1/servers/{server_id}")["server"]["addresses"]
    plan = Path(cloud.env["NOVALOG_CRASH_PLAN"])
    before = restarts(cloud)
    marker = cloud.home / "crashes" / f"compute-{point}"
    marker.unlink(missing_ok=True)
    plan.write_text(f"compute:{point}\n")
    resize: tuple[str, ...] = ("resize", server_id, "m1.small")
    steps: dict[str, list[tuple[str, ...]]] = {
        "resize-confirm": [resize, ("confirm-resize", server_id)],
        "resize-revert": [resize, ("revert-resize", server_id)],
        "live": [("live-migrate", server_id)]}
    for step in steps[move]:
        result = cloud.cli(*step, "--wait", timeout=240)
        assert result.returncode == 0, (step, result.stdout + result.stderr)
    plan.write_text("")
    assert marker.exists(), f"compute:{point} never fired"
    wait_restarted(cloud, "compute", before)
    host, memory = ("cmp1", 512) if move == "resize-revert" else \
        ("cmp2", 2048 if move == "resize-confirm" else 512)
    shown = client.get(f"/compute/v2.1/servers/{server_id}")["server"]
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == \
        ("ACTIVE", host, addresses)
    deadline = time.monotonic() + 60
    while (held := host_claims(cloud, server_id)) != {host: ("active", memory)} or \
            dirs_of(cloud, server_id) != [host]:
        assert time.monotonic() < deadline, (held, dirs_of(cloud, server_id))
        time.sleep(0.3)
    kinds = Counter(e["event_type"] for e in client.get(
        f"/novalog/v1/servers/{server_id}/events")["events"])
    assert max(kinds.values()) == 1, kinds  # nothing doubled
    assert httpx.delete(f"{cloud.api_url}/compute/v2.1/servers/{server_id}",
                        headers={"X-Auth-Token": client.token()}).status_code == 204
    deadline = time.monotonic() + 60
    while leftovers(cloud, {server_id}) or dirs_of(cloud, server_id):
        assert time.monotonic() < deadline, leftovers(cloud, {server_id})
        time.sleep(0.3)


@pytest.mark.parametrize(("role", "point", "armed"), VOLUME_SCENARIOS,
                         ids=[f"volume-{p}" for _, p, _ in VOLUME_SCENARIOS])
def test_a_crash_inside_volume_work_doubles_nothing_and_loses_nothing(
        cloud: Cloud, role: str, point: str, armed: str) -> None:
    client = cloud.client()
    base = f"/volume/v3/{client.project_id}"
    name = f"vol-{armed}"
    server_id = client.request("POST", "/compute/v2.1/servers", json={"server": {
        "name": name, "flavorRef": "1", "imageRef": cloud.image_id(),
        "availability_zone": "nova:cmp1"}})["server"]["id"]
    cloud.wait_servers([server_id])
    plan = Path(cloud.env["NOVALOG_CRASH_PLAN"])
    before = restarts(cloud)
    marker = cloud.home / "crashes" / f"{role}-{point}"
    marker.unlink(missing_ok=True)
    volume_id = ""

    def status() -> str | None:
        try:
            return str(client.get(f"{base}/volumes/{volume_id}")["volume"]["status"])
        except ApiFailure as exc:
            assert exc.status == 404
            return None

    for step, settled in (("create", "available"), ("attach", "in-use"),
                          ("detach", "available"), ("delete", None)):
        if step == armed:
            plan.write_text(f"{role}:{point}\n")
        if step == "create":
            volume_id = client.request("POST", f"{base}/volumes", json={"volume": {
                "size": 1, "name": name}})["volume"]["id"]
        elif step == "attach":
            client.request("POST", f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
                           json={"volumeAttachment": {"volumeId": volume_id}})
        elif step == "detach":
            client.request("DELETE", f"/compute/v2.1/servers/{server_id}/"
                                     f"os-volume_attachments/{volume_id}")
        else:
            client.request("DELETE", f"{base}/volumes/{volume_id}")
        deadline = time.monotonic() + 90
        while (now := status()) != settled:
            assert now != "error" and time.monotonic() < deadline, (step, now)
            time.sleep(0.3)
        plan.write_text("")
    assert marker.exists(), f"{role}:{point} never fired"
    wait_restarted(cloud, role, before)
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        kinds = Counter(r[0] for r in conn.execute(
            f'SELECT event_type FROM "{cloud.settings.db_schema}_live".volume_events '
            "WHERE volume_id = %s", (volume_id,)))
    assert kinds == dict.fromkeys([
        "VolumeRequested", "VolumeCreated", "VolumeReserved", "VolumeAttaching",
        "VolumeAttached", "VolumeDetaching", "VolumeDetached", "VolumeDeleteRequested",
        "VolumeDeleted"], 1), kinds  # nothing doubled, nothing lost
    assert not (cloud.home / "volumes" / f"volume-{volume_id}").exists()
    domain = (cloud.home / "compute" / "cmp1" / "instances" / server_id / "libvirt.xml")
    assert "volume-" not in domain.read_text()  # no disk left half-attached
    assert httpx.delete(f"{cloud.api_url}/compute/v2.1/servers/{server_id}",
                        headers={"X-Auth-Token": client.token()}).status_code == 204
    deadline = time.monotonic() + 60
    while leftovers(cloud, {server_id}) or dirs_of(cloud, server_id):
        assert time.monotonic() < deadline, leftovers(cloud, {server_id})
        time.sleep(0.3)


def host_claims(cloud: Cloud, server_id: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            f'SELECT host, stage, memory_mb FROM "{cloud.settings.db_schema}".compute_claims '
            "WHERE instance_uuid = %s", (server_id,))}


def dirs_of(cloud: Cloud, server_id: str) -> list[str]:
    return [h for h in cloud.compute_hosts()
            if (cloud.home / "compute" / h / "instances" / server_id).exists()]


def test_after_all_crashes_there_is_one_of_everything(cloud: Cloud) -> None:
    admin = cloud.client()
    servers = admin.get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]
    assert len(servers) == BATCH * len(SCENARIOS)
    assert Counter(s["status"] for s in servers) == {"ACTIVE": len(servers)}
    assert_one_of_everything(cloud, servers)
