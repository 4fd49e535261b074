"""Projection versions, blue / green.

Role state (inbox, claims, accepted requests, this pointer) lives in the
deployment's schema S. Each projection version lives in a schema of its own,
`S_p<N>`, with its own stored offsets. Readers see the active version through
`S_live`, one view per projection table. Activating a version re-creates those
views in one transaction, so a reader sees the old version or the new one,
never a mix. A new version (PROJECTION_VERSION bumped in the code, or
NOVALOG_PROJECTION_VERSION) is built by its projector from offset 0 next to the
active one, and activated once it has caught up. The old schema is kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from psycopg import Connection, sql

from novalog.db import live_schema

SCHEMA_FILE = Path(__file__).resolve().parent / "schema.sql"
PROJECTION_VERSION = 5  # bump when schema.sql or a writer changes what is projected
VIEW_TABLES = [
    "servers", "instance_events", "instance_actions", "instance_action_events",
    "compute_nodes", "services", "flavors", "images", "networks", "projects", "users",
    "role_assignments", "quotas", "keypairs", "server_groups", "migrations", "volumes",
    "volume_attachments", "volume_events",
]

POINTER_DDL = """
CREATE TABLE IF NOT EXISTS projection_versions (
    schema_name  text PRIMARY KEY,
    version      int         NOT NULL,
    state        text        NOT NULL,  -- building, active, retired
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
)
"""


def code_version() -> int:
    """The version this code projects (NOVALOG_PROJECTION_VERSION overrides, for upgrades)."""
    return int(os.environ.get("NOVALOG_PROJECTION_VERSION", PROJECTION_VERSION))


def version_schema(base: str, version: int) -> str:
    return f"{base}_p{version}"


def create_projection_tables(conn: Connection[Any], schema: str) -> None:
    """The projection tables (and their offsets table) in `schema`; idempotent."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(SCHEMA_FILE.read_text())
    conn.execute("SET LOCAL search_path TO DEFAULT")


def active_schema(conn: Connection[Any], base: str) -> str | None:
    row = conn.execute(sql.SQL("SELECT schema_name FROM {}.projection_versions "
                               "WHERE state = 'active'").format(sql.Identifier(base))).fetchone()
    return str(row[0]) if row else None


def register(conn: Connection[Any], base: str, schema: str, version: int) -> None:
    conn.execute(sql.SQL("INSERT INTO {}.projection_versions (schema_name, version, state) "
                         "VALUES (%s, %s, 'building') ON CONFLICT DO NOTHING"
                         ).format(sql.Identifier(base)), (schema, version))


def activate(conn: Connection[Any], base: str, schema: str) -> None:
    """Point every live view at `schema`, in the caller's transaction (atomic for readers)."""
    live = live_schema(base)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(live)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(live)))
    for table in VIEW_TABLES:
        conn.execute(sql.SQL("CREATE VIEW {}.{} AS SELECT * FROM {}.{}").format(
            sql.Identifier(live), sql.Identifier(table), sql.Identifier(schema),
            sql.Identifier(table)))
    pointer = sql.Identifier(base)
    conn.execute(sql.SQL("UPDATE {}.projection_versions SET state = 'retired' "
                         "WHERE state = 'active' AND schema_name <> %s").format(pointer),
                 (schema,))
    conn.execute(sql.SQL("UPDATE {}.projection_versions SET state = 'active', "
                         "activated_at = now() WHERE schema_name = %s").format(pointer),
                 (schema,))


def offsets(conn: Connection[Any], schema: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(sql.SQL("SELECT topic, partition, next_offset FROM {}.projector_offsets"
                                ).format(sql.Identifier(schema))).fetchall()
    return {(t, p): o for t, p, o in rows}


def caught_up(conn: Connection[Any], new: str, old: str) -> bool:
    """The new version has read at least as far as the old one, on every partition."""
    theirs, ours = offsets(conn, old), offsets(conn, new)
    return all(ours.get(key, 0) >= offset for key, offset in theirs.items())


def owned_schemas(conn: Connection[Any], base: str) -> list[str]:
    """S and every schema novalog derives from it (versions, live views, replays)."""
    pattern = re.compile(rf"^{re.escape(base)}(_p\d+|_live|_replay_\w+)?$")
    names = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()]
    return [n for n in names if pattern.match(n)]
