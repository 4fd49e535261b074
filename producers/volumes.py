"""Block Storage v3, the writing half (create, delete), and the compute API's volume
attach / detach (`os-volume_attachments`), as volume facts and compute commands.

Every change to a volume is made under the volume's advisory lock (its project's,
for a create, which counts quota), held until the projection shows the change, so
two racing requests cannot both find a volume available. A create or delete is one
fact on the volumes topic; an attach or detach is a fact (reserved, detaching) and
the command to the server's host, through the outbox, fact first.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field

from novalog import request_ids
from novalog.domain import volume as vol
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.tokens import Context
from novalog.volume_views import (
    Json,
    check_project,
    dev_path,
    find_volume,
    next_device,
    server_attachments,
    server_of,
    show,
    volume_limits,
    volume_usage,
)
from novalog.web import ApiError, AppState, Auth, require_admin, state_of
from producers import facts, outbox
from schemas import payloads

router = APIRouter(prefix="/volume", tags=["block-storage"])
compute_router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
MAX_SIZE_GB = 2**31 - 1
ATTACHABLE_VM_STATES = frozenset({"active", "stopped", "paused", "shelved_offloaded",
                                  "resized", "shelved", "suspended"})  # Nova's attach check


class VolumeCreate(BaseModel):
    model_config = ConfigDict(extra="allow")  # snapshot_id, source_volid ...: refused below
    size: int | None = Field(default=None, ge=1, le=MAX_SIZE_GB)
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    imageRef: str | None = None
    volume_type: str | None = None
    availability_zone: str | None = None
    metadata: dict[str, str] | None = None
    multiattach: bool | None = False


class VolumeCreateBody(BaseModel):
    volume: VolumeCreate


class AttachmentCreate(BaseModel):
    model_config = ConfigDict(extra="allow")  # tag, delete_on_termination (later versions)
    volumeId: str
    device: str | None = None


class AttachmentBody(BaseModel):
    volumeAttachment: AttachmentCreate


def image_for_volume(conn: Connection[Any], ctx: Context, image_id: str,
                     size_gb: int) -> None:
    """Cinder's checks of a create from an image: it exists, is active and fits."""
    row = conn.execute("SELECT status, visibility, owner, size, min_disk FROM images "
                       "WHERE image_id = %s", (image_id,)).fetchone()
    if row is None or not (row[1] in ("public", "community") or row[2] == ctx.project_id
                           or ctx.is_admin):
        raise ApiError(400, f"Invalid image identifier or unable to access requested image "
                            f"{image_id}.")
    if row[0] != "active":
        raise ApiError(400, f"Image {image_id} is not active.")
    if (row[3] or 0) > size_gb * 2**30 or row[4] > size_gb:
        raise ApiError(400, f"Size of specified image {max(row[4], -(-row[3] // 2**30))}GB is "
                            f"larger than volume size {size_gb}GB.")


def check_volume_quota(conn: Connection[Any], project_id: str, count: int,
                       size_gb: int) -> None:
    """Cinder's volumes and gigabytes quotas: 413 with Cinder's messages."""
    limits, used = volume_limits(conn, project_id), volume_usage(conn, project_id)
    if 0 <= limits["gigabytes"] < used["gigabytes"] + size_gb * count:
        raise ApiError(413, f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot "
                            f"exceeds allowed gigabytes quota. Requested {size_gb * count}G, "
                            f"quota is {limits['gigabytes']}G and {used['gigabytes']}G has "
                            f"been consumed.")
    if 0 <= limits["volumes"] < used["volumes"] + count:
        raise ApiError(413, f"VolumeLimitExceeded: Maximum number of volumes allowed "
                            f"({limits['volumes']}) exceeded for quota 'volumes'.")


@router.post("/v3/{project_id}/volumes", status_code=202, summary="Create a volume",
             responses={400: {"description": "bad size, image or option"},
                        413: {"description": "over the volumes or gigabytes quota"}})
