"""Volumes as the APIs show them, read from the projection: shared by Block Storage's
reading and writing halves (projections/volumes.py, producers/volumes.py), which
may not import each other, and by the compute API's os-volume_attachments.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from psycopg import Connection
from typing_extensions import TypedDict

from novalog.tokens import Context
from novalog.views import zulu
from novalog.web import ApiError, public_base, state_of

DEFAULT_TYPE_ID = "9b6a5f3e-4a0a-4f5e-9d0e-7c1b2a3d4e5f"  # the one volume type, __DEFAULT__
VOLUME_QUOTAS = {"volumes": 10, "gigabytes": 1000, "snapshots": 10, "backups": 10,
                 "backup_gigabytes": 1000, "per_volume_gigabytes": -1, "groups": 10}
COLUMNS = ("volume_id, project_id, user_id, name, description, size_gb, status, volume_type, "
           "availability_zone, image_id, bootable, metadata, created_at, updated_at")

Json = dict[str, Any]


class VolumeAttachment(TypedDict):
    id: str
    volumeId: str
    serverId: str
    device: str | None


def dev_path(device: str | None) -> str | None:
    """The guest device as Nova and Cinder show it (/dev/vdb); the domain's target is vdb."""
    return f"/dev/{device}" if device else None


def next_device(conn: Connection[Any], server_id: str) -> str:
    """The device an attach will most likely get: the first virtio name after the
    server's disks and volumes (the compute host picks from the domain itself)."""
    row = conn.execute("SELECT state->'disks' FROM servers WHERE uuid = %s",
                       (server_id,)).fetchone()
    used = {d["device"] for d in (row[0] if row and row[0] else [])}
    used |= {r[0] for r in conn.execute("SELECT device FROM volume_attachments WHERE "
                                        "instance_uuid = %s AND device IS NOT NULL",
                                        (server_id,)).fetchall()}
    return next(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used)


def check_project(ctx: Context, project_id: str) -> None:
    """Cinder's paths name the project; a member may only use their own."""
    if project_id != ctx.project_id and not ctx.is_admin:
        raise ApiError(403, f"Policy doesn't allow access to project {project_id}.")


def version_doc(request: Request) -> Json:
    base = public_base(request)
    return {"id": "v3.0", "status": "CURRENT", "version": "3.0", "min_version": "3.0",
            "updated": "2026-12-01T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/volume/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.volume+json;version=3"}]}


def attachments_of(conn: Connection[Any], volume_ids: list[str]) -> dict[str, list[Json]]:
    out: dict[str, list[Json]] = {}
    for vid, aid, server, host, device, at, status in conn.execute(
            "SELECT volume_id, attachment_id, instance_uuid, host, device, attached_at, "
            "attach_status FROM volume_attachments WHERE volume_id = ANY(%s) "
            "ORDER BY attached_at NULLS LAST", (volume_ids,)).fetchall():
        if status != "attached":
            continue  # Cinder lists an attachment once it is complete
        out.setdefault(vid, []).append({
            "id": vid, "attachment_id": aid, "volume_id": vid, "server_id": server,
            "host_name": host, "device": dev_path(device),
            "attached_at": zulu(at) if at else None})
    return out


def volume_view(row: tuple[Any, ...], attachments: list[Json], base: str) -> Json:
    (vid, project, user, name, description, size, status, vtype, zone, image_id, bootable,
     metadata, created, updated) = row
    href = f"{base}/volume/v3/{project}/volumes/{vid}"
    view: Json = {
        "id": vid, "name": name or "", "description": description, "status": status,
        "size": size, "availability_zone": zone, "volume_type": vtype,
        "bootable": "true" if bootable else "false", "encrypted": False,
        "multiattach": False, "metadata": metadata, "attachments": attachments,
        "snapshot_id": None, "source_volid": None, "consistencygroup_id": None,
        "replication_status": None, "migration_status": None, "user_id": user,
        "os-vol-tenant-attr:tenant_id": project, "os-vol-host-attr:host": "novalog@file#file",
        "created_at": zulu(created), "updated_at": zulu(updated),
        "links": [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]}
    if image_id:
        view["volume_image_metadata"] = {"image_id": image_id}
    return view


def volume_rows(conn: Connection[Any], project_id: str | None, name: str | None = None,
                status: str | None = None,
                volume_id: str | None = None) -> list[tuple[Any, ...]]:
    """The project's volumes (every project's for None: an admin's all_tenants), newest
    first, with Cinder's filters."""
    rows: list[tuple[Any, ...]] = conn.execute(
        f"SELECT {COLUMNS} FROM volumes WHERE (%(project)s::text IS NULL OR "
        "project_id = %(project)s) AND (%(name)s::text IS NULL OR name = %(name)s) "
        "AND (%(status)s::text IS NULL OR status = %(status)s) "
        "AND (%(id)s::text IS NULL OR volume_id = %(id)s) ORDER BY created_at DESC, volume_id",
        {"project": project_id, "name": name, "status": status, "id": volume_id}).fetchall()
    return rows


def find_volume(conn: Connection[Any], ctx: Context, project_id: str,
                volume_id: str) -> tuple[Any, ...]:
    rows = volume_rows(conn, project_id, volume_id=volume_id)
    if not rows:
        raise ApiError(404, f"Volume {volume_id} could not be found.")
    return rows[0]


def show(request: Request, ctx: Context, project_id: str, volume_id: str) -> Json:
    check_project(ctx, project_id)
    with state_of(request).pool.connection() as conn:
        row = find_volume(conn, ctx, project_id, volume_id)
        attached = attachments_of(conn, [volume_id])
    return {"volume": volume_view(row, attached.get(volume_id, []), public_base(request))}


def volume_limits(conn: Connection[Any], project_id: str) -> dict[str, int]:
    limits = dict(VOLUME_QUOTAS)
    for resource, limit in conn.execute(
            "SELECT resource, hard_limit FROM quotas WHERE project_id = %s AND resource = "
            "ANY(%s)", (project_id, list(VOLUME_QUOTAS))).fetchall():
        limits[resource] = limit
    return limits


def volume_usage(conn: Connection[Any], project_id: str) -> dict[str, int]:
    row = conn.execute("SELECT count(*), COALESCE(SUM(size_gb), 0) FROM volumes "
                       "WHERE project_id = %s", (project_id,)).fetchone()
    assert row is not None
    return {"volumes": int(row[0]), "gigabytes": int(row[1])}


def server_attachments(conn: Connection[Any], server_id: str) -> list[VolumeAttachment]:
    rows = conn.execute("SELECT attachment_id, volume_id, device FROM volume_attachments "
                        "WHERE instance_uuid = %s AND attach_status <> 'reserved' "
                        "ORDER BY device NULLS LAST", (server_id,)).fetchall()
    return [{"id": vid, "volumeId": vid, "serverId": server_id, "device": dev_path(device)}
            for _aid, vid, device in rows]


def server_of(conn: Connection[Any], ctx: Context, server_id: str) -> str:
    """The server's project, when the caller may see it (404 otherwise, as Nova)."""
    row = conn.execute("SELECT project_id FROM servers WHERE uuid = %s AND vm_state <> "
                       "'deleted'", (server_id,)).fetchone()
    if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return str(row[0])
