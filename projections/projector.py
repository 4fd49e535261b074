"""The projector role: the log folded into Postgres, offsets in the same transaction.

Each batch is one Postgres transaction holding the projection rows and the
next offset of every partition it read (DESIGN.md §4). When the group assigns
partitions (at start, or after a rebalance between replicas), the projector
seeks to the offsets stored in its schema, never to Kafka's. A record that
cannot be decoded, or an event that cannot happen (TransitionError), goes to
the dead-letter topic, and its offset is stored all the same.

A projector writes one projection version (`projections/versions.py`), as
consumer group `projector-v<N>`, so two versions can be built side by side.
When its version is not the live one, it activates it once it has caught up.
`novalog replay` runs the same class into a throw-away schema.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from psycopg import Connection
from psycopg_pool import ConnectionPool

from novalog.consume import Record, dead_letter, record_of, through_outages
from novalog.db import make_pool
from novalog.domain.instance import TransitionError
from novalog.faults import crash_point
from novalog.kafka import EventProducer, Topics, consumer_config, next_batch
from novalog.settings import Settings
from projections import versions
from projections.writers import WRITERS, InstanceBatch
from schemas import Event, SerializationError, decode, default_registry

log = logging.getLogger(__name__)
DEAD_LETTER_FLUSH_S = 5.0


def family_of(event_type: str) -> str:
    return default_registry().current[event_type].family


class Projector:
    def __init__(self, settings: Settings, pool: ConnectionPool, producer: EventProducer,
                 *, group_id: str, batch_size: int = 500, dead_letters: bool = True) -> None:
        """`dead_letters=False` for a replay: a poison record was dead-lettered once already."""
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self.group_id = group_id
        self.batch_size = batch_size
        topics = Topics(settings.topic_prefix)
        self.topics = [topics.instances, topics.hosts, topics.catalog]
        self.dead_letters = topics.dead_letters
        self.send_dead_letters = dead_letters
        self.refused = 0
        self.events_projected = 0
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, self.group_id))
            self._consumer.subscribe(self.topics, on_assign=self._on_assign)
        return self._consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.stored_offsets()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("%s assigned %s", self.group_id,
                 [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT topic, partition, next_offset FROM projector_offsets"
                                ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def poll_once(self) -> int:
        messages = [m for m in next_batch(self.consumer, self.batch_size,
                                          self.settings.poll_timeout_ms / 1000)
                    if self._usable(m)]
        if not messages:
            return 0
        # the batch is in memory: an outage only delays its transaction
        through_outages(f"{self.group_id} waits for Postgres", lambda: self._write(messages))
        self.events_projected += len(messages)
        return len(messages)

    def _write(self, messages: list[Message]) -> None:
        decoded: list[tuple[Record, Event]] = []
        for msg in messages:
            record = record_of(msg)
            try:
                decoded.append((record, decode(record.value or b"")))
            except SerializationError as exc:
                self._refuse(record, f"undecodable: {exc}")
        with self.pool.connection() as conn, conn.transaction():
            instances = InstanceBatch(conn, [e for _, e in decoded
                                             if family_of(e.event_type) == "instance"])
            with conn.pipeline():
                for record, event in decoded:
                    self._project(conn, instances, record, event)
                instances.finish()
            # dead letters are acknowledged before the offsets are stored, but never waited
            # for with the rows locked: an unacknowledged flush rolls the batch back, and
            # the outage policy writes it again later (a dead letter may then be repeated)
            if self.producer.pending():
                self.producer.flush(DEAD_LETTER_FLUSH_S)
            conn.cursor().executemany(
                "INSERT INTO projector_offsets (topic, partition, next_offset) "
                "VALUES (%s, %s, %s) ON CONFLICT (topic, partition) DO UPDATE SET "
                "next_offset = GREATEST(projector_offsets.next_offset, excluded.next_offset)",
                [(m.topic(), m.partition(), (m.offset() or 0) + 1) for m in messages])
            crash_point("projector.before_commit")

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("projector consumer error: %s", err.str())
        return False

    def _project(self, conn: Connection[Any], instances: InstanceBatch, record: Record,
                 event: Event) -> None:
        family = family_of(event.event_type)
        if family == "instance":
            try:
                state = instances.fold(event)  # refused before anything of it is written
            except TransitionError as exc:
                self._refuse(record, f"refused by the fold: {exc}")
                return
            if state is not None:
                instances.add(event, record.value or b"", state)
            return
        writer = WRITERS.get(family)
        if writer is not None:  # commands and network facts are not projected
            writer(conn, event, record.value or b"")

    def _refuse(self, record: Record, why: str) -> None:
        self.refused += 1
        if self.send_dead_letters:
            dead_letter(self.producer, self.dead_letters, self.group_id, record, why)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def try_activate(settings: Settings, target: str) -> bool:
    """Make `target` the live version once it has read as far as the active one."""
    base = settings.db_schema
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('novalog-activate'))")
        try:
            active = versions.active_schema(conn, base)
            if active == target:
                return True
            if active is not None and not versions.caught_up(conn, target, active):
                return False
            with conn.transaction():
                versions.activate(conn, base, target)
            log.info("projection %s is live (was %s)", target, active)
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('novalog-activate'))")


def serve(settings: Settings, stop: threading.Event) -> None:
    """The `projector` role for the code's projection version."""
    version = versions.code_version()
    target = versions.version_schema(settings.db_schema, version)
    pool = make_pool(settings, projection_schema=target)
    projector = Projector(settings, pool, EventProducer(settings),
                          group_id=f"projector-v{version}")
    live = try_activate(settings, target)
    last_check = 0.0
    try:
        while not stop.is_set():
            read = projector.poll_once()
            if not live and read == 0 and time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()  # idle: have we caught up with the live one?
                live = try_activate(settings, target)
    finally:
        projector.close()
        pool.close()
