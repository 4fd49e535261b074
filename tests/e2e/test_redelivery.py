"""Re-delivery: every consumer group rewound to offset 0 re-reads the whole log,
and nothing new happens (no domain, address, claim or event but de-duplicated ones)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from novalog.kafka import consumer_config
from projections.versions import PROJECTION_VERSION
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUPS = ["scheduler", "conductor", "network", "compute-cmp1", "compute-cmp2"]


def snapshot(cloud: Cloud) -> dict[str, Any]:
    prefix = cloud.settings.topic_prefix
    events = {t: cloud.topic_events(f"{prefix}.{t}")
              for t in ("instances", "network", "compute.cmp1", "compute.cmp2")}
    with psycopg.connect(cloud.settings.require_database_url()) as conn:
        claims = conn.execute(f'SELECT host, instance_uuid, stage FROM '
                              f'"{cloud.settings.db_schema}".compute_claims ORDER BY 2'
                              ).fetchall()
    domains = sorted(p.parent.name for p in cloud.home.glob("compute/*/instances/*/libvirt.xml"))
    servers = cloud.client().get("/compute/v2.1/servers/detail", all_tenants="1")["servers"]
    return {"event_ids": {t: {e.event_id for e in es} for t, es in events.items()},
            "kinds": {t: Counter(e.event_type for e in es) for t, es in events.items()},
            "claims": claims, "domains": domains,
            "servers": sorted((s["id"], s["status"], json.dumps(s["addresses"]),
                               s["OS-EXT-SRV-ATTR:host"]) for s in servers)}


def test_rewinding_every_group_to_zero_changes_nothing(infra: Infra, tmp_path) -> None:
    home = tmp_path / "home"
    with running_cloud(infra, home, hosts=2,
                       extra_env={"NOVALOG_TEST_FAULTS": "refuse_claim@cmp1"}) as cloud:
        assert cloud.cli("boot", "r", "--flavor", "m1.tiny", "--image", "cirros", "--count",
                         "3", "--wait").returncode == 0
        before = snapshot(cloud)
        cloud.proc.send_signal(signal.SIGTERM)  # every role stops, the log stays
        cloud.proc.wait(60)
        s = cloud.settings
        for group in GROUPS:
            consumer = Consumer(consumer_config(s, group))
            topics = {"scheduler": "instances", "conductor": "instances", "network": "network",
                      "compute-cmp1": "compute.cmp1", "compute-cmp2": "compute.cmp2"}
            topic = f"{s.topic_prefix}.{topics[group]}"
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in parts],
                            asynchronous=False)
            consumer.close()
        with psycopg.connect(s.require_database_url(), autocommit=True) as conn:
            conn.execute(f'UPDATE "{s.db_schema}_p{PROJECTION_VERSION}".projector_offsets '
                         "SET next_offset = 0")
        again = subprocess.Popen([sys.executable, "-m", "novalog", "up", "--hosts", "2"],
                                 env=cloud.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while cloud.cli("status").returncode != 0:
                assert time.monotonic() < deadline and again.poll() is None
                time.sleep(0.5)
            time.sleep(15)  # every role re-reads the whole log
            after = snapshot(cloud)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(60)
    assert after["servers"] == before["servers"]
    assert after["claims"] == before["claims"]
    assert after["domains"] == before["domains"]
    for topic, ids in before["event_ids"].items():
        new = after["event_ids"][topic] - ids
        assert new == set(), f"{topic}: {len(new)} new events after re-delivery"
    # the log really was re-read: the network role re-handled its commands and re-emitted
    # the same facts (same ids: de-duplicated downstream)
    kinds_before, kinds_after = before["kinds"]["network"], after["kinds"]["network"]
    assert kinds_after["IpAllocated"] > kinds_before["IpAllocated"]
