"""Kafka plumbing shared by every role: topic names, topic creation, the event producer.

Clients are created lazily, on first use, never at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from novalog.settings import Settings
from schemas import Event, encode

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class BrokerUnavailable(RuntimeError):
    """The configured Kafka broker does not answer."""


class DeliveryError(RuntimeError):
    """The broker did not acknowledge some produced records."""


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (DESIGN.md §3)."""

    prefix: str

    @property
    def instances(self) -> str:
        return f"{self.prefix}.instances"

    @property
    def hosts(self) -> str:
        return f"{self.prefix}.hosts"

    @property
    def catalog(self) -> str:
        return f"{self.prefix}.catalog"

    @property
    def network(self) -> str:
        return f"{self.prefix}.network"

    @property
    def volumes(self) -> str:
        """Block storage: every fact about every volume, keyed by volume id."""
        return f"{self.prefix}.volumes"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    def compute(self, host: str) -> str:
        """The command topic of one compute agent, like Nova's per-host RPC queue: one
        partition (COMMAND_PARTITIONS), as one agent reads it in order anyway."""
        return f"{self.prefix}.compute.{host}"

    def core(self) -> list[str]:
        """Topics that exist before any compute host does."""
        return [self.instances, self.hosts, self.catalog, self.network, self.volumes,
                self.dead_letters]


def client_config(settings: Settings) -> dict[str, Any]:
    """Settings common to every librdkafka client."""
    return {
        "bootstrap.servers": settings.require_bootstrap(),
        "client.id": f"novalog@{settings.hostname}",
        "log.connection.close": False,
    }


def group_name(settings: Settings, group_id: str) -> str:
    """Consumer groups belong to one deployment: two prefixes on one cluster never share one."""
    return f"{settings.topic_prefix}.{group_id}"


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """No auto-commit, no auto offset store: the consume loop commits after effects are durable."""
    return {
        **client_config(settings),
        "group.id": group_name(settings, group_id),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "fetch.wait.max.ms": settings.fetch_wait,  # see README "Latency settings"
        # a batch may wait on real guests (a soft reboot waits up to 120 s for ACPI): a
        # few in one batch must not pass the default 300 s and cost a rebalance
        "max.poll.interval.ms": 900_000,
    }


def next_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to `timeout` for one message, then take what is already fetched.

    librdkafka's consume(n, timeout) waits the whole timeout unless n messages are
    there; that would add the poll timeout to every hop of a boot.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


def open_reader(settings: Settings, name: str, topics: list[str],
                ) -> tuple[Consumer, dict[tuple[str, int], int] | None]:
    """A consumer assigned every partition of `topics` from offset 0 (no group, no commit),
    and the high watermarks where the log ends now: None on Tansu, whose are wrong."""
    consumer = Consumer({**client_config(settings), "group.id": group_name(settings, name),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 20,
                         "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(timeout=15)
        parts = [TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions]
        ends = {(tp.topic, tp.partition): int(consumer.get_watermark_offsets(
            tp, timeout=10, cached=False)[1]) for tp in parts} \
            if settings.trusts_watermarks else None
        consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in parts])
    except BaseException:
        consumer.close()
        raise
    return consumer, ends


def reached(consumer: Consumer, ends: dict[tuple[str, int], int]) -> bool:
    """True when the consumer's position is at or past every end offset. Positions move past
    transaction markers too, which a last-record offset would never reach."""
    todo = [TopicPartition(t, p) for (t, p), end in ends.items() if end > 0]
    if not todo:
        return True
    return all(tp.offset >= ends[(tp.topic, tp.partition)]
               for tp in consumer.position(todo))


class EndOfLog:
    """The one "caught up" rule of novalog, for a reader assigned from offset 0.

    On Apache Kafka the end is the high watermarks read when the reader opened (a position
    at or past each). Tansu's watermarks cannot be trusted, so there it is `idle_polls`
    empty polls in a row spanning at least `quiet_s` (a loaded Tansu answers some fetches
    empty while it still holds records: counting polls alone ended scans early under
    load). A reader that gets nothing for `stall_s` while short of its end raises
    BrokerUnavailable rather than wait for ever.
    """

    def __init__(self, consumer: Consumer, ends: dict[tuple[str, int], int] | None,
                 what: str, *, idle_polls: int = 5, quiet_s: float = 1.0,
                 stall_s: float = 30.0) -> None:
        self.consumer = consumer
        self.ends = ends
        self.what = what
        self.idle_polls = idle_polls
        self.quiet_s = quiet_s
        self.stall_s = stall_s
        self._empty = 0
        self._last_read = time.monotonic()
        self.reached = ends is not None and reached(consumer, ends)  # an empty log

    def after_poll(self, got: int) -> bool:
        """Call after each poll whose records are handled; True once the end is reached."""
        if self.reached:
            return True
        now = time.monotonic()
        if got:
            self._empty, self._last_read = 0, now
        else:
            self._empty += 1
        if self.ends is not None:
            self.reached = reached(self.consumer, self.ends)
        else:
            self.reached = self._empty >= self.idle_polls and \
                now - self._last_read >= self.quiet_s
        if not self.reached and not got and now - self._last_read > self.stall_s:
            raise BrokerUnavailable(f"reading {self.what} stalled for {self.stall_s:.0f}s "
                                    "short of the end: is the broker up?")
        return self.reached


