"""The `network` role: one process owning the address pools of every network.

Start-up has two phases, so an address is never handed out twice:
1. catch up: read the network topic from offset 0 to its end (the high
   watermarks taken first; on Tansu, whose watermarks are wrong, three empty
   polls), applying every IpAllocated / IpReleased fact (and learning each
   network from the commands that name it);
2. serve: seek every partition to the group's committed offset and handle the
   commands from there. A command handled before a crash but not committed is
   handled again: allocation is deterministic and per instance, so it yields
   the same port and the same (derived) event ids.
Each fact is applied once, by event id, so our own facts coming back, or
facts read in phase 1 and again in phase 2, change nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from consumers.network.ipam import Pool, PoolExhausted
from novalog.consume import dead_letter, record_of, through_outages
from novalog.faults import crash_point
from novalog.kafka import EventProducer, Topics, consumer_config, end_offsets, next_batch, reached
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


def _decode(msg: Message) -> Event | None:
    try:
        return decode(msg.value() or b"")
    except SerializationError:
        return None


def serve(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings)
    service = NetworkService(topics, Publisher(producer, "network", settings.hostname))
    consumer = Consumer(consumer_config(settings, GROUP))
    try:
        partitions = sorted(consumer.list_topics(topics.network, timeout=15)
                            .topics[topics.network].partitions)
        # phase 1: every fact from the beginning
        ends = through_outages("network: end offsets", lambda: {
            (topics.network, p): e for p, e in end_offsets(consumer, topics.network,
                                                           partitions).items()}) \
            if settings.trusts_watermarks else None
        consumer.assign([TopicPartition(topics.network, p, 0) for p in partitions])
        empty = 0
        while not stop.is_set() and (not reached(consumer, ends) if ends is not None
                                     else empty < 3):
            messages = consumer.consume(1000, 0.2)
            empty = 0 if messages else empty + 1
            for msg in messages:
                event = _decode(msg) if msg.error() is None else None
                if event is not None:
                    service.learn(event)
        log.info("network: pools rebuilt (%d networks, %d facts)", len(service.pools),
                 len(service.applied))
        # phase 2: commands from the committed offsets
        committed = through_outages("network: committed offsets", lambda: consumer.committed(
            [TopicPartition(topics.network, p) for p in partitions], timeout=15))
        consumer.assign([TopicPartition(topics.network, tp.partition,
                                        tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                         for tp in committed])
        while not stop.is_set():
            messages = [m for m in next_batch(consumer, 500, settings.poll_timeout_ms / 1000)
                        if m.error() is None]
            allocated = False
            for msg in messages:
                event = _decode(msg)
                if event is None:
                    dead_letter(producer, topics.dead_letters, GROUP, record_of(msg),
                                "undecodable")
                    continue
                try:
                    service.learn(event)
                    if event.event_type in COMMANDS:
                        service.handle(event)
                        allocated |= event.event_type == "AllocatePorts"
                except Exception as exc:  # one bad command must not stop every network
                    log.exception("network could not handle %s", event.event_id)
                    dead_letter(producer, topics.dead_letters, GROUP, record_of(msg),
                                f"handler failed: {type(exc).__name__}: {exc}")
            if messages:
                producer.flush_all("network")
                if allocated:
                    crash_point("network.after_allocation")
                last: dict[int, int] = {}
                for m in messages:
                    last[m.partition() or 0] = max(last.get(m.partition() or 0, 0),
                                                   (m.offset() or 0) + 1)
                try:
                    consumer.commit(offsets=[TopicPartition(topics.network, p, o)
                                             for p, o in last.items()], asynchronous=False)
                except KafkaException as exc:  # handled again later: allocation is idempotent
                    log.warning("network: commit refused: %s", exc.args[0].str())
    finally:
        producer.flush_all("network")
        consumer.close()
