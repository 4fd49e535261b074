"""The API's outbox against real Postgres and Kafka: a request that holds a connection
publishes on it, so a full pool cannot starve it (the burst's 503s of 2026-12-04)."""

from __future__ import annotations

import threading
import uuid

import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from novalog.db import make_pool
from novalog.kafka import EventProducer, Topics
from novalog.migrations import migrate
from novalog.settings import Settings
from producers import facts, outbox
from schemas import Event, decode
from tests.integration.test_kafka_plumbing import read_all

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tables(settings: Settings) -> None:
    migrate(settings)


def heartbeat(host: str) -> Event:
    return Event("ServiceHeartbeat", host, {"host": host, "binary": "nova-compute"},
                 f"req-{uuid.uuid4()}", "test@pytest")


def outbox_rows(pool: ConnectionPool, event_id: str) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE event_id = %s",
                           (event_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_request_holding_the_only_connection_publishes_on_it(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).hosts
    event = heartbeat(f"h-{uuid.uuid4().hex[:6]}")
    pool = make_pool(settings, max_size=1, timeout=1.0)
    producer = EventProducer(settings, linger_ms=1)
    try:
        with pool.connection() as conn, facts.held_locks(conn, ["outbox-test"]):
            with conn.transaction():
                row = outbox.add(conn, topic, event)
            # The pool has nothing left to lend: taking a second connection would wait.
            with pytest.raises(PoolTimeout), pool.connection(timeout=0.2):
                pass
            outbox.publish_accepted(conn, producer, [row], "test")
        assert outbox_rows(pool, event.event_id) == 0
        records = read_all(settings, topic, expect=1)
        assert [decode(r.value() or b"").event_id for r in records] == [event.event_id]
    finally:
        producer.flush(10)
        pool.close()


def test_concurrent_holders_of_a_small_pool_all_publish(settings: Settings) -> None:
    """As many requests as connections, each holding one and publishing: none times out."""
    topic = Topics(settings.topic_prefix).hosts
    pool = make_pool(settings, max_size=2, timeout=2.0)
    producer = EventProducer(settings, linger_ms=1)
    events = [heartbeat(f"h{i}-{uuid.uuid4().hex[:6]}") for i in range(6)]
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def request(batch: list[Event]) -> None:
        try:
            for i, event in enumerate(batch):
                with pool.connection() as conn, facts.held_locks(conn, []):
                    with conn.transaction():
                        row = outbox.add(conn, topic, event)
                    if i == 0:
                        barrier.wait(5)  # both connections are out now
                    outbox.publish_accepted(conn, producer, [row], "test")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=request, args=(events[i::2],)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert failures == []
        assert all(outbox_rows(pool, e.event_id) == 0 for e in events)
        got = {decode(r.value() or b"").event_id for r in read_all(settings, topic, expect=6)}
        assert got == {e.event_id for e in events}
    finally:
        producer.flush(10)
        pool.close()
