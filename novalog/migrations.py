"""Create every table novalog needs, idempotently, in the deployment's schema.

Each part of the system owns its DDL next to its code: the inbox here, the
projections in `projections/schema.sql`, the compute claims in
`consumers/compute/schema.sql`, the API's accepted requests in
`producers/schema.sql`. Every statement is `IF NOT EXISTS`, so running this at
every role start is safe.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from novalog.idempotency import INBOX_DDL
from novalog.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DDL_FILES = [ROOT / "projections" / "schema.sql", ROOT / "consumers" / "compute" / "schema.sql",
             ROOT / "producers" / "schema.sql"]


def migrate(settings: Settings, schema: str | None = None) -> None:
    """Create the schema and every table in it; an advisory lock serialises racing roles."""
    target = schema or settings.db_schema
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('novalog-migrate'))")
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target)))
            conn.execute(INBOX_DDL)
            for path in DDL_FILES:
                if path.exists():
                    conn.execute(path.read_text())
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('novalog-migrate'))")


def reset(settings: Settings) -> None:
    """Drop and recreate the schema: the embedded broker starts empty, so must its folds."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(settings.db_schema)))
    migrate(settings)