def read_to_end(settings: Settings, topics: list[str], idle_polls: int = 5,
                stall_s: float = 30.0) -> Iterator[Message]:
    """Every record of `topics` from offset 0 to their end (EndOfLog), partition by
    partition in log order: raw records, for scans that must see undecodable ones too."""
    consumer, ends = open_reader(settings, "scan", topics)
    try:
        end = EndOfLog(consumer, ends, ", ".join(topics), idle_polls=idle_polls,
                       stall_s=stall_s)
        while not end.reached:
            batch = consumer.consume(2000, 0.1)
            yield from (m for m in batch if m.error() is None)
            end.after_poll(len(batch))
    finally:
        consumer.close()


def scan_topic(settings: Settings, topic: str, idle_polls: int = 5) -> list[Message]:
    """Every record of `topic` from offset 0 to its end, sorted by partition and offset."""
    return sorted(read_to_end(settings, [topic], idle_polls),
                  key=lambda m: (m.partition() or 0, m.offset() or 0))


def check_broker(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise BrokerUnavailable with an actionable message when nothing answers."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka broker at {bootstrap} does not answer ({exc.args[0].str()}). Start it, fix "
            "KAFKA_BOOTSTRAP_SERVERS, or unset it to use the embedded broker (`novalog up`)."
        ) from None


def cluster_id(bootstrap: str, timeout: float = 10.0) -> str | None:
    """The Kafka cluster id the broker reports (None when it reports none)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    try:
        found = admin.describe_cluster(request_timeout=timeout).result(timeout)
    except KafkaException:
        return None
    return str(found.cluster_id) if found.cluster_id else None


def wait_for_brokers(bootstrap: str, count: int, timeout: float = 60.0) -> None:
    """Until the cluster's metadata lists `count` brokers: a listener that accepts is not yet
    a broker that has registered with its controller."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(admin.list_topics(timeout=5).brokers) >= count:
                return
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"Kafka at {bootstrap} did not list {count} brokers within "
                                    f"{timeout:.0f}s; see the broker's log")
        time.sleep(0.1)


def ensure_topics(settings: Settings, names: Iterable[str], timeout: float | None = None,
                  partitions: int | None = None) -> None:
    """Create missing topics with the configured partitions (or `partitions`); existing
    ones are left alone. The wait grows with the count: ten fleets creating a hundred
    command topics each at once keep the embedded broker busy for a while."""
    partitions = partitions or settings.partitions
    admin = AdminClient(client_config(settings))
    wanted = sorted(set(names))
    existing = set(admin.list_topics(timeout=15).topics)
    missing = [n for n in wanted if n not in existing]
    timeout = timeout if timeout is not None else 15.0 + 0.5 * len(missing)
    if missing:
        futures = admin.create_topics(
            [NewTopic(n, partitions, settings.replication_factor) for n in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            log.info("created topic %s (%d partitions)", name, partitions)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        known = admin.list_topics(timeout=timeout).topics
        missing = [n for n in missing if n not in known or known[n].error is not None]
        if missing:  # each look lists every topic: not too often when there are many
            time.sleep(0.05 if len(missing) < 10 else 0.5)
    if missing:
        raise BrokerUnavailable(f"topics not visible after {timeout}s: {missing}")


COMMAND_PARTITIONS = 1  # a host's command topic: 1,000 hosts are 1,000 partitions, not 4,000


class EventProducer:
    """Idempotent producer (acks=all); delivery failures surface at flush()."""

    def __init__(self, settings: Settings, *, linger_ms: int | None = None,
                 delivery_timeout_ms: int = 0) -> None:
        """`delivery_timeout_ms=0`: a record is never given up (a broker outage only delays
        it); the API, which must answer, passes a bound and falls back to its outbox."""
        self._config = {
            **client_config(settings),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": settings.linger_ms if linger_ms is None else linger_ms,
            "message.timeout.ms": delivery_timeout_ms,
        }
        self._producer: Producer | None = None
        self._errors: list[str] = []

    @property
    def client(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def publish(self, topic: str, event: Event, headers: Headers | None = None) -> None:
        """Queue one event, keyed by its aggregate id so an aggregate stays in order."""
        self.produce(topic, event.aggregate_id.encode(), encode(event), headers)

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Headers | None = None) -> None:
        """Queue raw bytes (dead letters keep the original record verbatim)."""
        while True:
            try:
                self.client.produce(topic, value=value, key=key, headers=headers,
                                    on_delivery=self._on_delivery)
                break
            except BufferError:
                self.client.poll(0.1)  # local queue full: let deliveries drain
        self.client.poll(0)

    def flush_all(self, waiting: str) -> None:
        """Block until every queued record is acknowledged, however long the broker is away."""
        if self._producer is None:
            return
        rounds = 0
        while self._producer.flush(5.0):
            rounds += 1
            log.warning("%s: %d records not acknowledged yet (%ds)", waiting,
                        len(self._producer), rounds * 5)
        errors, self._errors = self._errors, []
        if errors:
            raise DeliveryError("; ".join(errors[:5]))

    def pending(self) -> int:
        """Records queued and not acknowledged yet."""
        return 0 if self._producer is None else len(self._producer)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued record is acknowledged, or raise DeliveryError."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"{remaining} records not acknowledged within {timeout}s")
        if errors:
            raise DeliveryError("; ".join(errors[:5]))
