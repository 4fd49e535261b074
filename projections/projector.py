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

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import Connection
from psycopg_pool import ConnectionPool

from novalog.consume import Batch, Record, Runner, TrackOffsets
from novalog.db import make_pool
from novalog.domain.instance import Instance, TransitionError
from novalog.kafka import EventProducer, Topics
from novalog.service import ServiceReporter
from novalog.settings import Settings
from projections import versions
from projections.writers import WRITERS, FoldCache, InstanceBatch
from schemas import Event, default_registry

log = logging.getLogger(__name__)


def family_of(event_type: str) -> str:
    return default_registry().current[event_type].family


class Projector:
    """The fold of one batch into the projection, run by the one runner inside its
    TrackOffsets checkpoint (rows and offsets in one transaction)."""

    def __init__(self, settings: Settings, pool: ConnectionPool, producer: EventProducer,
                 *, group_id: str, batch_size: int = 500, dead_letters: bool = True) -> None:
        """`dead_letters=False` for a replay: a poison record was dead-lettered once already."""
        topics = Topics(settings.topic_prefix)
        self.group_id = group_id
        self.folded = FoldCache()
        self._pending: dict[str, Instance] = {}  # states of this batch, cached once committed
        self.checkpoint = TrackOffsets(pool, committed=self._committed,
                                       stale=self.folded.clear)
        self.runner: Runner[Connection[Any]] = Runner(
            settings, name=group_id, topics=[topics.instances, topics.hosts, topics.catalog,
                                     topics.volumes],
            handle=self._project_batch, checkpoint=self.checkpoint, producer=producer,
            batch_size=batch_size, dead_letters=dead_letters)

    @property
    def refused(self) -> int:
        return self.runner.refused

    @property
    def events_projected(self) -> int:
        return self.runner.events_read

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        return self.checkpoint.starting_offsets()

    def poll_once(self) -> int:
        return self.runner.poll_once()

    def _project_batch(self, batch: Batch, conn: Connection[Any]) -> None:
        """The batch pipelined in one savepoint. If Postgres cannot store a value of one
        record (a DataError: a NUL, a number out of range), the batch is projected again
        one record per savepoint and the records it cannot store are dead-lettered:
        one bad fact never stalls the projection. Refusals are sent once, after the
        attempt that stands."""
        refusals: list[tuple[Record, str]] = []
        if self._pending:  # the last attempt never got to its commit hook: whether it
            self.folded.clear()  # committed is unknown (a connection lost in COMMIT)
        self._pending = {}
        try:
            with conn.transaction():
                self._project_records(conn, batch.events, refusals, pipelined=True)
        except psycopg.DataError as exc:
            log.warning("a batch of %d records could not be stored (%s); projecting it one "
                        "record at a time", len(batch.events), str(exc).strip())
            refusals, self._pending = [], {}
            for item in batch.events:
                kept: list[tuple[Record, str]] = []
                try:
                    with conn.transaction():
                        self._project_records(conn, [item], kept, pipelined=False)
                except psycopg.DataError as bad:
                    kept = [(item[0], f"cannot be stored: {str(bad).strip()}")]
                refusals += kept
        for record, why in refusals:
            self.runner.refuse(record, why)

    def _project_records(self, conn: Connection[Any], events: list[tuple[Record, Event]],
                         refusals: list[tuple[Record, str]], pipelined: bool) -> None:
        instances = InstanceBatch(conn, [e for _, e in events
                                         if family_of(e.event_type) == "instance"],
                                  {**self.folded.states, **self._pending})
        with conn.pipeline() if pipelined else contextlib.nullcontext():
            for record, event in events:
                self._project(conn, instances, record, event, refusals)
            instances.finish()
        # written (in this savepoint): cached once the whole batch commits
        self._pending.update((u, instances.states[u]) for u in instances.touched)

    def _committed(self) -> None:
        self.folded.committed(self._pending)
        self._pending = {}

    def _project(self, conn: Connection[Any], instances: InstanceBatch, record: Record,
                 event: Event, refusals: list[tuple[Record, str]]) -> None:
        family = family_of(event.event_type)
        if family == "instance":
            try:
                state = instances.fold(event)  # refused before anything of it is written
            except TransitionError as exc:
                refusals.append((record, f"refused by the fold: {exc}"))
                return
            if state is not None:
                instances.add(event, record.value or b"", state)
            return
        writer = WRITERS.get(family)
        if writer is None:  # commands and network facts are not projected
            return
        try:
            writer(conn, event, record.value or b"")  # a volume fold refuses before writing
        except TransitionError as exc:
            refusals.append((record, f"refused by the fold: {exc}"))

    def close(self) -> None:
        self.runner.close()


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
    producer = EventProducer(settings)
    projector = Projector(settings, pool, producer, group_id=f"projector-v{version}")
    reporter = ServiceReporter(settings, producer, "projector")
    live = try_activate(settings, target)
    last_check = 0.0
    try:
        reporter.start()
        while not stop.is_set():
            read = projector.poll_once()
            reporter.beat()
            if not live and read == 0 and time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()  # idle: have we caught up with the live one?
                live = try_activate(settings, target)
    finally:
        projector.close()
        pool.close()
