"""Reschedules: a refused claim and a failed spawn each move the build to another host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    faults = "refuse_claim@cmp1,fail_spawn@cmp2"
    with running_cloud(infra, tmp_path_factory.mktemp("resched") / "home", hosts=3,
                       extra_env={"NOVALOG_TEST_FAULTS": faults}) as c:
        yield c


def test_refused_claim_then_failed_spawn_end_active_on_the_third_host(cloud: Cloud) -> None:
    result = cloud.cli("boot", "phoenix", "--flavor", "m1.tiny", "--image", "cirros", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    client = cloud.client()
    server = client.find("server", "phoenix")
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] == "cmp3"
    events = client.get(f"/novalog/v1/servers/{server['id']}/events")["events"]
    kinds = [e["event_type"] for e in events]
    scheduled = [e["payload"]["host"] for e in events if e["event_type"] == "InstanceScheduled"]
    assert scheduled == ["cmp1", "cmp2", "cmp3"]  # equal weights: by name; tried hosts excluded
    refused = next(e for e in events if e["event_type"] == "InstanceClaimRefused")
    assert refused["payload"]["host"] == "cmp1" and refused["payload"]["attempt"] == 1
    failed = next(e for e in events if e["event_type"] == "InstanceBuildFailed")
    assert failed["payload"] | {"reason": ""} == {"host": "cmp2", "attempt": 2,
                                                  "stage": "spawning", "reason": "",
                                                  "retryable": True}
    rescheduled = [e["payload"] for e in events if e["event_type"] == "InstanceRescheduled"]
    assert [r["attempt"] for r in rescheduled] == [2, 3]
    assert rescheduled[1]["excluded_hosts"] == ["cmp1", "cmp2"]
    assert kinds[-1] == "InstanceSpawned" and events[-1]["payload"]["attempt"] == 3
    # what the failed spawn on cmp2 took is gone: disks, and its port went back to the pool
    assert not (cloud.home / "compute" / "cmp2" / "instances" / server["id"]).exists()
    network = cloud.topic_events(f"{cloud.settings.topic_prefix}.network")
    released = [e for e in network if e.event_type == "IpReleased"
                and e.payload["instance_uuid"] == server["id"]]
    assert len(released) == 1
    steps = client.get(f"/compute/v2.1/servers/{server['id']}/os-instance-actions/"
                       f"{events[0]['request_id']}")["instanceAction"]["events"]
    builds = [(e["host"], e["result"]) for e in steps
              if e["event"] == "compute__do_build_and_run_instance"]
    assert builds == [("cmp1", "Error"), ("cmp2", "Error"), ("cmp3", "Success")]
    usage = {h["service"]["host"]: h["memory_mb_used"]
             for h in client.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]}
    assert usage["cmp1"] == 0 and usage["cmp2"] == 0  # claims released


def test_a_live_migration_that_fails_on_the_destination_rolls_back(cloud: Cloud) -> None:
    client = cloud.client()
    server = client.find("server", "phoenix")  # ACTIVE on cmp3 (the test above)
    for host, stage, reason in (("cmp1", "prep", "claim refused on cmp1 (test fault)"),
                                ("cmp2", "finish", "spawn failed on cmp2 (test fault)")):
        result = cloud.cli("live-migrate", server["id"], "--host", host, "--wait")
        assert result.returncode == 1, result.stdout + result.stderr  # given up, said why
        assert reason in result.stderr
        shown = client.get(f"/compute/v2.1/servers/{server['id']}")["server"]
        assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == \
            ("ACTIVE", "cmp3", server["addresses"])  # the guest never stopped on cmp3
        failed = [e["payload"] for e in client.get(
            f"/novalog/v1/servers/{server['id']}/events")["events"]
            if e["event_type"] == "InstanceMigrationFailed"]
        assert (failed[-1]["stage"], failed[-1]["dest_host"], failed[-1]["rolled_back"]) == \
            (stage, host, True)
        assert not (cloud.home / "compute" / host / "instances" / server["id"]).exists()
    migrations = client.get("/compute/v2.1/os-migrations", instance_uuid=server["id"])
    assert [m["status"] for m in migrations["migrations"]] == ["failed", "failed"]
    usage = {h["service"]["host"]: h["memory_mb_used"]
             for h in client.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]}
    assert usage == {"cmp1": 0, "cmp2": 0, "cmp3": 512}  # nothing held on the destinations
