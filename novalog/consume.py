"""The consume loop every reacting role runs.

At-least-once with durable effects first: for each batch the loop decodes and
handles every record, flushes the producer (follow-up events and dead letters
are acknowledged by the broker), and only then commits the batch's offsets.
A crash anywhere before the commit re-delivers the batch, so handlers must be
idempotent (DESIGN.md §4). A record that cannot be decoded, or whose handler
keeps failing, is copied verbatim to the dead-letter topic and the loop moves
on: one bad record never stalls a partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from novalog.faults import crash_point
from novalog.idempotency import Inbox
from novalog.kafka import (
    DeliveryError,
    EventProducer,
    Headers,
    Topics,
    consumer_config,
    next_batch,
)
from novalog.settings import Settings
from schemas import Event, SerializationError, decode
from schemas.codec import event_type_of

log = logging.getLogger(__name__)
T = TypeVar("T")

DLQ_HEADER = "novalog.dlq."


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a peer briefly away, a lock)."""


@dataclass(frozen=True)
class Record:
    """Where a record came from, for handlers that need it and for dead letters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


Handler = Callable[[Event, Record], None]


def is_outage(exc: BaseException) -> bool:
    """Postgres or the broker is away: wait it out (never dead-letter for this)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, KafkaException):
        code = exc.args[0].code()
        return code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                        KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT,
                        # a broker of a cluster is away: leaders and coordinators move
                        KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                        KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
                        KafkaError.REQUEST_TIMED_OUT)
    return isinstance(exc, DeliveryError)


def wait_out_outage(what: str, attempt: int, exc: BaseException) -> None:
    """Sleep with capped exponential back-off, saying why."""
    delay = min(0.2 * 2 ** attempt, 5.0)
    log.warning("%s: %s: %s; retrying in %.1fs", what, type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "", delay)
    time.sleep(delay)


def through_outages(what: str, action: Callable[[], T]) -> T:
    """Run `action`, waiting out Postgres or broker outages for as long as they last;
    any other error is raised at once."""
    outage = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_outage(exc):
                raise
            wait_out_outage(what, outage, exc)
            outage += 1


def is_transient(exc: BaseException) -> bool:
    """The default retry policy: explicit TransientErrors and retriable Kafka errors."""
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, KafkaException) and bool(exc.args[0].retriable())


def _headers(msg: Message) -> Headers:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def record_of(msg: Message) -> Record:
    return Record(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        headers=_headers(msg),
    )


