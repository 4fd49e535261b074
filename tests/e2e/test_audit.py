"""The log is the truth: replay --verify, time travel, audit, projection versions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest

from projections.versions import PROJECTION_VERSION
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("audit") / "home", hosts=2,
                       extra_env={"NOVALOG_TEST_FAULTS": "refuse_claim@cmp1"}) as c:
        c.raise_quotas()
        # a mix: a reschedule (cmp1 refuses every claim), a multi-create, a NoValidHost
        assert c.cli("boot", "solo", "--flavor", "m1.tiny", "--image", "cirros",
                     "--wait").returncode == 0
        assert c.cli("boot", "trio", "--flavor", "m1.tiny", "--image", "cirros", "--count", "3",
                     "--wait").returncode == 0
        c.publish_catalog("FlavorCreated", "77", {
            "flavorid": "77", "name": "m1.giant", "vcpus": 64, "memory_mb": 1024,
            "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0, "is_public": True,
            "extra_specs": {}})
        time.sleep(1)
        assert c.cli("boot", "giant", "--flavor", "m1.giant", "--image", "cirros",
                     "--wait").returncode == 1
        yield c


def test_replay_verify_reports_equality(cloud: Cloud) -> None:
    result = cloud.cli("replay", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DIFFERENT" not in result.stdout and "servers" in result.stdout
    assert "0 refused by the fold" in result.stdout


def test_audit_of_a_rescheduled_server_lists_both_attempts(cloud: Cloud) -> None:
    result = cloud.cli("audit", "solo", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    kinds = [e["event_type"] for e in entries]
    assert kinds[0] == "InstanceBuildRequested" and kinds[-1] == "InstanceSpawned"
    scheduled = [e["details"]["host"] for e in entries if e["event_type"] == "InstanceScheduled"]
    assert scheduled == ["cmp1", "cmp2"]
    refused = [e for e in entries if e["event_type"] == "InstanceClaimRefused"]
    assert len(refused) == 1 and refused[0]["details"]["host"] == "cmp1"
    assert refused[0]["role"] == "compute" and refused[0]["host"] == "cmp1"
    assert kinds.index("InstanceClaimRefused") < kinds.index("InstanceRescheduled") \
        < len(kinds) - 1
    assert entries[-1]["vm_state"] == "active" and entries[-1]["task_state"] is None
    assert len({e["request_id"] for e in entries}) == 1
    # log order, not clock order: two producers (conductor, compute) stamp their own times
    # and write one partition, so occurred_at may step back by a few ms between them
    assert len({e["partition"] for e in entries}) == 1
    offsets = [e["offset"] for e in entries]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    since = cloud.cli("audit", "--since", "-10m", "--json")
    requests = json.loads(since.stdout)["requests"]
    outcomes = {r["server"]: r["outcome"] for r in requests}
    assert outcomes == {"solo": "active", "trio-1": "active", "trio-2": "active",
                        "trio-3": "active", "giant": "error"}
    giant = next(r for r in requests if r["server"] == "giant")
    assert "No valid host" in giant["fault"] and giant["duration_s"] > 0


def test_as_of_shows_a_build_in_the_task_state_of_that_moment(cloud: Cloud) -> None:
    client = cloud.client()
    server = client.find("server", "solo")
    events = client.get(f"/novalog/v1/servers/{server['id']}/events")["events"]
    at = {e["event_type"]: datetime.fromisoformat(e["occurred_at"]) for e in events}
    during = at["InstanceNetworkingStarted"] + (at["InstanceNetworkAllocated"]
                                                - at["InstanceNetworkingStarted"]) / 2
    then = client.get(f"/novalog/v1/servers/{server['id']}", as_of=during.isoformat())
    assert then["server"]["status"] == "BUILD"
    assert then["server"]["OS-EXT-STS:task_state"] == "networking"
    before = (at["InstanceBuildRequested"] - timedelta(seconds=1)).isoformat()
    with pytest.raises(Exception, match="404"):
        client.get(f"/novalog/v1/servers/{server['id']}", as_of=before)
    listing = client.get("/novalog/v1/servers", as_of=during.isoformat())["servers"]
    assert [s["name"] for s in listing] == ["solo"]  # nothing else existed yet
    cli = cloud.cli("show", "solo", "--as-of", during.isoformat())
    assert cli.returncode == 0 and "networking" in cli.stdout
    bad = client.http.get(f"/novalog/v1/servers/{server['id']}", params={"as_of": "yesterday"},
                          headers={"X-Auth-Token": client.token()})
    assert bad.status_code == 400 and "is not a moment" in bad.text


def test_a_projection_version_bump_is_built_and_swapped_in_while_the_api_answers(
        cloud: Cloud) -> None:
    client = cloud.client()
    before = client.get("/compute/v2.1/servers/detail", all_tenants="1")
    failures: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            response = client.http.get("/compute/v2.1/servers/detail",
                                       headers={"X-Auth-Token": client.token()})
            if response.status_code != 200:
                failures.append(response.status_code)
            time.sleep(0.02)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    old, new = PROJECTION_VERSION, PROJECTION_VERSION + 1
    env = {**cloud.env, "NOVALOG_PROJECTION_VERSION": str(new)}
    v2 = subprocess.Popen([sys.executable, "-m", "novalog", "run", "projector"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    schema = cloud.settings.db_schema
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(cloud.settings.require_database_url(), autocommit=True) as conn:
            while True:
                row = conn.execute(f'SELECT schema_name FROM "{schema}".projection_versions '
                                   "WHERE state = 'active'").fetchone()
                if row and row[0] == f"{schema}_p{new}":
                    break
                assert time.monotonic() < deadline, "the new version never went live"
                time.sleep(0.2)
            states: dict[str, str] = dict(conn.execute(f'SELECT schema_name, state FROM "{schema}".'
                                       "projection_versions").fetchall())
            assert states == {f"{schema}_p{old}": "retired", f"{schema}_p{new}": "active"}
            kept = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                                (f"{schema}_p{old}",)).fetchone()
            assert kept == (1,)  # the old version is kept
    finally:
        stop.set()
        asker.join()
        v2.terminate()
        v2.wait(30)
    assert failures == []
    after = client.get("/compute/v2.1/servers/detail", all_tenants="1")
    assert after == before


def test_a_corrupted_row_fails_verify_naming_the_table_and_row(cloud: Cloud) -> None:
    server = cloud.client().find("server", "trio-2")
    with psycopg.connect(cloud.settings.require_database_url(), autocommit=True) as conn:
        live = conn.execute(f'SELECT schema_name FROM "{cloud.settings.db_schema}".'
                            "projection_versions WHERE state = 'active'").fetchone()
        assert live is not None
        conn.execute(f'UPDATE "{live[0]}".servers SET name = %s WHERE uuid = %s',
                     ("tampered", server["id"]))
    result = cloud.cli("replay", "--verify")
    assert result.returncode == 1
    assert "servers" in result.stderr and server["id"] in result.stderr
