"""The conductor's decisions, against real Postgres (the projection it reads)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from consumers.conductor.manager import Conductor, max_retries_message
from novalog.db import make_pool
from novalog.domain.instance import apply
from novalog.kafka import Topics
from novalog.migrations import migrate
from novalog.read_model import LiveProjection
from novalog.settings import Settings
from projections.versions import PROJECTION_VERSION, version_schema
from projections.writers import project_instance_event
from schemas import Event, encode

pytestmark = pytest.mark.integration


class Recorder:
    """Stands in for the Publisher: what the conductor decided, in order."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, str, dict[str, Any], str | None]] = []

    def emit(self, topic: str, event_type: str, aggregate_id: str, payload: dict[str, Any],
             **kw: Any) -> None:
        self.emitted.append((topic, event_type, aggregate_id, payload, kw.get("event_id")))


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    """A reader pool (through the live views) on a schema of the test's own."""
    schema = f"conductor_{uuid.uuid4().hex[:8]}"
    migrate(settings, schema)
    p = make_pool(replace(settings, db_schema=schema))
    p.schema = schema  # type: ignore[attr-defined]
    yield p
    p.close()


def writer_pool(settings: Settings, readers: ConnectionPool) -> ConnectionPool:
    """What the projector writes through: the projection version's own tables."""
    schema = readers.schema  # type: ignore[attr-defined]
    return make_pool(replace(settings, db_schema=schema),
                     projection_schema=version_schema(schema, PROJECTION_VERSION))


def conductor(settings: Settings, pool: ConnectionPool, rec: Recorder,
              **kw: Any) -> Conductor:
    projection = LiveProjection(pool, pool.schema)  # type: ignore[attr-defined]
    return Conductor(Topics(settings.topic_prefix), rec, projection,  # type: ignore[arg-type]
                     ensure_topic=lambda _t: None, **kw)


def failure(kind: str, attempt: int, **payload: Any) -> Event:
    return Event(kind, "i-1", {"host": f"cmp{attempt}", "attempt": attempt, **payload},
                 "req-1", "compute@x")


def test_retryable_failures_reschedule_until_max_attempts(settings, pool) -> None:
    rec = Recorder()
    c = conductor(settings, pool, rec, max_attempts=3)
    c.tried["i-1"] = ["cmp1"]
    c.handle(failure("InstanceClaimRefused", 1, node="cmp1", reason="full"), None)  # type: ignore[arg-type]
    c.tried["i-1"].append("cmp2")
    c.handle(failure("InstanceBuildFailed", 2, stage="spawning", reason="x", retryable=True),
             None)  # type: ignore[arg-type]
    c.tried["i-1"].append("cmp3")
    c.handle(failure("InstanceBuildFailed", 3, stage="spawning", reason="x", retryable=True),
             None)  # type: ignore[arg-type]
    kinds = [(e[1], e[3].get("attempt")) for e in rec.emitted]
    assert kinds == [("InstanceRescheduled", 2), ("InstanceRescheduled", 3),
                     ("InstanceErrored", None)]
    assert rec.emitted[1][3]["excluded_hosts"] == ["cmp1", "cmp2"]
    assert rec.emitted[2][3]["message"] == max_retries_message("i-1")


def test_a_failure_no_host_would_fix_ends_in_error_at_once(settings, pool) -> None:
    rec = Recorder()
    conductor(settings, pool, rec).handle(
        failure("InstanceBuildFailed", 1, stage="networking", reason="no free IP",
                retryable=False), None)  # type: ignore[arg-type]
    assert [e[1] for e in rec.emitted] == ["InstanceErrored"]
    assert "aborted: build failed on cmp1 at networking: no free IP" in rec.emitted[0][3][
        "message"]


def test_a_stuck_build_times_out_once(settings, pool) -> None:
    old = datetime.now(UTC) - timedelta(minutes=10)
    request = Event("InstanceBuildRequested", "i-stuck", {
        "name": "s", "project_id": "p", "user_id": "u", "reservation_id": "r",
        "launch_index": 0, "flavor": {"flavorid": "1", "name": "m1.tiny", "vcpus": 1,
                                      "memory_mb": 512, "root_gb": 1},
        "image": None, "networks": [], "key_name": None, "metadata": {},
        "availability_zone": None}, "req-9", "api@x", occurred_at=old)
    apply(None, request)  # valid for the fold
    with writer_pool(settings, pool) as writes, writes.connection() as conn:
        project_instance_event(conn, request, encode(request))
        fresh = replace(request, aggregate_id="i-fresh", event_id=str(uuid.uuid4()),
                        occurred_at=datetime.now(UTC))
        project_instance_event(conn, fresh, encode(fresh))
    rec = Recorder()
    c = conductor(settings, pool, rec, build_timeout_s=60, sweep_interval_s=0)
    c.sweep()
    c.sweep()  # swept again before the projection caught up: the same event id
    assert [(e[1], e[2]) for e in rec.emitted] == [("InstanceErrored", "i-stuck")] * 2
    assert rec.emitted[0][4] == rec.emitted[1][4]
    assert "timed out after 60 seconds" in rec.emitted[0][3]["message"]
