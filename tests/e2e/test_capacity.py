"""Capacity: a burst larger than the cloud, two schedulers racing, a network role restart."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST_MB = 2048  # 4 x m1.tiny per host at ram_allocation_ratio 1.0


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("capacity") / "home", hosts=2,
                       replicas=2, extra_env={"NOVALOG_COMPUTE_MEMORY_MB": str(HOST_MB)}) as c:
        c.raise_quotas()
        yield c


def boot(cloud: Cloud, name: str, count: int = 1) -> list[dict[str, object]]:
    admin = cloud.client()
    body = {"server": {"name": name, "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": count, "max_count": count, "return_reservation_id": True}}
    reservation = admin.request("POST", "/compute/v2.1/servers", json=body)["reservation_id"]
    deadline = time.monotonic() + 20
    while len(ids := [s["id"] for s in admin.get("/compute/v2.1/servers",
                                                 reservation_id=reservation)["servers"]]) < count:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return list(cloud.wait_servers(ids, timeout=60).values())


def addresses(cloud: Cloud) -> list[str]:
    return [a["addr"] for s in cloud.client().get("/compute/v2.1/servers/detail")["servers"]
            for a in s["addresses"].get("private", [])]


def test_the_network_role_rebuilds_its_pools_after_a_restart(cloud: Cloud) -> None:
    first = boot(cloud, "before", 2)
    assert all(s["status"] == "ACTIVE" for s in first)
    network = next(c for c in cloud.components() if c["name"] == "network")
    psutil.Process(int(str(network["pid"]))).kill()
    deadline = time.monotonic() + 30
    while True:
        now = next(c for c in cloud.components() if c["name"] == "network")
        if now["restarts"] == 1 and now["state"] == "up":
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    second = boot(cloud, "after", 2)
    assert all(s["status"] == "ACTIVE" for s in second)
    ips = addresses(cloud)
    assert len(ips) == 4 and len(set(ips)) == 4  # the restarted role reused no address


def test_more_requests_than_capacity_at_once_fill_exactly_the_capacity(cloud: Cloud) -> None:
    admin = cloud.client()
    image = cloud.image_id()
    admin.token()
    ids: list[str] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        body = {"server": {"name": f"burst-{n}", "flavorRef": "1", "imageRef": image}}
        server = admin.request("POST", "/compute/v2.1/servers", json=body)["server"]
        with lock:
            ids.append(server["id"])

    active_before = sum(1 for s in admin.get("/compute/v2.1/servers/detail")["servers"]
                        if s["status"] == "ACTIVE")
    room = 2 * HOST_MB // 512 - active_before
    threads = [threading.Thread(target=post, args=(n,)) for n in range(room + 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = cloud.wait_servers(ids, timeout=120)
    statuses = Counter(s["status"] for s in done.values())
    assert statuses == {"ACTIVE": room, "ERROR": 3}, statuses
    for server in done.values():
        if server["status"] == "ERROR":
            assert "No valid host" in server["fault"]["message"] or \
                "Exceeded maximum number of retries" in server["fault"]["message"]
    every = admin.get("/compute/v2.1/servers/detail")["servers"]
    per_host = Counter(s["OS-EXT-SRV-ATTR:host"] for s in every if s["status"] == "ACTIVE")
    assert per_host == {"cmp1": 4, "cmp2": 4}
    deadline = time.monotonic() + 20
    while True:
        nodes = admin.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
        used = {n["service"]["host"]: n["memory_mb_used"] for n in nodes}
        if used == {"cmp1": HOST_MB, "cmp2": HOST_MB}:
            break
        assert all(v <= HOST_MB for v in used.values()), used  # never over-committed
        assert time.monotonic() < deadline, used
        time.sleep(0.3)
