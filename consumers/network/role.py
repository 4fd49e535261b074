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
from typing import Any

from consumers.network.ipam import Pool, PoolExhausted
from novalog.consume import ConsumeLoop, Record, through_outages
from novalog.faults import crash_point
from novalog.kafka import EventProducer, Topics, read_to_end
from novalog.publish import Publisher
from novalog.settings import Settings
from schemas import Event, SerializationError, decode

log = logging.getLogger(__name__)

GROUP = "network"
COMMANDS = {"AllocatePorts", "ReleasePorts"}


class NetworkService:
    def __init__(self, topics: Topics, publisher: Publisher) -> None:
        self.topics = topics
        self.pub = publisher
        self.pools: dict[str, Pool] = {}
        self.applied: set[str] = set()  # fact event ids already in the pools

    def pool(self, network: dict[str, Any]) -> Pool:
        if network["network_id"] not in self.pools:
            self.pools[network["network_id"]] = Pool.from_network(network)
        return self.pools[network["network_id"]]

    def learn(self, event: Event) -> None:
        """Phase 1 (and every read): facts rebuild pools; commands teach the networks."""
        if event.event_type == "AllocatePorts":
            self.pool(event.payload["network"])
        elif event.event_type in ("IpAllocated", "IpReleased"):
            self.apply_fact(event)

    def apply_fact(self, event: Event) -> None:
        if event.event_id in self.applied:
            return
        pool = self.pools.get(event.payload["network_id"])
        if pool is None:
            log.warning("fact %s for unknown network %s", event.event_id,
                        event.payload["network_id"])
            return
        if event.event_type == "IpAllocated":
            pool.apply_allocated(event.payload)
        else:
            pool.apply_released(event.payload)
        self.applied.add(event.event_id)

    def _fact(self, kind: str, network_id: str, payload: dict[str, Any], cause: Event,
              *what: object) -> None:
        self.apply_fact(self.pub.emit(self.topics.network, kind, network_id, payload,
                                      cause=cause, what=what))

    def handle(self, event: Event) -> None:
        p = event.payload
        if event.event_type == "AllocatePorts":
            self.allocate(event, p)
        elif event.event_type == "ReleasePorts":
            pool = self.pools.get(p["network_id"])
            for port in pool.ports_of(p["instance_uuid"], p["attempt"]) if pool else []:
                self._fact("IpReleased", p["network_id"], {
                    "network_id": port.network_id, "instance_uuid": port.instance_uuid,
                    "port_id": port.port_id, "ip_address": port.ip_address}, event,
                    port.port_id)

    def allocate(self, event: Event, p: dict[str, Any]) -> None:
        net, uuid = p["network"], p["instance_uuid"]
        reply_topic = self.topics.compute(p["host"])
        try:
            port = self.pool(net).allocate(uuid, net.get("fixed_ip"), attempt=p["attempt"],
                                           host=p["host"])
        except (PoolExhausted, ValueError) as exc:
            self.pub.emit(self.topics.network, "IpAllocationFailed", net["network_id"], {
                "network_id": net["network_id"], "instance_uuid": uuid, "reason": str(exc)},
                cause=event)
            self.pub.emit(reply_topic, "PortsAllocationFailed", uuid, {
                "instance_uuid": uuid, "host": p["host"], "attempt": p["attempt"],
                "reason": str(exc)}, cause=event)
            return
        self._fact("IpAllocated", net["network_id"], {
            **port.as_payload(), "instance_uuid": uuid, "host": port.host,
            "attempt": port.attempt}, event)
        self.pub.emit(reply_topic, "PortsAllocated", uuid, {
            "instance_uuid": uuid, "host": p["host"], "attempt": p["attempt"],
            "ports": [port.as_payload()]}, cause=event)


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
        if event.event_type in COMMANDS:
            service.handle(event)
            if event.event_type == "AllocatePorts":
                allocated.append(True)

    def after_flush() -> None:
        if allocated:
            allocated.clear()
            crash_point("network.after_allocation")

    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.network], handler=handle,
                       producer=producer, after_flush=after_flush)
    try:
        loop.run(stop)
    finally:
        producer.flush_all("network")
