"""The `network` role: one process owning the address pools of every network.

Start-up has two phases, so an address is never handed out twice:
1. catch up: read the network topic from offset 0 to its end (the high
   watermarks taken first; on Tansu, whose watermarks are wrong, three empty
   polls), applying every IpAllocated / IpReleased fact (and learning each
   network from the commands that name it);
2. serve: the one consume loop (novalog/consume.py) takes the commands from the
   group's committed offsets, with its retry, outage and dead-letter policy. A
   command handled before a crash but not committed is handled again:
   allocation is deterministic and per instance, so it yields the same port and
   the same (derived) event ids.
Each fact is applied once, by event id, so our own facts coming back, or
facts read in phase 1 and again in phase 2, change nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import ClassVar

from consumers.network.ipam import Pool, PoolExhausted
from novalog.consume import ConsumeLoop, Record, through_outages
from novalog.faults import crash_point
from novalog.kafka import EventProducer, Topics, read_to_end
from novalog.publish import Publisher
from novalog.service import ServiceReporter
from novalog.settings import Settings
from schemas import Event, SerializationError, decode, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)

GROUP = "network"


class NetworkService:
    WANTS: ClassVar[frozenset[str]]  # = the keys of LEARNERS and COMMANDS, below

    def __init__(self, topics: Topics, publisher: Publisher) -> None:
        self.topics = topics
        self.pub = publisher
        self.pools: dict[str, Pool] = {}
        self.applied: set[str] = set()  # fact event ids already in the pools

    def pool(self, network: payloads.NetworkToAttach) -> Pool:
        if network["network_id"] not in self.pools:
            self.pools[network["network_id"]] = Pool.from_network(network)
        return self.pools[network["network_id"]]

    def learn(self, event: Event) -> None:
        """Phase 1 (and every read): facts rebuild pools; commands teach the networks."""
        learner = LEARNERS.get(event.event_type)
        if learner is not None:
            learner(self, event)

    def handle(self, event: Event) -> None:
        """A command (AllocatePorts, ReleasePorts); anything else is only learnt."""
        command = COMMANDS.get(event.event_type)
        if command is not None:
            command(self, event)

    # -- learning --------------------------------------------------------------------------
    def _learn_network(self, event: Event) -> None:
        self.pool(payload_of(event, payloads.AllocatePorts)["network"])

    def _apply_fact(self, event: Event, network_id: str, change: Callable[[Pool], None]) -> None:
        """Change the network's pool by a fact, once (by event id)."""
        if event.event_id in self.applied:
            return
        pool = self.pools.get(network_id)
        if pool is None:
            log.warning("fact %s for unknown network %s", event.event_id, network_id)
            return
        change(pool)
        self.applied.add(event.event_id)

    def _allocated(self, event: Event) -> None:
        p = payload_of(event, payloads.IpAllocated)
        self._apply_fact(event, p["network_id"], lambda pool: pool.apply_allocated(p))

    def _released(self, event: Event) -> None:
        p = payload_of(event, payloads.IpReleased)
        self._apply_fact(event, p["network_id"], lambda pool: pool.apply_released(p))

    def _fact(self, kind: str, network_id: str, payload: Mapping[str, object], cause: Event,
              *what: object) -> None:
        self.learn(self.pub.emit(self.topics.network, kind, network_id, payload, cause=cause,
                                 what=what))

    # -- commands --------------------------------------------------------------------------
    def release(self, event: Event) -> None:
        p = payload_of(event, payloads.ReleasePorts)
        pool = self.pools.get(p["network_id"])
        for port in pool.ports_of(p["instance_uuid"], p["attempt"]) if pool else []:
            self._fact("IpReleased", p["network_id"], payloads.IpReleased(
                network_id=port.network_id, instance_uuid=port.instance_uuid,
                port_id=port.port_id, ip_address=port.ip_address), event, port.port_id)

    def allocate(self, event: Event) -> None:
        p = payload_of(event, payloads.AllocatePorts)
        net, uuid = p["network"], p["instance_uuid"]
        reply_topic = self.topics.compute(p["host"])
        try:
            port = self.pool(net).allocate(uuid, net["fixed_ip"], attempt=p["attempt"],
                                           host=p["host"], slot=p["slot"])
        except (PoolExhausted, ValueError) as exc:
            self.pub.emit(self.topics.network, "IpAllocationFailed", net["network_id"],
                          payloads.IpAllocationFailed(network_id=net["network_id"],
                                                      instance_uuid=uuid, reason=str(exc)),
                          cause=event)
            self.pub.emit(reply_topic, "PortsAllocationFailed", uuid,
                          payloads.PortsAllocationFailed(instance_uuid=uuid, host=p["host"],
                                                         attempt=p["attempt"],
                                                         reason=str(exc)), cause=event)
            return
        log.info("[instance: %s] port %s on %s: %s", uuid, port.port_id, net["name"],
                 port.ip_address)
        self._fact("IpAllocated", net["network_id"], payloads.IpAllocated(
            network_id=port.network_id, instance_uuid=uuid, port_id=port.port_id,
            ip_address=port.ip_address, mac_address=port.mac_address, host=port.host,
            attempt=port.attempt, slot=port.slot), event)
        self.pub.emit(reply_topic, "PortsAllocated", uuid, payloads.PortsAllocated(
            instance_uuid=uuid, host=p["host"], attempt=p["attempt"],
            ports=[port.as_payload()], slot=port.slot), cause=event)


# What rebuilds the pools, by event type: facts, and the networks commands name.
LEARNERS: dict[str, Callable[[NetworkService, Event], None]] = {
    "AllocatePorts": NetworkService._learn_network,
    "IpAllocated": NetworkService._allocated,
    "IpReleased": NetworkService._released,
}
# The commands the role carries out, by event type.
COMMANDS: dict[str, Callable[[NetworkService, Event], None]] = {
    "AllocatePorts": NetworkService.allocate,
    "ReleasePorts": NetworkService.release,
}
# The consume loop's subscription: other types are passed over from the header alone.
NetworkService.WANTS = frozenset(LEARNERS) | frozenset(COMMANDS)


def serve(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings)
    service = NetworkService(topics, Publisher(producer, "network", settings.hostname))
    # phase 1: every fact from the beginning, to the end of the log
    for msg in through_outages("network catches up",
                               lambda: list(read_to_end(settings, [topics.network]))):
        with contextlib.suppress(SerializationError):  # dead-lettered by the loop below
            service.learn(decode(msg.value() or b""))
    log.info("network: pools rebuilt (%d networks, %d facts)", len(service.pools),
             len(service.applied))
    # phase 2: commands from the group's committed offsets, by the one consume loop
    allocated: list[bool] = []

    def handle(event: Event, _record: Record) -> None:
        service.learn(event)
        service.handle(event)
        if event.event_type == "AllocatePorts":
            allocated.append(True)

    def after_flush() -> None:
        if allocated:
            allocated.clear()
            crash_point("network.after_allocation")

    reporter = ServiceReporter(settings, producer, "network")
    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.network], handler=handle,
                       producer=producer, wants=NetworkService.WANTS, after_flush=after_flush,
                       on_idle=reporter.beat)
    try:
        reporter.start()
        loop.run(stop)
    finally:
        producer.flush_all("network")