def create_volume(project_id: str, body: VolumeCreateBody, request: Request,
                  ctx: Auth) -> Json:
    check_project(ctx, project_id)
    v = body.volume
    for unsupported in ("snapshot_id", "source_volid", "backup_id", "consistencygroup_id"):
        if (v.model_extra or {}).get(unsupported):
            raise ApiError(400, f"Invalid input received: {unsupported} is not supported "
                                "(novalog has no snapshots, clones or backups).")
    if v.size is None:
        raise ApiError(400, "Invalid input received: Volume size must be specified.")
    if v.multiattach:
        raise ApiError(400, "Invalid input received: multiattach volumes are not supported.")
    if v.volume_type not in (None, "", "__DEFAULT__"):
        raise ApiError(404, f"Volume type with name {v.volume_type} could not be found.")
    if v.availability_zone not in (None, "", "nova"):
        raise ApiError(400, f"Invalid input received: Availability zone "
                            f"'{v.availability_zone}' is invalid.")
    app, volume_id = state_of(request), str(uuid.uuid4())
    with app.pool.connection() as conn, facts.held_locks(conn, [f"volumes/{project_id}"]):
        if v.imageRef:
            image_for_volume(conn, ctx, v.imageRef, v.size)
        check_volume_quota(conn, project_id, 1, v.size)
        facts.publish(app, [("VolumeRequested", volume_id, payloads.VolumeRequested(
            volume_id=volume_id, project_id=project_id, user_id=ctx.user_id, name=v.name,
            description=v.description, size_gb=v.size, volume_type="__DEFAULT__",
            availability_zone="nova", image_id=v.imageRef or None, metadata=v.metadata or {},
            for_build=None))], lambda c: _status(c, volume_id) is not None, conn,
            topic=Topics(app.settings.topic_prefix).volumes)
    return show(request, ctx, project_id, volume_id)


class VolumeQuotaValues(BaseModel):
    model_config = ConfigDict(extra="ignore")  # snapshots, backups...: not enforced here
    volumes: int | None = Field(default=None, ge=-1, le=2**31 - 1)
    gigabytes: int | None = Field(default=None, ge=-1, le=2**31 - 1)


class VolumeQuotaBody(BaseModel):
    quota_set: VolumeQuotaValues


@router.put("/v3/{project_id}/os-quota-sets/{target}",
            summary="Change a project's volumes / gigabytes quota (admin)")
