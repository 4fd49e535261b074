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
import pytest

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
    assert {point for _, point in SCENARIOS + DELETE_SCENARIOS} == set(CRASH_POINTS)


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


def test_after_all_crashes_there_is_one_of_everything(cloud: Cloud) -> None:
    admin = cloud.client()
    servers = admin.get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]
    assert len(servers) == BATCH * len(SCENARIOS)
    assert Counter(s["status"] for s in servers) == {"ACTIVE": len(servers)}
    assert_one_of_everything(cloud, servers)