class ConsumeLoop:
    """Consume `topics` as member of `group_id`, hand each event to `handler`."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topics: list[str],
        handler: Handler,
        producer: EventProducer,
        retry_if: Callable[[BaseException], bool] = is_transient,
        batch_size: int = 500,
        inbox: Inbox | None = None,
        on_idle: Callable[[], None] | None = None,
        wants: frozenset[str] | None = None,
        after_flush: Callable[[], None] | None = None,
    ) -> None:
        """`wants`: the event types the handler acts on; others on its topics are passed
        over from the header alone (no decode, no inbox, no flush), offsets committed.
        `after_flush`: runs once a batch's output is acknowledged, before its commit."""
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.producer = producer
        self.retry_if = retry_if
        self.batch_size = batch_size
        self.inbox = inbox
        self.on_idle = on_idle
        self.wants = wants
        self.after_flush = after_flush
        self._handled: list[str] = []
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.max_retries + 1),
            wait=wait_exponential(multiplier=settings.retry_backoff_ms / 1000, max=10),
            retry=retry_if_exception(retry_if),
            reraise=True,
        )
        self.dead_letter_topic = Topics(settings.topic_prefix).dead_letters
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, self.group_id))
            self._consumer.subscribe(self.topics)
        return self._consumer

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; commit what was handled, then leave the group."""
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def poll_once(self) -> int:
        """Handle one batch and commit it; returns how many records it held."""
        messages = next_batch(self.consumer, self.batch_size,
                              self.settings.poll_timeout_ms / 1000)
        last: dict[tuple[str, int], int] = {}
        batch: list[tuple[Record, Event | None, str]] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", self.topics, err.str())
                continue
            last[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
            if self.wants is not None:
                kind = event_type_of(msg.value())
                if kind is not None and kind not in self.wants:
                    continue
            record = record_of(msg)
            try:
                batch.append((record, decode(record.value or b""), ""))
            except SerializationError as exc:
                batch.append((record, None, f"undecodable: {exc}"))
        already = self._already_handled([e.event_id for _, e, _ in batch if e is not None])
        for record, event, problem in batch:
            if event is None:
                self.dead_letter(record, problem)
            else:
                self._handle(record, event, already)
        if self.on_idle is not None:
            try:  # periodic work (heartbeats, sweeps) in the loop's own thread
                self.on_idle()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("%s: periodic work skipped: %s", self.group_id, exc)
        if last and not batch:  # only records passed over: nothing to make durable first
            self._commit(last, asynchronous=True)
        elif last:
            self.producer.flush_all(f"{self.group_id} waits for the broker")
            crash_point("consume.after_flush")
            if self.after_flush is not None:
                self.after_flush()
            if self.inbox is not None:
                inbox, handled = self.inbox, self._handled
                through_outages(f"{self.group_id} records its inbox",
                                lambda: inbox.record(handled))
                crash_point("consume.after_inbox")
            self._handled = []
            self._commit(last, asynchronous=False)
        return len(messages)

    def _commit(self, last: dict[tuple[str, int], int], asynchronous: bool) -> None:
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. the group moved on during an outage
            log.warning("%s: commit refused (%s); these records will come again and "
                        "the inbox will skip them", self.group_id, exc.args[0].str())

    def _already_handled(self, event_ids: list[str]) -> set[str]:
        """One inbox query per batch, not per record: a busy loop's largest saving."""
        inbox = self.inbox
        if inbox is None or not event_ids:
            return set()
        return through_outages(f"{self.group_id} reads its inbox",
                               lambda: inbox.seen_among(event_ids))

    def _handle(self, record: Record, event: Event, already: set[str]) -> None:
        if self.inbox is not None:
            if event.event_id in already or event.event_id in self._handled:
                log.info("skipping %s %s: already handled", event.event_type, event.event_id)
                return
            self._handled.append(event.event_id)
        try:
            through_outages(f"{self.group_id} waits for its infrastructure",
                            lambda: self._retrying(self.handler, event, record))
        except Exception as exc:
            self._give_up(event, record, exc, self.settings.max_retries + 1)

    def _give_up(self, event: Event, record: Record, exc: Exception, attempts: int) -> None:
        transient = self.retry_if(exc)
        why = f"gave up after {attempts} attempts: " if transient else "handler failed: "
        log.error("%s %s@%d:%d (%s)", why, record.topic, record.partition, record.offset,
                  event.event_type, exc_info=exc)
        self.dead_letter(record, f"{why}{type(exc).__name__}: {exc}")

    def dead_letter(self, record: Record, error: str) -> None:
        dead_letter(self.producer, self.dead_letter_topic, self.group_id, record, error)

    def close(self) -> None:
        """Leave the group at once so a replica takes over without waiting for a timeout."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def dead_letter(producer: EventProducer, topic: str, consumer: str, record: Record,
                error: str) -> None:
    """Copy the record verbatim to the dead-letter topic with where it came from and why."""
    log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition,
                record.offset, error)
    headers: Headers = [
        *record.headers,
        (DLQ_HEADER + "topic", record.topic.encode()),
        (DLQ_HEADER + "partition", str(record.partition).encode()),
        (DLQ_HEADER + "offset", str(record.offset).encode()),
        (DLQ_HEADER + "error", error[:4000].encode()),
        (DLQ_HEADER + "consumer", consumer.encode()),
        (DLQ_HEADER + "failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    producer.produce(topic, record.key, record.value, headers)


def wait_for_assignment(loop: ConsumeLoop, timeout: float = 30.0) -> None:
    """Poll until the group gave this member partitions (tests and start-up ordering)."""
    deadline = time.monotonic() + timeout
    while not loop.consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{loop.group_id} got no partitions within {timeout}s")
        loop.poll_once()