def update_volume_quotas(project_id: str, target: str, body: VolumeQuotaBody,
                         request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    require_admin(ctx, "volume_extension:quotas:update")
    app = state_of(request)
    changes = body.quota_set.model_dump(exclude_none=True)
    facts.publish(app, [("QuotaSet", target, payloads.QuotaSet(
        project_id=target, resource=resource, limit=limit))
        for resource, limit in changes.items()],
        lambda conn: all(volume_limits(conn, target)[r] == v for r, v in changes.items()))
    with app.pool.connection() as conn:
        return {"quota_set": volume_limits(conn, target)}


def _status(conn: Connection[Any], volume_id: str) -> str | None:
    row = conn.execute("SELECT status FROM volumes WHERE volume_id = %s",
                       (volume_id,)).fetchone()
    return str(row[0]) if row else None


@router.delete("/v3/{project_id}/volumes/{volume_id}", status_code=202,
               response_class=Response, summary="Delete a volume (not while attached)",
               responses={400: {"description": "attached, or in a status that cannot"},
                          404: {"description": "no such volume in the project"}})
def delete_volume(project_id: str, volume_id: str, request: Request, ctx: Auth) -> Response:
    check_project(ctx, project_id)
    app = state_of(request)
    with app.pool.connection() as conn, facts.held_locks(conn, [f"volume/{volume_id}"]):
        status = find_volume(conn, ctx, project_id, volume_id)[6]
        attached = conn.execute("SELECT 1 FROM volume_attachments WHERE volume_id = %s",
                                (volume_id,)).fetchone()
        if status == vol.DELETING:
            return Response(status_code=202)
        if status not in vol.DELETABLE or attached:
            raise ApiError(400, "Invalid volume: Volume status must be available or error or "
                                "error_restoring or error_extending or error_managing and "
                                "must not be migrating, attached, belong to a group, have "
                                "snapshots, awaiting a transfer, or be disassociated from "
                                "snapshots after volume transfer.")
        facts.publish(app, [("VolumeDeleteRequested", volume_id,
                             payloads.VolumeDeleteRequested(volume_id=volume_id))],
                      lambda c: _status(c, volume_id) in (vol.DELETING, None), conn,
                      topic=Topics(app.settings.topic_prefix).volumes)
    return Response(status_code=202)


# -- the compute API: attach and detach ------------------------------------------------
def _server(conn: Connection[Any], ctx: Context, server_id: str) -> tuple[str, str | None,
                                                                           str | None, str]:
    """(vm_state, task_state, host, project) of a server the caller may see."""
    project = server_of(conn, ctx, server_id)
    row = conn.execute("SELECT vm_state, task_state, host FROM servers WHERE uuid = %s",
                       (server_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2], project


def _send(app: AppState, conn: Connection[Any], events: list[tuple[str, str, str, Any]],
          projected: Any) -> None:
    """Facts and commands (topic, type, key, payload) through the outbox, in order, then
    wait until the projection shows `projected`."""
    pub = Publisher(app.producer, "api", app.settings.hostname)
    request_id = request_ids.request_id()
    rows = []
    with conn.transaction():
        for topic, kind, key, payload in events:
            rows.append(outbox.add(conn, topic, pub.build(kind, key, payload,
                                                          correlation_id=request_id)))
    outbox.publish_accepted(conn, app.producer, rows, f"request {request_id}")
    facts.wait_projected(app, projected, conn)


@compute_router.post("/servers/{server_id}/os-volume_attachments",
                     summary="Attach a volume to a server",
                     responses={400: {"description": "the volume is not available"},
                                404: {"description": "no such server or volume"},
                                409: {"description": "the server's state does not allow it"}})
def attach_volume(server_id: str, body: AttachmentBody, request: Request, ctx: Auth) -> Json:
    app, volume_id = state_of(request), body.volumeAttachment.volumeId
    topics = Topics(app.settings.topic_prefix)
    with app.pool.connection() as conn, facts.held_locks(conn, [f"volume/{volume_id}"]):
        vm_state, task_state, host, project = _server(conn, ctx, server_id)
        row = conn.execute("SELECT status, project_id, connection, size_gb FROM volumes "
                           "WHERE volume_id = %s", (volume_id,)).fetchone()
        if row is None or row[1] != project:
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        if vm_state not in ATTACHABLE_VM_STATES or task_state is not None or host is None:
            raise ApiError(409, f"Cannot 'attach_volume' instance {server_id} while it is in "
                                f"vm_state {vm_state}")
        holders = [r[0] for r in conn.execute(
            "SELECT instance_uuid FROM volume_attachments WHERE volume_id = %s ORDER BY 1",
            (volume_id,)).fetchall()]
        if holders:
            raise ApiError(400, f"Invalid volume: volume {volume_id} is already attached to "
                                f"instances: {' '.join(holders)}")
        if row[0] != vol.AVAILABLE or row[2] is None:
            raise ApiError(400, f"Invalid input received: Invalid volume: Volume {volume_id} "
                                f"status must be available or downloading to reserve, but the "
                                f"current status is {row[0]}.")
        attachment_id, device = str(uuid.uuid4()), next_device(conn, server_id)
        _send(app, conn, [
            (topics.volumes, "VolumeReserved", volume_id, payloads.VolumeReserved(
                volume_id=volume_id, attachment_id=attachment_id, instance_uuid=server_id)),
            (topics.compute(host), "AttachVolume", server_id, payloads.AttachVolume(
                instance_uuid=server_id, host=host, volume_id=volume_id,
                attachment_id=attachment_id, connection=row[2], size_gb=row[3],
                device=body.volumeAttachment.device))],
            lambda c: _status(c, volume_id) != vol.AVAILABLE)
    return {"volumeAttachment": {"id": volume_id, "volumeId": volume_id,
                                 "serverId": server_id, "device": dev_path(device)}}


@compute_router.delete("/servers/{server_id}/os-volume_attachments/{volume_id}",
                       status_code=202, response_class=Response,
                       summary="Detach a volume from a server",
                       responses={403: {"description": "the server's root volume"},
                                  404: {"description": "not attached to this server"},
                                  409: {"description": "the server's state does not allow it"}})
def detach_volume(server_id: str, volume_id: str, request: Request, ctx: Auth) -> Response:
    app = state_of(request)
    topics = Topics(app.settings.topic_prefix)
    with app.pool.connection() as conn, facts.held_locks(conn, [f"volume/{volume_id}"]):
        vm_state, task_state, host, _project = _server(conn, ctx, server_id)
        if not any(a["volumeId"] == volume_id for a in server_attachments(conn, server_id)):
            raise ApiError(404, f"Instance {server_id} is not attached to volume {volume_id}")
        row = conn.execute("SELECT attachment_id, attach_status, device FROM "
                           "volume_attachments WHERE volume_id = %s AND instance_uuid = %s",
                           (volume_id, server_id)).fetchone()
        assert row is not None
        if row[2] == "vda":
            raise ApiError(400, "Cannot detach a root device volume")
        if vm_state not in ATTACHABLE_VM_STATES or task_state is not None or host is None:
            raise ApiError(409, f"Cannot 'detach_volume' instance {server_id} while it is in "
                                f"vm_state {vm_state}")
        if row[1] != "attached":
            raise ApiError(400, f"Invalid volume: Unable to detach volume. Volume status must "
                                f"be 'in-use' and attach_status must be 'attached' to detach "
                                f"(it is {row[1]}).")
        _send(app, conn, [
            (topics.volumes, "VolumeDetaching", volume_id, payloads.VolumeDetaching(
                volume_id=volume_id, attachment_id=row[0], instance_uuid=server_id)),
            (topics.compute(host), "DetachVolume", server_id, payloads.DetachVolume(
                instance_uuid=server_id, host=host, volume_id=volume_id,
                attachment_id=row[0]))],
            lambda c: _status(c, volume_id) != vol.IN_USE)
    return Response(status_code=202)
