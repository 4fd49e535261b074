"""Admission of a validated build: quota and the outbox, in the request's transaction.

Quota usage is counted in `accepted_instances` (less the instances whose deletion is
done) under a per-project advisory lock,
and each instance's InstanceBuildRequested goes into the outbox in that same
transaction, so a request is either wholly accepted (and later published) or not
at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from novalog.idempotency import boot_attachment_id
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.tokens import Context
from novalog.web import ApiError
from producers import outbox
from producers.catalog import DEFAULT_QUOTAS
from schemas import payloads

if TYPE_CHECKING:
    from producers.servers import BuildPlan


@dataclass(frozen=True)
class Admission:
    reservation_id: str
    server_ids: list[str]
    outgoing: list[outbox.Outgoing]


def admit(conn: Connection[Any], pub: Publisher, topics: Topics, ctx: Context,
          plan: BuildPlan, counts: tuple[int, int], request_id: str) -> Admission:
    """As many instances as quota allows (403 below min_count), recorded and queued."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ctx.project_id,))
    first = plan.request
    flavor, image, reservation_id = first["flavor"], first["image"], first["reservation_id"]
    count = allowed_count(conn, ctx, flavor, *counts)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    outgoing: list[outbox.Outgoing] = []
    now = datetime.now(UTC)
    for index, server_id in enumerate(ids):
        name = first["name"] if count == 1 else f"{first['name']}-{index + 1}"
        conn.execute(
            "INSERT INTO accepted_instances VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s)", (server_id, ctx.project_id, ctx.user_id, name, reservation_id,
                    flavor["vcpus"], flavor["memory_mb"], Jsonb(flavor),
                    image["id"] if image else None, request_id, now))
        request: payloads.InstanceBuildRequested = {**first, "name": name, "launch_index": index}
        event = pub.build("InstanceBuildRequested", server_id, request,
                          correlation_id=request_id)
        outgoing.append(outbox.add(conn, topics.instances, event))
        for volume_id in [b["volume_id"] for b in request["block_device_mapping"]
                          if b["source_type"] == "volume" and b["volume_id"]]:
            reserved = pub.build("VolumeReserved", volume_id, payloads.VolumeReserved(
                volume_id=volume_id, attachment_id=boot_attachment_id(volume_id, server_id),
                instance_uuid=server_id), correlation_id=request_id)
            # Nova's attachment_create at boot
            outgoing.append(outbox.add(conn, topics.volumes, reserved))
    return Admission(reservation_id, ids, outgoing)


# Usage, as Nova counts it: every accepted instance until its deletion is done (projected
# vm_state deleted), so a burst cannot overshoot while the projection catches up.
# A resized instance counts with its flavor now (the projection's), not the one it was
# accepted with.
USAGE_SQL = ("SELECT count(*), COALESCE(SUM(COALESCE((s.flavor->>'vcpus')::int, a.vcpus)), 0), "
             "COALESCE(SUM(COALESCE((s.flavor->>'memory_mb')::int, a.memory_mb)), 0) "
             "FROM accepted_instances a LEFT JOIN servers s ON s.uuid = a.uuid "
             "WHERE a.project_id = %s AND s.vm_state IS DISTINCT FROM 'deleted'")


def quota_limits(conn: Connection[Any], project_id: str) -> dict[str, int]:
    limits = dict(DEFAULT_QUOTAS)
    for resource, limit in conn.execute(
            "SELECT resource, hard_limit FROM quotas WHERE project_id = %s",
            (project_id,)).fetchall():
        limits[resource] = limit
    return limits


def quota_usage(conn: Connection[Any], project_id: str) -> dict[str, int]:
    """What the project's instances hold now, per quota resource (USAGE_SQL)."""
    row = conn.execute(USAGE_SQL, (project_id,)).fetchone()
    assert row is not None
    return {"instances": int(row[0]), "cores": int(row[1]), "ram": int(row[2])}


def allowed_count(conn: Connection[Any], ctx: Context, flavor: payloads.Flavor,
                  min_count: int, max_count: int) -> int:
    """As many instances as quota allows, from max_count down to min_count, or 403."""
    limits = quota_limits(conn, ctx.project_id)
    if all(limit < 0 for limit in limits.values()):  # unlimited: nothing to count
        return max_count
    used = quota_usage(conn, ctx.project_id)
    per = {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["memory_mb"]}
    room = [(limits[r] - used[r]) // per[r] for r in per if limits[r] >= 0 and per[r] > 0]
    count = int(min([max_count, *room]))
    if count >= min_count:
        return count
    resource = next(r for r in per
                    if limits[r] >= 0 and used[r] + per[r] * min_count > limits[r])
    raise ApiError(403, f"Quota exceeded for {resource}: Requested {per[resource] * min_count},"
                        f" but already used {used[resource]} of {limits[resource]} {resource}")


def check_resize_quota(conn: Connection[Any], project_id: str, old: payloads.Flavor,
                       new: payloads.Flavor) -> None:
    """Nova's upsize check: the growth in cores and RAM must fit the project's quota."""
    limits = quota_limits(conn, project_id)
    row = conn.execute(USAGE_SQL, (project_id,)).fetchone()
    assert row is not None
    used = {"cores": int(row[1]), "ram": int(row[2])}
    growth = {"cores": new["vcpus"] - old["vcpus"], "ram": new["memory_mb"] - old["memory_mb"]}
    for resource, more in growth.items():
        if more > 0 and 0 <= limits[resource] < used[resource] + more:
            raise ApiError(403, f"Quota exceeded for {resource}: Requested {more}, but already "
                                f"used {used[resource]} of {limits[resource]} {resource}")
