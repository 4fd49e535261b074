"""The one consume runner every consumer of novalog uses.

A `Runner` reads batches (as member of a consumer group, or every partition from
offset 0 for a replica), passes over the event types its handler does not want
from the header alone, decodes the rest (an undecodable record is dead-lettered,
or skipped by a read-only replica), and hands the batch to its handler inside
its `Checkpoint`, which owns "make the effects durable, then record how far":

- `CommitOffsets` (reactors: scheduler, conductor, compute, network): handle
  each new event (the inbox skips those already handled), flush the producer
  (follow-up events and dead letters acknowledged), record the inbox, and only
  then commit the offsets to Kafka (asynchronously). A crash before the commit
  is done re-delivers the batch, so handlers must be idempotent (DESIGN.md §4).
- `TrackOffsets` (projections): the batch's rows and the next offset of every
  partition in one Postgres transaction; partitions start where that table says.
- `Unchecked` (replicas): fold under a lock, record nothing; a restart reads again.

`ConsumeLoop` is the runner of a reactor: per event, retries for transient
errors, waits out outages, and dead-letters an event whose handler keeps failing,
so one bad record never stalls a partition. `RunnerThread` runs a runner beside a
role's main loop and reports its death, so a role never decides on a frozen view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from psycopg import Connection
from psycopg_pool import ConnectionPool
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from novalog import request_ids
from novalog.faults import crash_point
from novalog.idempotency import Inbox
from novalog.kafka import (
    DeliveryError,
    EndOfLog,
    EventProducer,
    Headers,
    Topics,
    consumer_config,
    next_batch,
    open_reader,
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


C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)
Offsets = dict[tuple[str, int], int]


@dataclass
class Batch:
    """One poll's worth: the events to handle, in log order, and how far each partition was
    read (records passed over or refused included)."""

    events: list[tuple[Record, Event]] = field(default_factory=list)
    last: Offsets = field(default_factory=dict)
    refused: int = 0


BatchHandler = Callable[[Batch, C], None]


class Checkpoint(Protocol[C]):
    """Where a runner starts and how it makes a batch's effects durable before moving on."""

    seeks: bool  # partitions start from starting_offsets(), not from the group's commits

    def starting_offsets(self) -> Offsets | None:
        """Offsets to seek to when partitions are assigned; None: the group's committed ones."""
        ...

    def process(self, runner: Runner[C], batch: Batch, handle: BatchHandler[C]) -> None:
        ...


