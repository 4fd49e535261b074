"""A compute fleet: three simulated hosts served by one agent process (one consumer, one
producer, one pool; a lane per host). Each host is still its own nova-compute, with its
own claims and domains; a crash of the fleet loses nothing and duplicates nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, assert_one_of_everything, running_cloud
from tests.e2e.test_crashes import restarts, wait_restarted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 6


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    home = tmp_path_factory.mktemp("fleet") / "home"
    plan = home.parent / "crash-plan"
    plan.write_text("")
    with running_cloud(infra, home, hosts=3, extra_env={
            "NOVALOG_COMPUTE_FLEETS": "1", "NOVALOG_CRASH_PLAN": str(plan)}) as c:
        c.raise_quotas()
        yield c


def boot(cloud: Cloud, name: str) -> list[dict[str, Any]]:
    body = {"server": {"name": name, "flavorRef": "1", "imageRef": cloud.image_id(),
                       "min_count": BATCH, "max_count": BATCH}}
    cloud.client().request("POST", "/compute/v2.1/servers", json=body)
    deadline = time.monotonic() + 90
    while True:
        servers = [s for s in cloud.client().get("/compute/v2.1/servers/detail",
                                                  all_tenants="1")["servers"]
                   if s["name"].startswith(name)]
        if len(servers) == BATCH and all(s["status"] == "ACTIVE" for s in servers):
            return servers
        assert not any(s["status"] == "ERROR" for s in servers), servers
        assert time.monotonic() < deadline, [s["status"] for s in servers]
        time.sleep(0.3)


def test_one_process_serves_three_hosts_each_its_own_nova_compute(cloud: Cloud) -> None:
    computes = [c["name"] for c in cloud.components() if c["name"].startswith("compute")]
    assert computes == ["compute-fleet1"]
    services = cloud.client().get("/compute/v2.1/os-services",
                                  binary="nova-compute")["services"]
    assert sorted(s["host"] for s in services) == ["cmp1", "cmp2", "cmp3"]
    assert all(s["state"] == "up" for s in services)
    servers = boot(cloud, "fleet")
    placed = Counter(s["OS-EXT-SRV-ATTR:host"] for s in servers)
    assert len(placed) >= 2, placed  # the scheduler spreads them over the fleet's hosts
    for host in placed:  # each host's domains live in its own libvirt, its own directory
        domains = list((cloud.home / "compute" / host / "instances").glob("*/libvirt.xml"))
        assert len(domains) == placed[host]


@pytest.mark.parametrize("point", ["consume.after_flush", "compute.after_define"])
def test_a_crash_of_the_fleet_loses_nothing(cloud: Cloud, point: str) -> None:
    plan = Path(cloud.env["NOVALOG_CRASH_PLAN"])
    plan.write_text(f"compute:{point}\n")
    before = restarts(cloud)
    servers = boot(cloud, f"crash-{point.replace('.', '-').replace('_', '-')}")
    plan.write_text("")
    assert (cloud.home / "crashes" / f"compute-{point}").exists(), f"{point} never fired"
    wait_restarted(cloud, "compute-fleet", before)
    assert len(servers) == BATCH


def test_everything_once_after_the_fleet_crashes(cloud: Cloud) -> None:
    servers = cloud.client().get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]
    assert len(servers) == 3 * BATCH
    assert_one_of_everything(cloud, servers)
