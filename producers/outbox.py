"""The API's transactional outbox (producers/schema.sql).

A request's events are inserted with its accepted rows in one transaction, then
published and deleted. Should the API die in between, the relay (a thread of
every API process) publishes rows older than a few seconds. A row published
twice is the same event (same id) twice, which every consumer de-duplicates.
"""

from __future__ import annotations

import logging
import threading

from psycopg import Connection
from psycopg_pool import ConnectionPool

from novalog.db import Source, borrowed
from novalog.faults import crash_point
from novalog.kafka import DeliveryError, EventProducer
from schemas import Event, encode

log = logging.getLogger(__name__)


def add(conn: Connection[object], topic: str, event: Event) -> None:
    conn.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (%s, %s, %s, %s)",
                 (event.event_id, topic, event.aggregate_id.encode(), encode(event)))


def publish_accepted(source: Source, producer: EventProducer, event_ids: list[str],
                     what: str) -> None:
    """Publish a request's events once its transaction is committed. A broker that does
    not acknowledge them leaves the request accepted all the same: the relay publishes
    them (same event ids). `source`: the pool, or the connection the caller holds
    (autocommit, as `facts.held_locks` leaves it)."""
    crash_point("api.after_commit")
    try:
        publish(source, producer, event_ids)
    except DeliveryError as exc:
        log.warning("%s accepted, publishing deferred to the relay: %s", what, exc)


def publish(source: Source, producer: EventProducer, event_ids: list[str] | None = None,
            older_than_s: float = 0.0) -> int:
    """Publish outbox rows (these ids, or every row older than `older_than_s`), then delete."""
    with borrowed(source) as conn, conn.transaction():
        if event_ids is not None:
            rows = conn.execute("SELECT event_id, topic, key, value FROM outbox WHERE "
                                "event_id = ANY(%s) ORDER BY seq FOR UPDATE SKIP LOCKED",
                                (event_ids,)).fetchall()
        else:
            rows = conn.execute("SELECT event_id, topic, key, value FROM outbox WHERE "
                                "created_at < now() - make_interval(secs => %s) "
                                "ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED",
                                (older_than_s,)).fetchall()
        for i, (_, topic, key, value) in enumerate(rows):
            if i and topic != rows[i - 1][1]:
                producer.flush(10)  # a fact is on the log before the command it leads to
            producer.produce(topic, bytes(key), bytes(value))
        producer.flush(10)
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
