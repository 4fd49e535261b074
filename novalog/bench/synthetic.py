"""Benchmarks that need no running cloud's traffic: synthetic boots for `replay`, a
synthetic host view for `scheduler`.

`replay`: publish synthetic boots (10 instance events each, the real event types
and payloads) under a topic prefix of their own, then time the projector folding
them into a fresh schema: events per second of a full replay.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from rich.console import Console

from novalog.bench.report import ReplayResult, SchedulerRow
from novalog.db import make_pool
from novalog.domain.instance import instance_name
from novalog.kafka import EventProducer, Topics, ensure_topics
from novalog.migrations import drop_schemas, migrate
from novalog.settings import Settings
from projections import versions
from projections.projector import Projector
from schemas import Event, payloads

console = Console()

FLAVOR = payloads.Flavor(flavorid="1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1,
                         ephemeral_gb=0, swap_mb=0, extra_specs={})


def boot_events(n: int, host: str) -> list[Event]:
    """The ten events of one successful boot, as the roles emit them."""
    uid, req = str(uuid.uuid4()), f"req-{uuid.uuid4()}"
    port = payloads.Port(port_id=str(uuid.uuid4()), network_id="net", network_name="private",
                         ip_address=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                         mac_address="fa:16:3e:00:00:01")
    steps: list[tuple[str, str, Mapping[str, object]]] = [
        ("InstanceBuildRequested", "api", payloads.InstanceBuildRequested(
            name=f"bench-{n}", project_id="bench", user_id="bench",
            reservation_id=f"r-{n}", launch_index=0, flavor=FLAVOR,
            image=payloads.Image(id="img", name="cirros", min_disk=0, min_ram=0,
                                 properties={}), networks=[], block_device_mapping=[],
            key_name=None, metadata={}, user_data=None, availability_zone=None,
            forced_host=None, forced_node=None, scheduler_hints={},
            is_admin=False, config_drive=False, security_groups=[], admin_password=None,
            key_data=None)),
        ("InstanceScheduled", "scheduler", payloads.InstanceScheduled(
            host=host, attempt=1, node=host, weighed_hosts=[host])),
        ("InstanceBuildDispatched", "conductor", payloads.InstanceBuildDispatched(
            host=host, attempt=1, node=host)),
        ("InstanceClaimAccepted", "compute", payloads.InstanceClaimAccepted(
            host=host, attempt=1, node=host, vcpus=1, memory_mb=512, disk_gb=1)),
        ("InstanceNetworkingStarted", "compute",
         payloads.InstanceNetworkingStarted(host=host, attempt=1)),
        ("InstanceNetworkAllocated", "compute", payloads.InstanceNetworkAllocated(
            host=host, attempt=1, ports=[port])),
        ("InstanceBlockDeviceMappingStarted", "compute",
         payloads.InstanceBlockDeviceMappingStarted(host=host, attempt=1)),
        ("InstanceBlockDevicesMapped", "compute", payloads.InstanceBlockDevicesMapped(
            host=host, attempt=1, disks=[])),
        ("InstanceSpawningStarted", "compute",
         payloads.InstanceSpawningStarted(host=host, attempt=1)),
        ("InstanceSpawned", "compute", payloads.InstanceSpawned(
            host=host, attempt=1, node=host, domain_name=instance_name(uid), power_state=1,
            launched_at=datetime.now(UTC))),
    ]
    return [Event(kind, uid, payload, req, f"{role}@bench") for kind, role, payload in steps]


def replay(base: Settings, events: int) -> ReplayResult:
    """Events per second of a full replay (publish synthetic boots, then fold them)."""
    tag = uuid.uuid4().hex[:8]
    settings = replace(base, topic_prefix=f"bench-{tag}", db_schema=f"bench_{tag}",
                       partitions=4)
    topics = Topics(settings.topic_prefix)
    ensure_topics(settings, topics.core())
    migrate(settings)
    producer = EventProducer(settings, linger_ms=20)
    started = time.perf_counter()
    for n in range(events // 10):
        for event in boot_events(n, f"cmp{n % 10}"):
            producer.publish(topics.instances, event)
    producer.flush(120)
    published = time.perf_counter() - started
    console.print(f"published {events:,} events in {published:.1f}s")
    target = versions.version_schema(settings.db_schema, versions.code_version())
    pool = make_pool(settings, projection_schema=target, max_size=2)
    projector = Projector(settings, pool, producer, group_id=f"bench-{tag}",
                          dead_letters=False, batch_size=5000)
    try:
        while True:  # the group join is not timed; the first batch that reads records is
            started = time.perf_counter()
            if projector.poll_once():
                break
        first = 0
        while projector.events_projected < events:
            projector.poll_once()
        seconds = time.perf_counter() - started
    finally:
        projector.close()
        pool.close()
    folded = projector.events_projected - first
    drop_schemas(settings)
    return {"scenario": "replay", "events": events, "seconds": round(seconds, 2),
            "events_per_second": round(folded / seconds), "batch_size": 5000}


def scheduler_decisions(hosts: int, decisions: int, seed: int = 7) -> list[float]:
    """Milliseconds per select_destination over a synthetic view of `hosts` hosts."""
    import random
    from datetime import timedelta

    from consumers.scheduler.host_state import HostState
    from consumers.scheduler.host_table import HostTable
    from consumers.scheduler.manager import select_destination
    from consumers.scheduler.request_spec import RequestSpec
    from novalog.domain.claims import Claim

    rng = random.Random(seed)
    now = datetime.now(UTC)
    view = HostTable.of(
        HostState(host=f"cmp{i}", node=f"cmp{i}", zone=rng.choice(["nova", "az2"]),
                  disabled=rng.random() < 0.02, vcpus=32, memory_mb=131072,
                  local_gb=2000, reported_vcpus_used=rng.randrange(0, 100),
                  reported_memory_mb_used=rng.randrange(0, 120000),
                  reported_local_gb_used=rng.randrange(0, 1800),
                  last_heartbeat=now - timedelta(seconds=rng.randrange(0, 90)))
        for i in range(hosts))
    spec = RequestSpec(instance_uuid="bench", claim=Claim(2, 4096, 40), now=now)
    times = []
    for _ in range(decisions):
        started = time.perf_counter()
        select_destination(view, spec, host_subset_size=3, rng=rng)
        times.append((time.perf_counter() - started) * 1000)
    return times


def scheduler(sizes: tuple[tuple[int, int], ...] = ((10, 2000), (100, 1000), (1000, 200),
                                                  (10000, 40))) -> list[SchedulerRow]:
    rows: list[SchedulerRow] = []
    for hosts, decisions in sizes:
        times = sorted(scheduler_decisions(hosts, decisions))
        rows.append({"hosts": hosts, "decisions": decisions,
                     "p50_ms": round(times[len(times) // 2], 3),
                     "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
                     "max_ms": round(times[-1], 3)})
    return rows
