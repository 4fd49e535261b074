"""After the boot: every role a service that heartbeats, and servers deleted from any state.

One cloud for the module, with a short report interval and service_down_time, so a
frozen role turns down in seconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration]

DOWN_TIME_S = 4.0
CONTROL = {"nova-scheduler", "nova-conductor", "nova-network", "novalog-projector"}


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("lifecycle") / "home", hosts=2,
                       extra_env={"NOVALOG_REPORT_INTERVAL_S": "0.5",
                                  "NOVALOG_SERVICE_DOWN_TIME_S": str(DOWN_TIME_S)}) as c:
        c.raise_quotas()
        yield c


def services(cloud: Cloud, **query: str) -> dict[tuple[str, str], dict[str, Any]]:
    found = cloud.client().get("/compute/v2.1/os-services", **query)["services"]
    return {(s["binary"], s["host"]): s for s in found}


def until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def pid_of(cloud: Cloud, component: str) -> int:
    return int(next(c for c in cloud.components() if c["name"] == component)["pid"])


def test_every_role_is_a_service_and_a_frozen_one_turns_down(cloud: Cloud) -> None:
    until("every role up", lambda: {b for (b, _), s in services(cloud).items()
                                    if s["state"] == "up"} >= CONTROL | {"nova-compute"})
    listed = services(cloud)
    assert sorted(h for (b, h) in listed if b == "nova-compute") == ["cmp1", "cmp2"]
    assert all(s["zone"] == "internal" for (b, _), s in listed.items() if b in CONTROL)
    assert list(services(cloud, binary="nova-compute", host="cmp2")) == [("nova-compute",
                                                                          "cmp2")]
    health = cloud.http().get("/healthz")
    assert health.status_code == 200 and health.json()["services"].startswith("ok"), \
        health.json()
    # a conductor that stops working stops beating: down after service_down_time, and
    # /healthz says the control plane is not whole
    conductor = pid_of(cloud, "conductor")
    os.kill(conductor, signal.SIGSTOP)
    try:
        until("conductor down", lambda: all(
            s["state"] == "down" for (b, _), s in services(cloud).items()
            if b == "nova-conductor"), timeout=DOWN_TIME_S + 10)
        health = cloud.http().get("/healthz")
        assert health.status_code == 503
        assert health.json()["services"].startswith("down: nova-conductor"), health.json()
    finally:
        os.kill(conductor, signal.SIGCONT)
    until("conductor up again", lambda: cloud.http().get("/healthz").status_code == 200)


def test_a_compute_host_that_stops_heartbeating_gets_no_new_builds(cloud: Cloud) -> None:
    compute = pid_of(cloud, "compute-cmp1")
    os.kill(compute, signal.SIGSTOP)
    try:
        until("cmp1 down", lambda: services(cloud)[("nova-compute", "cmp1")]["state"]
              == "down", timeout=DOWN_TIME_S + 10)
        assert cloud.http().get("/healthz").status_code == 200  # a host is not the cloud
        hosts = []
        for i in range(3):
            result = cloud.cli("boot", f"while-cmp1-down-{i}", "--flavor", "m1.tiny",
                               "--image", "cirros", "--wait")
            assert result.returncode == 0, result.stdout + result.stderr
            server = cloud.client().find("server", f"while-cmp1-down-{i}")
            hosts.append(server["OS-EXT-SRV-ATTR:host"])
        assert hosts == ["cmp2"] * 3
    finally:
        os.kill(compute, signal.SIGCONT)
    until("cmp1 up again", lambda: services(cloud)[("nova-compute", "cmp1")]["state"] == "up")
