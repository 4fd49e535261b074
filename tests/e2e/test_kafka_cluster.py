"""A real fault on a real cluster: the broker that leads the most instances partitions
is killed -9 in the middle of a burst of boots, then started again.

Three Apache Kafka nodes (KRaft, each broker + controller) on loopback; topics with
replication factor 3 and min.insync.replicas 2; every producer uses acks=all. The
cloud must not notice more than a pause: every accepted boot ends ACTIVE, nothing is
dead-lettered, one domain / address / claim per instance, replay --verify equal.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from novalog.embedded import kafka_node
from novalog.kafka import wait_for_brokers
from novalog.process import Child, free_port, spawn, stop_child
from novalog.settings import Settings
from tests.conftest import Infra, needs_java
from tests.e2e.conftest import assert_one_of_everything, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_java]

BATCHES, PER_BATCH = 4, 5


class Cluster:
    def __init__(self, base: Path) -> None:
        self.nodes = kafka_node.cluster_nodes(base, [(free_port(), free_port())
                                                     for _ in range(3)], heap_mb=384)
        self.specs = kafka_node.prepare_cluster(Settings.from_env(), self.nodes,
                                                base / "logs", base / "cluster.id")
        self.children: dict[int, Child] = {}
        self.bootstrap = ",".join(n.address for n in self.nodes)

    def start(self, node_id: int) -> None:
        self.children[node_id] = spawn(self.specs[node_id - 1])

    def main_leader(self, topic: str) -> int:
        """The broker leading the most partitions of `topic` (the lowest id on a tie)."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        leaders = [int(p.leader) for p in meta.partitions.values()]
        return min(set(leaders), key=lambda b: (-leaders.count(b), b))

    def replicas_in_sync(self, topic: str) -> bool:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        return all(len(p.isrs) == 3 for p in meta.partitions.values())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "kafka")
    try:
        for node in c.nodes:
            c.start(node.node_id)
        wait_for_brokers(c.bootstrap, 3, timeout=120)
        yield c
    finally:
        for child in c.children.values():  # all at once: a lone survivor waits for a quorum
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
        for child in c.children.values():
            stop_child(child)


def test_killing_the_leader_mid_burst_loses_and_duplicates_nothing(
        infra: Infra, cluster: Cluster, tmp_path: Path) -> None:
    on_cluster = Infra(cluster.bootstrap, infra.database_url, "3-broker cluster")
    with running_cloud(on_cluster, tmp_path / "home", hosts=2,
                       extra_env={"NOVALOG_REPLICATION_FACTOR": "3"}) as cloud:
        cloud.raise_quotas()
        instances = f"{cloud.settings.topic_prefix}.instances"
        assert cluster.replicas_in_sync(instances)
        client, image = cloud.client(), cloud.image_id()
        reservations = []
        victim = None
        for batch in range(BATCHES):
            body = {"server": {"name": f"burst-{batch}", "flavorRef": "1", "imageRef": image,
                               "min_count": PER_BATCH, "max_count": PER_BATCH,
                               "return_reservation_id": True}}
            reservations.append(client.request("POST", "/compute/v2.1/servers",
                                               json=body)["reservation_id"])
            if batch == 1:  # mid-burst: boots accepted, building and still to come
                victim = cluster.main_leader(instances)
                cluster.children[victim].proc.kill()
                cluster.children[victim].proc.wait()
                killed_at = time.monotonic()
        assert victim is not None
        time.sleep(max(0.0, 10 - (time.monotonic() - killed_at)))
        cluster.start(victim)
        deadline = time.monotonic() + 240
        while True:
            servers = [s for r in reservations for s in client.get(
                "/compute/v2.1/servers/detail", reservation_id=r)["servers"]]
            if len(servers) == BATCHES * PER_BATCH and \
                    all(s["status"] == "ACTIVE" for s in servers):
                break
            assert not any(s["status"] == "ERROR" for s in servers), \
                [(s["name"], s.get("fault")) for s in servers if s["status"] == "ERROR"]
            assert time.monotonic() < deadline, [(s["name"], s["status"]) for s in servers]
            time.sleep(1)
        assert json.loads(cloud.cli("dead-letters", "--json").stdout) == []
        status = json.loads(cloud.cli("status", "--json").stdout)
        assert {c["name"]: c["restarts"] for c in status["components"] if c["restarts"]} == {}
        assert_one_of_everything(cloud, servers)
        deadline = time.monotonic() + 60  # the restarted broker rejoins every ISR
        while not cluster.replicas_in_sync(instances):
            assert time.monotonic() < deadline, "the restarted broker did not catch up"
            time.sleep(0.5)
