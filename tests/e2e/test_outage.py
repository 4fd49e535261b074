"""Postgres restarted mid-run: the API says 503 clearly, roles wait, every accepted boot ends."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_postgres_restart_mid_run_loses_no_accepted_boot(infra: Infra, tmp_path) -> None:
    if infra.postgres is None:
        pytest.skip("needs the embedded Postgres the test session started itself")
    with running_cloud(infra, tmp_path / "home", hosts=2) as cloud:
        cloud.raise_quotas()
        client = cloud.client()
        token = client.token()
        body = {"server": {"name": "through", "flavorRef": "1", "imageRef": cloud.image_id(),
                           "min_count": 4, "max_count": 4, "return_reservation_id": True}}
        reservation = client.request("POST", "/compute/v2.1/servers",
                                     json=body)["reservation_id"]
        infra.postgres.stop()  # the builds are under way
        try:
            http = cloud.http()
            away = http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})
            assert away.status_code == 503
            assert "database is unavailable" in away.json()["serviceUnavailable"]["message"]
            refused = http.post("/compute/v2.1/servers", json=body,
                                headers={"X-Auth-Token": token})
            assert refused.status_code == 503
            time.sleep(10)
        finally:
            infra.postgres.start()
        deadline = time.monotonic() + 120
        while True:
            try:
                servers = client.get("/compute/v2.1/servers/detail",
                                     reservation_id=reservation)["servers"]
            except Exception:
                servers = []
            if len(servers) == 4 and all(s["status"] == "ACTIVE" for s in servers):
                break
            assert time.monotonic() < deadline, [s["status"] for s in servers]
            time.sleep(0.5)
        assert cloud.cli("boot", "after", "--flavor", "m1.tiny", "--image", "cirros",
                         "--wait").returncode == 0
        status = json.loads(cloud.cli("status", "--json").stdout)
        assert all(c["state"] == "up" for c in status["components"])
        dead = json.loads(cloud.cli("dead-letters", "--json").stdout)
        assert dead == []  # an outage is waited out, never dead-lettered
