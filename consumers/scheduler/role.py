"""The `scheduler` role: requests in, InstanceScheduled / InstanceNoValidHost out.

Replicas share the consumer group "scheduler" on the instances topic, so each
request is decided once. Every replica keeps a full host view from a log
replica of the hosts, instances and catalog topics, and counts its own
decisions at once. Two replicas may still race for the last room on a host:
the compute claim settles it, and the loser is rescheduled.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool

from consumers.scheduler.host_state import HostView, claim_of
from consumers.scheduler.manager import Selection, select_destination
from consumers.scheduler.request_spec import build_spec
from novalog.consume import ConsumeLoop, Record, TransientError
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics
from novalog.publish import Publisher
from novalog.replica import LogReplica
from novalog.settings import Settings, env_int
from schemas import Event

log = logging.getLogger(__name__)

GROUP = "scheduler"


def request_payload(pool: ConnectionPool, cache: OrderedDict[str, dict[str, Any]],
                    instance: str) -> dict[str, Any]:
    """The instance's InstanceBuildRequested payload: remembered, or from the projection.

    Both the scheduler and the conductor see the request before any later
    event of the same instance (one key, one partition); the projection only
    matters after a restart in the middle of a build.
    """
    if instance in cache:
        return cache[instance]
    with pool.connection() as conn:
        row = conn.execute("SELECT payload FROM instance_events WHERE instance_uuid = %s AND "
                           "event_type = 'InstanceBuildRequested'", (instance,)).fetchone()
    if row is None:
        raise TransientError(f"the build request of {instance} is not projected yet")
    payload: dict[str, Any] = row[0]
    return payload


def remember(cache: OrderedDict[str, dict[str, Any]], instance: str,
             payload: dict[str, Any], limit: int = 100_000) -> None:
    cache[instance] = payload
    if len(cache) > limit:
        cache.popitem(last=False)


class Scheduler:
    def __init__(self, settings: Settings, view: HostView, replica: LogReplica,
                 publisher: Publisher, pool: ConnectionPool, *, host_subset_size: int = 1,
                 rng: random.Random | None = None) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.view = view
        self.replica = replica
        self.pub = publisher
        self.pool = pool
        self.host_subset_size = host_subset_size
        self.rng = rng or random.Random()
        self.requests: OrderedDict[str, dict[str, Any]] = OrderedDict()

    WANTS = frozenset({"InstanceBuildRequested", "InstanceRescheduled", "InstanceSpawned",
                       "InstanceErrored", "InstanceNoValidHost"})

    def handle(self, event: Event, _record: Record) -> None:
        uuid, p = event.aggregate_id, event.payload
        if event.event_type == "InstanceBuildRequested":
            remember(self.requests, uuid, p)
            self.decide(event, p, attempt=1, excluded=frozenset())
        elif event.event_type == "InstanceRescheduled":
            request = request_payload(self.pool, self.requests, uuid)
            self.decide(event, request, attempt=p["attempt"],
                        excluded=frozenset(p["excluded_hosts"]))
        elif event.event_type in ("InstanceSpawned", "InstanceErrored", "InstanceNoValidHost"):
            self.requests.pop(uuid, None)

    def decide(self, cause: Event, request: dict[str, Any], *, attempt: int,
               excluded: frozenset[str]) -> None:
        uuid = cause.aggregate_id
        with self.replica.lock:
            spec = build_spec(uuid, request, self.view, attempt=attempt,
                              excluded_hosts=excluded, now=datetime.now(UTC))
            result = select_destination(list(self.view.hosts.values()), spec,
                                        host_subset_size=self.host_subset_size, rng=self.rng)
            if isinstance(result, Selection):
                self.view.record_placement(uuid, result.host, claim_of(request["flavor"]))
        if isinstance(result, Selection):
            self.pub.emit(self.topics.instances, "InstanceScheduled", uuid, {
                "host": result.host, "node": result.node, "attempt": attempt,
                "weighed_hosts": result.weighed_hosts[:10]}, cause=cause)
        else:
            log.info("NoValidHost for %s: %s", uuid, result.reason)
            self.pub.emit(self.topics.instances, "InstanceNoValidHost", uuid, {
                "attempt": attempt, "reason": result.reason,
                "filters": [{"filter": r.filter, "hosts_in": r.hosts_in,
                             "hosts_out": r.hosts_out} for r in result.filters]}, cause=cause)


def serve(settings: Settings, stop: threading.Event) -> None:
    import os

    topics = Topics(settings.topic_prefix)
    view = HostView()
    replica = LogReplica(settings, [topics.hosts, topics.instances, topics.catalog], view.apply,
                         "scheduler").start()
    replica.wait_caught_up(60)
    pool = make_pool(settings)
    producer = EventProducer(settings)
    scheduler = Scheduler(settings, view, replica, Publisher(producer, "scheduler",
                                                             settings.hostname), pool,
                          host_subset_size=env_int(os.environ, "NOVALOG_HOST_SUBSET_SIZE", 1))
    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.instances],
                       handler=scheduler.handle, producer=producer, inbox=Inbox(pool, GROUP),
                       wants=Scheduler.WANTS)
    try:
        loop.run(stop)
    finally:
        replica.stop()
        pool.close()
