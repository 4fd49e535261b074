"""`novalog replay [--verify]`: the projections rebuilt from offset 0, then compared.

A replay runs the projector (same code, same transactions) into a fresh schema
`S_replay_<time>` as a consumer group of its own, and stops once it has read
as far as the live version had when it last looked. It sends no dead letters
and touches nothing live, so the live projection keeps serving. The
comparison is per table: row counts, a checksum over every row's digest in
primary-key order, and the keys of the rows that differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import Connection, sql

from novalog.db import make_pool
from novalog.kafka import EventProducer
from novalog.settings import Settings
from projections import versions
from projections.projector import Projector

Progress = Callable[[int, int], None]  # (records done, records to do)
# insertion order across partitions, not content
VOLATILE = {"instance_events": ["seq"], "volume_events": ["seq"]}


@dataclass
class TableDiff:
    table: str
    live_rows: int
    replay_rows: int
    live_checksum: str
    replay_checksum: str
    differing: list[str] = field(default_factory=list)  # primary keys, first 20

    @property
    def equal(self) -> bool:
        return self.live_checksum == self.replay_checksum and self.live_rows == self.replay_rows


def primary_key(conn: Connection[Any], schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)", (f'"{schema}"."{table}"',)).fetchall()
    return [r[0] for r in rows]


def row_digests(conn: Connection[Any], schema: str, table: str) -> dict[str, str]:
    """Primary key (as text) -> md5 of the row's canonical JSON (volatile columns removed)."""
    keys = primary_key(conn, schema, table)
    drop = sql.SQL("").join(sql.SQL(" - {}").format(sql.Literal(c))
                            for c in VOLATILE.get(table, []))
    key_expr = sql.SQL(" || '/' || ").join(sql.SQL("t.{}::text").format(sql.Identifier(k))
                                           for k in keys)
    query = sql.SQL("SELECT {key}, md5((to_jsonb(t){drop})::text) FROM {schema}.{table} t"
                    ).format(key=key_expr, drop=drop, schema=sql.Identifier(schema),
                             table=sql.Identifier(table))
    return {k: d for k, d in conn.execute(query).fetchall()}


def checksum(digests: dict[str, str]) -> str:
    import hashlib

    h = hashlib.md5(usedforsecurity=False)
    for key in sorted(digests):
        h.update(f"{key}={digests[key]}\n".encode())
    return h.hexdigest()


def compare(conn: Connection[Any], live: str, replayed: str) -> list[TableDiff]:
    diffs = []
    for table in versions.VIEW_TABLES:
        a, b = row_digests(conn, live, table), row_digests(conn, replayed, table)
        differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        diffs.append(TableDiff(table, len(a), len(b), checksum(a), checksum(b), differing[:20]))
    return diffs


@dataclass
class ReplayResult:
    schema: str
    live_schema: str
    records: int
    seconds: float
    refused: int
    tables: list[TableDiff] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)


def _position(conn: Connection[Any], schema: str) -> dict[tuple[str, int], int]:
    return versions.offsets(conn, schema)


def replay(settings: Settings, *, verify: bool = False, keep: bool = False,
           progress: Progress | None = None, idle_timeout_s: float = 60.0) -> ReplayResult:
    """Rebuild every projection into a fresh schema; with `verify`, compare with the live one."""
    base = settings.db_schema
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    target = f"{base}_replay_{stamp}"
    url = settings.require_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        live = versions.active_schema(conn, base)
        if live is None:
            raise RuntimeError(f"no live projection in schema {base}: is novalog set up?")
        with conn.transaction():
            versions.create_projection_tables(conn, target)
    pool = make_pool(settings, projection_schema=target)
    producer = EventProducer(settings)
    projector = Projector(settings, pool, producer, group_id=f"replay-{stamp}",
                          dead_letters=False, batch_size=2000)
    started = time.perf_counter()
    result = ReplayResult(target, live, 0, 0.0, 0)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(20):  # a busy cloud moves on: chase it until both stand still
                goal = _position(conn, live)
                _catch_up(projector, conn, target, goal, progress, idle_timeout_s)
                result.records = sum(_position(conn, target).values())
                if not verify:
                    break
                result.tables = compare(conn, live, target)
                if _position(conn, live) == goal:
                    break
        result.seconds = time.perf_counter() - started
        result.refused = projector.refused
    finally:
        projector.close()
        pool.close()
        if not keep:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(target)))
    return result


def _catch_up(projector: Projector, conn: Connection[Any], target: str,
              goal: dict[tuple[str, int], int], progress: Progress | None,
              idle_timeout_s: float) -> None:
    total = sum(goal.values())
    last_read = time.monotonic()
    while True:
        ours = _position(conn, target)
        if progress is not None:
            progress(sum(min(ours.get(k, 0), v) for k, v in goal.items()), total)
        if all(ours.get(k, 0) >= v for k, v in goal.items()):
            return
        if projector.poll_once():
            last_read = time.monotonic()
        elif time.monotonic() - last_read > idle_timeout_s:
            missing = {f"{t}[{p}]": v - ours.get((t, p), 0) for (t, p), v in goal.items()
                       if ours.get((t, p), 0) < v}
            raise RuntimeError(f"replay stalled: nothing read for {idle_timeout_s:.0f}s with "
                               f"records still to read: {missing}")
