"""Read ports: what reactors read of the projections, through schema-qualified SQL.

A reactor that needs data another part owns names the table it reads, here, in
one place; nothing relies on the connection's search_path to find it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from novalog.consume import TransientError


def live_schema(base: str) -> str:
    """The schema of the live projection views (S_live, see projections/versions.py)."""
    return f"{base}_live"


class BuildRequests:
    """Each instance's InstanceBuildRequested payload: remembered as it passes on the log,
    or read from the live projection after a restart in the middle of a build.

    The scheduler and the conductor both see a request before any later event of the
    same instance (one key, one partition), so the projection matters only after a
    restart, and its lag is then a TransientError (retried), never a wrong answer.
    """

    def __init__(self, pool: ConnectionPool, base_schema: str, limit: int = 100_000) -> None:
        self.pool = pool
        self.limit = limit
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._query = sql.SQL(
            "SELECT payload FROM {}.instance_events WHERE instance_uuid = %s "
            "AND event_type = 'InstanceBuildRequested'").format(
                sql.Identifier(live_schema(base_schema)))

    def remember(self, instance: str, payload: dict[str, Any]) -> None:
        self._cache[instance] = payload
        if len(self._cache) > self.limit:
            self._cache.popitem(last=False)

    def forget(self, instance: str) -> None:
        self._cache.pop(instance, None)

    def __contains__(self, instance: str) -> bool:
        return instance in self._cache

    def get(self, instance: str) -> dict[str, Any]:
        if instance in self._cache:
            return self._cache[instance]
        with self.pool.connection() as conn:
            row = conn.execute(self._query, (instance,)).fetchone()
        if row is None:
            raise TransientError(f"the build request of {instance} is not projected yet")
        payload: dict[str, Any] = row[0]
        return payload
