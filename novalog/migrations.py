"""Create every table novalog needs, idempotently.

Each part of the system owns its DDL next to its code: the inbox here, the
compute claims in `consumers/compute/schema.sql`, the API's accepted requests
in `producers/schema.sql`, the projections in `projections/schema.sql`
(one schema per projection version, see `projections/versions.py`). Every
statement is `IF NOT EXISTS`, so running this at every role start is safe.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from novalog.idempotency import INBOX_DDL
from novalog.settings import Settings
from projections import versions

ROOT = Path(__file__).resolve().parent.parent
ROLE_DDL = [ROOT / "consumers" / "compute" / "schema.sql", ROOT / "producers" / "schema.sql"]


# Which log the deployment's tables fold: offsets and projections mean nothing on another.
LOG_BINDING_DDL = """
CREATE TABLE IF NOT EXISTS log_binding (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    broker      text NOT NULL,
    cluster_id  text NOT NULL,
    bound_at    timestamptz NOT NULL DEFAULT now()
)"""


def log_binding(settings: Settings) -> tuple[str, str] | None:
    """(broker, cluster id) of the log S folds, or None for a new deployment."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)",
                              (f'"{settings.db_schema}".log_binding',)).fetchone()
        if not exists or exists[0] is None:
            return None
        row = conn.execute(sql.SQL("SELECT broker, cluster_id FROM {}.log_binding").format(
            sql.Identifier(settings.db_schema))).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def bind_log(settings: Settings, broker: str, cluster_id: str) -> tuple[str, str]:
    """Record the log S folds when none is; return the one recorded (first wins)."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        table = sql.SQL("{}.log_binding").format(sql.Identifier(settings.db_schema))
        conn.execute(sql.SQL("INSERT INTO {} (broker, cluster_id) VALUES (%s, %s) "
                             "ON CONFLICT DO NOTHING").format(table), (broker, cluster_id))
        row = conn.execute(sql.SQL("SELECT broker, cluster_id FROM {}").format(table)
                           ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def migrate(settings: Settings, schema: str | None = None) -> None:
    """Role tables in S; the code's projection version in S_p<N>, made live if none is.

    An advisory lock serialises racing role starts.
    """
    base = schema or settings.db_schema
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('novalog-migrate'))")
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(base)))
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(
                    sql.Identifier(base)))
                conn.execute(INBOX_DDL)
                conn.execute(LOG_BINDING_DDL)
                conn.execute(versions.POINTER_DDL)
                for path in ROLE_DDL:
                    conn.execute(path.read_text())
            with conn.transaction():
                version = versions.code_version()
                target = versions.version_schema(base, version)
                versions.create_projection_tables(conn, target)
                versions.register(conn, base, target, version)
                if versions.active_schema(conn, base) is None:
                    versions.activate(conn, base, target)  # a new deployment: nothing to wait for
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('novalog-migrate'))")


def drop_schemas(settings: Settings) -> None:
    """Drop S and every schema derived from it (versions, live views, replays)."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        for name in versions.owned_schemas(conn, settings.db_schema):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def reset(settings: Settings) -> None:
    """Start from empty schemas: Tansu starts empty on every start, so must the folds of its log."""
    drop_schemas(settings)
    migrate(settings)
