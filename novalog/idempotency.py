"""Exactly-once effects on an at-least-once log (DESIGN.md §4), the mechanism novalog uses.

1. Deterministic event ids: every event a consumer emits has the id
   uuid5(causing event id, what it is). Re-handling an input after a crash
   re-emits the same ids.
2. First-wins de-duplication backed by a unique key: the consume loop skips
   an input whose event_id its group has already recorded in the Postgres
   `inbox`, and records it after the handler's output was acknowledged by the
   broker, before committing the offset. The projector's event tables do the
   same for the read side, so a duplicate that still slips through (emitted
   before the crash, then again after it) is ignored wherever it arrives.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping

from psycopg_pool import ConnectionPool

NAMESPACE = uuid.UUID("0b8f5f0e-8d4a-4b8e-9a55-6c7f9e2d1a33")

INBOX_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)
"""


def stable_number(*parts: str) -> int:
    """A positive 31-bit id derived from `parts`, the same in every replay (where Nova
    shows a database sequence number: service, hypervisor and key pair ids)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def derived_id(cause: str, *what: object) -> str:
    """The id of the event `cause` leads to; `what` tells its several results apart."""
    return str(uuid.uuid5(NAMESPACE, "/".join([cause, *map(str, what)])))


class Inbox:
    """The event ids one consumer group has fully handled, keyed (topic, event id).

    `by_topic` names another consumer for some topics: a compute fleet keeps each host's
    inbox under that host's own name (`compute-cmp3`), so an agent that later serves the
    host alone, or a fleet laid out otherwise, skips what was handled there already."""

    def __init__(self, pool: ConnectionPool, consumer: str,
                 by_topic: Mapping[str, str] | None = None) -> None:
        self.pool = pool
        self.consumer = consumer
        self.by_topic = dict(by_topic or {})

    def _rows(self, keys: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
        pairs = [(self.by_topic.get(topic, self.consumer), event_id) for topic, event_id in keys]
        return [c for c, _ in pairs], [e for _, e in pairs]

    def seen_among(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (topic, event id) were handled already (one query)."""
        consumers, ids = self._rows(keys)
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT consumer, event_id FROM inbox JOIN unnest(%s::text[], %s::text[]) "
                "AS k(consumer, event_id) USING (consumer, event_id)",
                (consumers, ids)).fetchall()
        handled = {(r[0], r[1]) for r in rows}
        return {k for k, c, i in zip(keys, consumers, ids, strict=True) if (c, i) in handled}

    def record(self, keys: Iterable[tuple[str, str]]) -> None:
        consumers, ids = self._rows(keys)
        if not ids:
            return
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO inbox (consumer, event_id) SELECT * FROM "
                         "unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                         (consumers, ids))


def build_volume_id(instance_uuid: str, index: int) -> str:
    """The volume a build makes for its block device mapping `index` (image or blank to
    volume): the same on every attempt, so a rescheduled build finds the one made."""
    return derived_id(instance_uuid, f"block-device-{index}")


def boot_attachment_id(volume_id: str, instance_uuid: str) -> str:
    """The attachment of a volume a server boots with: the API's reservation and the
    compute host's attach name the same one."""
    return derived_id(volume_id, f"attachment-{instance_uuid}")
