"""The API's transactional outbox (producers/schema.sql).

A request's events are inserted with its accepted rows in one transaction, then
published and deleted. Should the API die in between, the relay (a thread of
every API process) publishes rows older than a few seconds. A row published
twice is the same event (same id) twice, which every consumer de-duplicates.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from psycopg import Connection
from psycopg_pool import ConnectionPool

from novalog.db import Source, borrowed
from novalog.faults import crash_point
from novalog.kafka import DeliveryError, EventProducer
from schemas import Event, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """An outbox row as inserted: the request publishes it from memory once committed."""

    event_id: str
    topic: str
    key: bytes
    value: bytes


def add(conn: Connection[object], topic: str, event: Event) -> Outgoing:
    row = Outgoing(event.event_id, topic, event.aggregate_id.encode(), encode(event))
    conn.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (%s, %s, %s, %s)",
                 (row.event_id, row.topic, row.key, row.value))
    return row


def publish_accepted(source: Source, producer: EventProducer, rows: list[Outgoing],
                     what: str) -> None:
    """Publish a request's events once its transaction is committed, from memory (reading
    back rows the request has just written cost a transaction per request), then delete
    them. A broker that does not acknowledge them leaves the request accepted all the
    same: the relay publishes them (same event ids). `source`: the pool, or the
    connection the caller holds (autocommit, as `facts.held_locks` leaves it)."""
    crash_point("api.after_commit")
    try:
        _send(producer, [(r.topic, r.key, r.value) for r in rows])
    except DeliveryError as exc:
        log.warning("%s accepted, publishing deferred to the relay: %s", what, exc)
        return
    if rows:
        crash_point("api.after_publish")
    with borrowed(source) as conn:  # should the relay have sent them too: the same ids
        conn.execute("DELETE FROM outbox WHERE event_id = ANY(%s)", ([r.event_id for r in rows],))


def _send(producer: EventProducer, rows: list[tuple[str, bytes, bytes]]) -> None:
    for i, (topic, key, value) in enumerate(rows):
        if i and topic != rows[i - 1][0]:
            producer.flush(10)  # a fact is on the log before the command it leads to
        producer.produce(topic, key, value)
    producer.flush(10)


def publish(source: Source, producer: EventProducer, older_than_s: float = 0.0) -> int:
    """Publish outbox rows older than `older_than_s` (what a request left behind), then
    delete them."""
    with borrowed(source) as conn, conn.transaction():
        rows = conn.execute("SELECT event_id, topic, key, value FROM outbox WHERE "
                            "created_at < now() - make_interval(secs => %s) "
                            "ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED",
                            (older_than_s,)).fetchall()
        _send(producer, [(topic, bytes(key), bytes(value)) for _, topic, key, value in rows])
        if rows:
            crash_point("api.after_publish")
        conn.execute("DELETE FROM outbox WHERE event_id = ANY(%s)", ([r[0] for r in rows],))
    return len(rows)


def relay(pool: ConnectionPool, producer: EventProducer, stop: threading.Event,
          interval_s: float = 1.0, grace_s: float = 3.0) -> None:
    """Publish what a crashed request left behind, until `stop`."""
    while not stop.wait(interval_s):
        try:
            sent = publish(pool, producer, older_than_s=grace_s)
            if sent:
                log.warning("outbox relay published %d events left by an interrupted request",
                            sent)
        except Exception:
            log.exception("outbox relay failed; will retry")
