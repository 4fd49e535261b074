"""`novalog down` then `novalog up` on the embedded Apache Kafka keeps everything: every
server, every event of the log and every consumer group's offset, and the cloud goes on
without re-doing any of it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from novalog.client import NovalogClient
from tests.conftest import cli, needs_java

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_java]



def group_offsets(bootstrap: str) -> dict[str, dict[tuple[str, int], int]]:
    """Every consumer group's committed offsets, asked of the broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(30)
    out = {}
    for group in sorted(g.group_id for g in listed.valid):
        [future] = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)]).values()
        out[group] = {(tp.topic, tp.partition): tp.offset
                      for tp in future.result(30).topic_partitions if tp.offset >= 0}
    return out


def settled_offsets(bootstrap: str, timeout: float = 60) -> dict[str, dict[tuple[str, int], int]]:
    """The groups' offsets on the instances topic once two readings a second apart agree
    (every role has committed what it consumed); heartbeats move the others on."""
    deadline = time.monotonic() + timeout
    last = group_offsets(bootstrap)
    while True:
        time.sleep(1)
        now = group_offsets(bootstrap)
        if {g: {k: v for k, v in o.items() if k[0].endswith(".instances")}
                for g, o in now.items()} == \
                {g: {k: v for k, v in o.items() if k[0].endswith(".instances")}
                 for g, o in last.items()}:
            return now
        assert time.monotonic() < deadline, "consumer offsets never settled"
        last = now


def snapshot(client: NovalogClient) -> dict[str, Any]:
    servers = sorted(client.get("/compute/v2.1/servers/detail", all_tenants="1")["servers"],
                     key=lambda s: s["id"])
    keep = ("id", "name", "status", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state",
            "OS-EXT-SRV-ATTR:host", "addresses")
    return {"servers": [{k: s.get(k) for k in keep} for s in servers],
            "events": {s["id"]: client.get(f"/novalog/v1/servers/{s['id']}/events")
                       for s in servers}}


def test_down_and_up_keep_every_server_event_and_offset(novalog_env: dict[str, str]) -> None:
    env = {**novalog_env, "OS_PASSWORD": "admin"}
    api = f"http://127.0.0.1:{env['NOVALOG_API_PORT']}"
    bootstrap = f"127.0.0.1:{env['NOVALOG_BROKER_PORT']}"
    up = cli(env, "up", "--detach", "--hosts", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(cli(env, "status", "--json").stdout)
        broker = next(c for c in status["components"] if c["name"] == "broker")
        assert broker["version"].startswith("apache-kafka ")
        for name in ("keep-1", "keep-2"):
            booted = cli(env, "boot", name, "--flavor", "m1.tiny", "--image", "cirros",
                         "--wait")
            assert booted.returncode == 0, booted.stdout + booted.stderr
        before = snapshot(NovalogClient(api, "admin", "admin", "admin"))
        offsets_before = settled_offsets(bootstrap)
        assert offsets_before, "no consumer group committed anything"
        down = cli(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        up = cli(env, "up", "--detach", "--hosts", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        after = snapshot(NovalogClient(api, "admin", "admin", "admin"))
        assert after == before
        assert len(after["servers"]) == 2
        assert all(s["status"] == "ACTIVE" for s in after["servers"])
        offsets_after = settled_offsets(bootstrap)
        for group, offsets in offsets_before.items():
            now = offsets_after.get(group, {})
            for (topic, partition), offset in offsets.items():
                if topic.endswith(".instances"):  # no instance event since: exactly there
                    assert now.get((topic, partition)) == offset, (group, topic, partition)
                else:  # heartbeats go on, but no group starts over
                    assert now.get((topic, partition), -1) >= offset, (group, topic, partition)
        again = cli(env, "boot", "keep-3", "--flavor", "m1.tiny", "--image", "cirros", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        replay = cli(env, "replay", "--verify")
        assert replay.returncode == 0, replay.stdout + replay.stderr
    finally:
        cli(env, "down")
