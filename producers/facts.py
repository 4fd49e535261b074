"""Catalog facts an API call publishes itself: quotas, key pairs, server groups, flavors.

They go straight to the catalog topic (no outbox: a fact either is acknowledged by
the broker before the answer, or the caller gets a 503 and may retry; each is an
idempotent upsert or delete keyed by the entity). The answer is then read back from
the projection, so a client's next GET sees what it just did. Changes of one owner
(a user's key pairs, a project's groups) are serialised by a Postgres advisory lock
held until the projection shows them, so two concurrent creates of one name cannot
both pass the "already exists" check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Connection

from novalog import request_ids
from novalog.kafka import DeliveryError, Topics
from novalog.publish import Publisher
from novalog.web import ApiError, AppState

Payload = Any  # a schemas.payloads TypedDict
PROJECTED_WITHIN_S = 10.0


@contextmanager
def owner_lock(app: AppState, owner: str) -> Iterator[Connection[Any]]:
    """A connection holding the owner's advisory lock for as long as the block runs."""
    with app.pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"facts/{owner}",))
        yield conn


def publish(app: AppState, facts: list[tuple[str, str, Payload]],
            projected: Callable[[Connection[Any]], bool],
            conn: Connection[Any] | None = None, topic: str | None = None) -> None:
    """Emit (event type, key, payload) facts on the catalog topic (or `topic`), wait for
    the broker's acknowledgement (503 otherwise), then until `projected` is true of the
    projection. `conn`: the owner_lock's connection, to poll with (each statement sees
    new commits), so a lock holder never waits for a second connection from the pool."""
    pub = Publisher(app.producer, "api", app.settings.hostname)
    request_id = request_ids.request_id()
    for event_type, key, payload in facts:
        pub.emit(topic or Topics(app.settings.topic_prefix).catalog, event_type, key, payload,
                 correlation_id=request_id)
    try:
        app.producer.flush(10)
    except DeliveryError as exc:
        raise ApiError(503, f"The change could not be recorded ({exc}).") from None
    wait_projected(app, projected, conn)


def wait_projected(app: AppState, projected: Callable[[Connection[Any]], bool],
                   conn: Connection[Any] | None = None) -> None:
    """Until `projected` is true of the projection (503 after PROJECTED_WITHIN_S)."""
    deadline = time.monotonic() + PROJECTED_WITHIN_S
    while True:
        if conn is not None:
            if projected(conn):
                return
        else:
            with app.pool.connection() as polling:
                if projected(polling):
                    return
        if time.monotonic() > deadline:
            raise ApiError(503, "The change was recorded but is not visible yet; "
                                "read it again shortly.")
        time.sleep(0.02)


@contextmanager
def held_locks(conn: Connection[Any], keys: list[str]) -> Iterator[None]:
    """Session advisory locks on `keys` (sorted: no deadlock between two holders) for as
    long as the block runs, across transactions: a change that goes through the outbox
    is published after its transaction, and the lock must outlast it until the
    projection shows it. A connection that dies lets go of them with its session."""
    ordered = sorted(set(keys))
    conn.autocommit = True  # each `conn.transaction()` in the block then really commits
    try:
        for key in ordered:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"facts/{key}",))
        yield
    finally:
        for key in reversed(ordered):
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"facts/{key}",))
        conn.autocommit = False
