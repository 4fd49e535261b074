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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from consumers.scheduler.host_state import VIEW_HANDLERS, HostView
from consumers.scheduler.manager import NoValidHost, Selection, select_destination
from consumers.scheduler.request_spec import build_spec
from novalog.consume import ConsumeLoop, Record
from novalog.db import make_pool
from novalog.domain.claims import claim_of
from novalog.domain.instance import NO_VALID_HOST, filter_counts
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics
from novalog.publish import Publisher
from novalog.read_model import BuildRequests, LiveProjection
from novalog.replica import LogReplica
from novalog.service import ServiceReporter
from novalog.settings import Settings
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)

GROUP = "scheduler"


class Scheduler:
    WANTS: ClassVar[frozenset[str]]  # = the keys of HANDLERS, below

    def __init__(self, settings: Settings, view: HostView, replica: LogReplica,
                 publisher: Publisher, projection: LiveProjection, *, host_subset_size: int = 1,
                 rng: random.Random | None = None) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.view = view
        self.replica = replica
        self.pub = publisher
        self.host_subset_size = host_subset_size
        self.rng = rng or random.Random()
        self.requests = BuildRequests(projection)

    def handle(self, event: Event, _record: Record) -> None:
        handler = HANDLERS.get(event.event_type)
        if handler is not None:  # a record with no type header reaches here undecided
            handler(self, event)

    def _requested(self, event: Event) -> None:
        request = payload_of(event, payloads.InstanceBuildRequested)
        self.requests.remember(event.aggregate_id, request)
        self.decide(event, request, attempt=1, excluded=frozenset())

    def _rescheduled(self, event: Event) -> None:
        p = payload_of(event, payloads.InstanceRescheduled)
        self.decide(event, self.requests.get(event.aggregate_id), attempt=p["attempt"],
                    excluded=frozenset(p["excluded_hosts"]))

    def _ended(self, event: Event) -> None:
        self.requests.forget(event.aggregate_id)

    def _migration_started(self, event: Event) -> None:
        """A destination for a move (Nova's select_destinations from the conductor's
        migrate task): the new flavor, never the source host, the admin's host if given."""
        m = payload_of(event, payloads.InstanceMigrationStarted)["migration"]
        uuid = event.aggregate_id
        request = self.requests.get(uuid)
        moved: payloads.InstanceBuildRequested = {
            **request, "flavor": m["new_flavor"], "forced_host": m["requested_host"],
            "forced_node": None}
        with self.replica.lock:
            spec = build_spec(uuid, moved, self.view, attempt=1,
                              excluded_hosts=frozenset({m["source_host"]}),
                              now=datetime.now(UTC))
            result = select_destination(self.view.hosts.table, spec,
                                        host_subset_size=self.host_subset_size, rng=self.rng)
            if isinstance(result, Selection):
                self.view.record_placement(uuid, result.host, claim_of(m["new_flavor"]),
                                           keep=m["source_host"])
        if isinstance(result, Selection):
            self.pub.emit(self.topics.instances, "InstanceMigrationScheduled", uuid,
                          payloads.InstanceMigrationScheduled(
                              migration_id=m["migration_id"], host=result.host,
                              node=result.node), cause=event)
            return
        log.info("NoValidHost for the %s of %s: %s", m["kind"], uuid,
                 filter_counts(_filter_results(result)))
        self.pub.emit(self.topics.instances, "InstanceMigrationFailed", uuid,
                      payloads.InstanceMigrationFailed(
                          migration_id=m["migration_id"], stage="scheduling",
                          reason=NO_VALID_HOST + result.reason, source_host=m["source_host"],
                          dest_host=None, rolled_back=m["kind"] != "evacuation"),
                      cause=event)

    def decide(self, cause: Event, request: payloads.InstanceBuildRequested, *, attempt: int,
               excluded: frozenset[str]) -> None:
        uuid = cause.aggregate_id
        with self.replica.lock:
            spec = build_spec(uuid, request, self.view, attempt=attempt,
                              excluded_hosts=excluded, now=datetime.now(UTC))
            result = select_destination(self.view.hosts.table, spec,
                                        host_subset_size=self.host_subset_size, rng=self.rng)
            if isinstance(result, Selection):
                self.view.record_placement(uuid, result.host, claim_of(request["flavor"]))
        if isinstance(result, Selection):
            log.info("[instance: %s] Selected host %s (attempt %d)", uuid, result.host, attempt)
            self.pub.emit(self.topics.instances, "InstanceScheduled", uuid,
                          payloads.InstanceScheduled(
                              host=result.host, node=result.node, attempt=attempt,
                              weighed_hosts=result.weighed_hosts[:10]), cause=cause)
        else:
            filters = _filter_results(result)
            log.info("NoValidHost for %s: %s", uuid, filter_counts(filters))
            self.pub.emit(self.topics.instances, "InstanceNoValidHost", uuid,
                          payloads.InstanceNoValidHost(attempt=attempt, reason=result.reason,
                                                       filters=filters), cause=cause)


def _filter_results(result: NoValidHost) -> list[payloads.FilterResult]:
    return [payloads.FilterResult(filter=r.filter, hosts_in=r.hosts_in, hosts_out=r.hosts_out)
            for r in result.filters]


# What the scheduler acts on, by event type: its consume loop's subscription (WANTS)
# and its header-level skipping are derived from this table.
HANDLERS: dict[str, Callable[[Scheduler, Event], None]] = {
    "InstanceBuildRequested": Scheduler._requested,
    "InstanceRescheduled": Scheduler._rescheduled,
    "InstanceSpawned": Scheduler._ended,
    "InstanceErrored": Scheduler._ended,
    "InstanceNoValidHost": Scheduler._ended,
    "InstanceDeleted": Scheduler._ended,
    "InstanceMigrationStarted": Scheduler._migration_started,
}
Scheduler.WANTS = frozenset(HANDLERS)


def serve(settings: Settings, stop: threading.Event) -> None:

    topics = Topics(settings.topic_prefix)
    view = HostView(service_down_time=timedelta(seconds=settings.service_down_time_s))
    replica = LogReplica(settings, [topics.hosts, topics.instances, topics.catalog], view.apply,
                         "scheduler", wants=frozenset(VIEW_HANDLERS)).start()
    if not replica.wait_caught_up(60):
        replica.check()
        raise TimeoutError("the scheduler's host view did not catch up with the log in 60s")
    pool = make_pool(settings, autocommit=True)
    producer = EventProducer(settings)
    scheduler = Scheduler(settings, view, replica, Publisher(producer, "scheduler",
                                                             settings.hostname),
                          LiveProjection(pool, settings.db_schema),
                          host_subset_size=settings.host_subset_size)
    # a dead replica stops the beats and the role: never schedule on a frozen view
    reporter = ServiceReporter(settings, producer, "scheduler", checks=(replica.check,))
    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.instances],
                       handler=scheduler.handle, producer=producer, inbox=Inbox(pool, GROUP),
                       wants=Scheduler.WANTS, on_idle=reporter.beat)
    try:
        reporter.start()
        loop.run(stop)
    finally:
        replica.stop()
        pool.close()
