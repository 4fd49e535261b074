"""Postgres access shared by the roles: reachability check, per-deployment schema, pools."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from novalog.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """The configured PostgreSQL server does not answer."""


def check_database(url: str, timeout: int = 5) -> str:
    """Return the server version, or raise DatabaseUnavailable with what to do."""
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"PostgreSQL at {redact(url)} does not answer ({str(exc).strip().splitlines()[0]}). "
            "Start it, fix DATABASE_URL, or unset it to use the embedded Postgres (`novalog up`)."
        ) from None
    return str(row[0]) if row else "?"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if not url:
        return ""
    info = psycopg.conninfo.conninfo_to_dict(url)
    if "password" in info:
        info["password"] = "***"
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v})


def ensure_schema(settings: Settings) -> None:
    """Create the deployment's schema (NOVALOG_DB_SCHEMA) if it is missing."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(settings.db_schema)))


def live_schema(base: str) -> str:
    """The schema of the live projection views (S_live, see projections/versions.py)."""
    return f"{base}_live"


FRESH_S = 1.0  # a connection handed out this recently is handed out again untested
_handed_out: weakref.WeakKeyDictionary[Connection[Any], float] = weakref.WeakKeyDictionary()


def _check_unless_fresh(conn: Connection[Any]) -> None:
    """A connection idle for a while (maybe from before an outage) is tested before use;
    one in use within FRESH_S is not: testing every checkout cost a round trip per query
    under load, and a test never closed the race with an outage anyway (the outage policy
    of the consume loop, or the API's 503, covers a query that fails). No `reset`
    callback: with one, psycopg_pool gives every connection back through a worker thread."""
    now = time.monotonic()
    last = _handed_out.get(conn)
    if last is None or now - last >= FRESH_S:
        ConnectionPool.check_connection(conn)
    _handed_out[conn] = now


def make_pool(settings: Settings, *, max_size: int = 4, projection_schema: str | None = None,
              timeout: float = 30.0, autocommit: bool = False) -> ConnectionPool:
    """A pool opened on creation. Unqualified names find the projection tables first:
    the live views (`S_live`) for readers, or `projection_schema` for a projector
    writing one version; then the role tables of the deployment's schema S.

    `autocommit=True` (the reactors, whose code opens `conn.transaction()` wherever two
    statements must hold together): a lone statement is one round trip, not BEGIN,
    statement, COMMIT."""
    first = projection_schema or live_schema(settings.db_schema)
    return ConnectionPool(
        settings.require_database_url(),
        min_size=1,
        max_size=max_size,
        kwargs={"options": f"-c search_path={first},{settings.db_schema},public",
                "autocommit": autocommit},
        open=True,
        timeout=timeout,
        check=_check_unless_fresh,
    )


Source = ConnectionPool | Connection[Any]


@contextmanager
def borrowed(source: Source) -> Iterator[Connection[Any]]:
    """The connection itself, or one from the pool. A request that holds a connection
    (under a row lock or session advisory locks) does its other queries on it: taking a
    second one from the pool while holding the first starves the pool under load (every
    holder waits for one; the API's POSTs did, until the 5 s pool timeout)."""
    if isinstance(source, ConnectionPool):
        with source.connection() as conn:
            yield conn
    else:
        yield source