class Runner(Generic[C]):
    """Read `topics`, decode, and hand each batch to `handle` inside `checkpoint`."""

    def __init__(self, settings: Settings, *, name: str, topics: list[str],
                 handle: BatchHandler[C], checkpoint: Checkpoint[C],
                 producer: EventProducer | None = None, group: bool = True,
                 wants: frozenset[str] | None = None, batch_size: int = 500,
                 poll_timeout_s: float | None = None, dead_letters: bool = True,
                 on_idle: Callable[[], None] | None = None) -> None:
        """`group=False`: read every partition from offset 0, outside any group (a replica);
        `caught_up` then says when the end of the log, as it was at the start, is folded in.
        `wants`: the event types `handle` acts on; others are passed over from the header.
        `dead_letters=False`: undecodable records are only counted and logged (replicas,
        replays: the live consumers dead-letter them once)."""
        self.settings = settings
        self.name = name
        self.topics = topics
        self.handle = handle
        self.checkpoint = checkpoint
        self.producer = producer
        self.group = group
        self.wants = wants
        self.batch_size = batch_size
        self.poll_timeout_s = (settings.poll_timeout_ms / 1000 if poll_timeout_s is None
                               else poll_timeout_s)
        self.send_dead_letters = dead_letters and producer is not None
        self.on_idle = on_idle
        self.dead_letter_topic = Topics(settings.topic_prefix).dead_letters
        self.refused = 0
        self.events_read = 0
        self._consumer: Consumer | None = None
        self._end: EndOfLog | None = None

    @property
    def group_id(self) -> str:
        return self.name

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            if self.group:
                consumer = Consumer(consumer_config(self.settings, self.name))
                if self.checkpoint.seeks:
                    consumer.subscribe(self.topics, on_assign=self._on_assign)
                else:
                    consumer.subscribe(self.topics)
                self._consumer = consumer
            else:
                consumer, ends = through_outages(
                    f"{self.name}: opening the log",
                    lambda: open_reader(self.settings, self.name, self.topics))
                self._end = EndOfLog(consumer, ends, ", ".join(self.topics), idle_polls=1,
                                     stall_s=float("inf"))
                self._consumer = consumer
        return self._consumer

    @property
    def caught_up(self) -> bool:
        """A from-offset-0 reader has folded in everything the log held when it opened."""
        return self._end is not None and self._end.reached

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = through_outages(f"{self.name} reads its offsets",
                                 self.checkpoint.starting_offsets) or {}
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("%s assigned %s", self.name,
                 [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, then leave the group."""
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def poll_once(self) -> int:
        """Read one batch, handle it inside the checkpoint; returns how many records it held."""
        messages = next_batch(self.consumer, self.batch_size, self.poll_timeout_s)
        batch = self._batch(messages)
        if batch.last:
            self.checkpoint.process(self, batch, self.handle)
            self.events_read += len(batch.events)
        if self._end is not None:
            self._end.after_poll(len(messages))
        if self.on_idle is not None:
            try:  # periodic work (heartbeats, sweeps) in the runner's own thread
                self.on_idle()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("%s: periodic work skipped: %s", self.name, exc)
        return len(messages)

    def _batch(self, messages: list[Message]) -> Batch:
        batch = Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", self.name, err.str())
                continue
            batch.last[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
            if self.wants is not None:
                kind = event_type_of(msg.value())
                if kind is not None and kind not in self.wants:
                    continue
            record = record_of(msg)
            try:
                batch.events.append((record, decode(record.value or b"")))
            except SerializationError as exc:
                batch.refused += 1
                self.refuse(record, f"undecodable: {exc}")
        return batch

    def refuse(self, record: Record, why: str) -> None:
        """A record this consumer can never handle: to the dead-letter topic, or logged."""
        self.refused += 1
        if self.send_dead_letters and self.producer is not None:
            dead_letter(self.producer, self.dead_letter_topic, self.name, record, why)
        else:
            log.warning("%s skips %s[%d]@%d: %s", self.name, record.topic, record.partition,
                        record.offset, why)

    def close(self) -> None:
        """Leave the group at once so a replica takes over without waiting for a timeout."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class CommitOffsets:
    """A reactor's checkpoint: effects flushed, inbox recorded, then the Kafka commit."""

    seeks = False

    def __init__(self, inbox: Inbox | None = None,
                 after_flush: Callable[[], None] | None = None) -> None:
        self.inbox = inbox
        self.after_flush = after_flush

    def starting_offsets(self) -> Offsets | None:
        return None

    def process(self, runner: Runner[None], batch: Batch, handle: BatchHandler[None]) -> None:
        consumer = runner.consumer
        if not batch.events and not batch.refused:  # only records passed over
            _commit(runner.name, consumer, batch.last)
            return
        fresh = self._fresh(runner.name, batch)
        handle(fresh, None)
        assert runner.producer is not None, "a reactor publishes"
        runner.producer.flush_all(f"{runner.name} waits for the broker")
        crash_point("consume.after_flush")
        if self.after_flush is not None:  # Postgres work too: an outage is waited out
            through_outages(f"{runner.name} after its flush", self.after_flush)
        if self.inbox is not None and fresh.events:
            inbox, keys = self.inbox, [(r.topic, e.event_id) for r, e in fresh.events]
            through_outages(f"{runner.name} records its inbox", lambda: inbox.record(keys))
            crash_point("consume.after_inbox")
        _commit(runner.name, consumer, batch.last)

    def _fresh(self, name: str, batch: Batch) -> Batch:
        """The batch without events already handled (one inbox query per batch, not per
        record: a busy loop's largest saving) or repeated within it."""
        inbox = self.inbox
        if inbox is None:
            return batch
        keys = [(r.topic, e.event_id) for r, e in batch.events]
        seen = through_outages(f"{name} reads its inbox", lambda: inbox.seen_among(keys)) \
            if keys else set()
        fresh = Batch(last=batch.last, refused=batch.refused)
        for record, event in batch.events:
            key = (record.topic, event.event_id)
            if key in seen:
                log.info("skipping %s %s: already handled", event.event_type, event.event_id)
                continue
            seen.add(key)
            fresh.events.append((record, event))
        return fresh


def _commit(name: str, consumer: Consumer, last: Offsets) -> None:
    """Asynchronously: the next batch need not wait for the broker's answer. A commit lost
    in a crash re-delivers records the inbox skips; a later one supersedes it."""
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=True)
    except KafkaException as exc:  # e.g. the group moved on during an outage
        log.warning("%s: commit refused (%s); these records will come again and the inbox "
                    "will skip them", name, exc.args[0].str())


DEAD_LETTER_FLUSH_S = 5.0


class TrackOffsets:
    """A projection's checkpoint: the batch's rows and the next offsets in one transaction
    (`projector_offsets` of the pool's schema); assigned partitions start from there."""

    seeks = True

    def __init__(self, pool: ConnectionPool, *, committed: Callable[[], None] | None = None,
                 stale: Callable[[], None] | None = None) -> None:
        """`committed`: runs after each batch's transaction commits; `stale`: when
        what the handler keeps in memory about its partitions may be stale (partitions
        (re)assigned, or written by another member since this one last did)."""
        self.pool = pool
        self.committed = committed
        self.stale = stale
        self.written: Offsets = {}  # the next offsets this member itself committed

    def starting_offsets(self) -> Offsets:
        if self.stale is not None:
            self.stale()
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT topic, partition, next_offset FROM projector_offsets"
                                ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def process(self, runner: Runner[Connection[Any]], batch: Batch,
                handle: BatchHandler[Connection[Any]]) -> None:
        # the batch is in memory: an outage only delays its transaction
        through_outages(f"{runner.name} waits for Postgres",
                        lambda: self._write(runner, batch, handle))

    def _write(self, runner: Runner[Connection[Any]], batch: Batch,
               handle: BatchHandler[Connection[Any]]) -> None:
        with self.pool.connection() as conn, conn.transaction():
            # one lock per partition, in order (two members of the group overlap for a
            # moment in a rebalance): an aggregate lives in one partition, so its rows are
            # never folded by two transactions at once, without a row lock on each
            topics, parts = zip(*sorted(batch.last), strict=True)
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(format('%%s/%%s/%%s', "
                "current_schema(), t, p), 0)) FROM (SELECT t, p FROM unnest(%s::text[], "
                "%s::int[]) AS k(t, p) ORDER BY t, p) AS ordered", (list(topics), list(parts)))
            # under the locks: has another member written these partitions since this one
            # last did (a group member dropped and replaced while it waited out an
            # outage)? Then what the handler keeps in memory about them is stale.
            stored = {(t, p): o for t, p, o in conn.execute(
                "SELECT topic, partition, next_offset FROM projector_offsets JOIN "
                "unnest(%s::text[], %s::int[]) AS k(topic, partition) USING (topic, partition)",
                (list(topics), list(parts)))}
            if self.stale is not None and any(
                    stored.get(k) != self.written.get(k) for k in batch.last):
                self.stale()
            handle(batch, conn)
            # dead letters are acknowledged before the offsets are stored, but never waited
            # for with the rows locked: an unacknowledged flush rolls the batch back, and
            # the outage policy writes it again later (a dead letter may then be repeated)
            if runner.producer is not None and runner.producer.pending():
                runner.producer.flush(DEAD_LETTER_FLUSH_S)
            conn.cursor().executemany(
                "INSERT INTO projector_offsets (topic, partition, next_offset) "
                "VALUES (%s, %s, %s) ON CONFLICT (topic, partition) DO UPDATE SET "
                "next_offset = GREATEST(projector_offsets.next_offset, excluded.next_offset)",
                [(t, p, o + 1) for (t, p), o in batch.last.items()])
            crash_point("projector.before_commit")
        for (t, p), o in batch.last.items():  # committed: what this member wrote last
            self.written[(t, p)] = max(o + 1, self.written.get((t, p), 0))
        if self.committed is not None:
            self.committed()


class Unchecked:
    """A replica's checkpoint: fold under `lock`, record nothing (a restart reads again)."""

    seeks = False

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def starting_offsets(self) -> Offsets | None:
        return None

    def process(self, runner: Runner[None], batch: Batch, handle: BatchHandler[None]) -> None:
        with self.lock:
            handle(batch, None)


class RunnerDied(RuntimeError):
    """A runner's thread ended while its role still runs."""


class RunnerThread:
    """A runner in a background thread, whose death the role's main loop notices."""

    def __init__(self, runner: Runner[Any]) -> None:
        self.runner = runner
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._run, name=f"runner-{runner.name}",
                                        daemon=True)

    def start(self) -> RunnerThread:
        self._started = True
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.runner.run(self._stop)
        except Exception as exc:
            self.failure = exc
            log.exception("runner %s stopped", self.runner.name)
            raise

    def alive(self) -> bool:
        """Not started yet, reading, or stopped on purpose."""
        return not self._started or self._thread.is_alive() or self._stop.is_set()

    def check(self) -> None:
        """Raise when the thread died: a frozen view must stop the role (and the supervisor
        restart it), never go on deciding on stale data."""
        if not self.alive():
            raise RunnerDied(f"{self.runner.name} stopped reading: {self.failure!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class ConsumeLoop(Runner[None]):
    """A reactor's runner: `handler` per new event, with retries, outages and dead letters."""

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
        lanes: int = 1,
    ) -> None:
        """`after_flush`: runs once a batch's output is acknowledged, before its commit.
        `lanes` > 1: a batch's topics are handled at once, each in order in its own
        thread (a compute fleet: one host's topic per lane, so one host's wait on Postgres,
        libvirt or qemu-img does not hold up the others); the batch ends when all have."""
        super().__init__(settings, name=group_id, topics=topics, handle=self._each,
                         checkpoint=CommitOffsets(inbox, after_flush), producer=producer,
                         wants=wants, batch_size=batch_size, on_idle=on_idle)
        self.handler = handler
        self._lanes = futures.ThreadPoolExecutor(lanes, thread_name_prefix=f"{group_id}-lane") \
            if lanes > 1 else None
        self.retry_if = retry_if
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.max_retries + 1),
            wait=wait_exponential(multiplier=settings.retry_backoff_ms / 1000, max=10),
            retry=retry_if_exception(retry_if),
            reraise=True,
        )

    def _each(self, batch: Batch, _context: None) -> None:
        by_topic: dict[str, list[tuple[Record, Event]]] = {}
        for record, event in batch.events:
            by_topic.setdefault(record.topic, []).append((record, event))
        if self._lanes is None or len(by_topic) < 2:
            for record, event in batch.events:
                self._one(record, event)
            return
        done, _ = futures.wait([self._lanes.submit(self._lane, lane) for lane in by_topic.values()])
        failures = [e for f in done if (e := f.exception()) is not None]
        for failure in failures[1:]:  # the first stops the loop; the others are told
            log.error("%s: another lane failed too", self.name, exc_info=failure)
        if failures:  # every lane has ended: only then may a failure stop the loop
            raise failures[0]

    def _lane(self, events: list[tuple[Record, Event]]) -> None:
        for record, event in events:
            self._one(record, event)

    def close(self) -> None:
        if self._lanes is not None:  # lanes first: none may still use the consumer's batch
            self._lanes.shutdown(wait=True, cancel_futures=True)
        super().close()

    def _one(self, record: Record, event: Event) -> None:
        with request_ids.bound(request_ids.handling(event)):  # in every line it causes
            try:
                through_outages(f"{self.name} waits for its infrastructure",
                                lambda: self._retrying(self.handler, event, record))
            except Exception as exc:
                attempts = self.settings.max_retries + 1
                why = f"gave up after {attempts} attempts: " if self.retry_if(exc) else \
                    "handler failed: "
                log.error("%s %s@%d:%d (%s)", why, record.topic, record.partition,
                          record.offset, event.event_type, exc_info=exc)
                self.refuse(record, f"{why}{type(exc).__name__}: {exc}")


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
