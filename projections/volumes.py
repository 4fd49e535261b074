"""Block Storage v3, the reading half (Cinder's volumes, types, limits) and the compute
API's os-volume_attachments list: answered from the projection.

Paths carry the project as Cinder's do (`/volume/v3/{project_id}/...`); a token
for another project is refused (403), and another project's volume is 404, as
Cinder hides it. Only microversion 3.0 is offered.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from novalog.domain import volume as fold
from novalog.timeparse import parse_moment
from novalog.tokens import Context
from novalog.volume_views import (
    DEFAULT_TYPE_ID,
    Json,
    attachments_of,
    check_project,
    server_attachments,
    server_of,
    show,
    version_doc,
    volume_limits,
    volume_rows,
    volume_usage,
    volume_view,
)
from novalog.web import ApiError, Auth, public_base, state_of
from projections.audit import volume_history
from schemas import decode

router = APIRouter(prefix="/volume", tags=["block-storage"])
compute_router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

@router.get("", summary="Block Storage version discovery")
@router.get("/", include_in_schema=False)
def versions(request: Request) -> Json:
    return {"versions": [version_doc(request)]}


@router.get("/v3", summary="Block Storage v3")
@router.get("/v3/", include_in_schema=False)
def version_v3(request: Request) -> Json:
    return {"version": version_doc(request)}


def _views(request: Request, ctx: Context, project_id: str, name: str | None,
           status: str | None, all_tenants: str | None, marker: str | None,
           limit: int | None) -> Json:
    """A page of volumes (Cinder's marker and limit), with the link to the next one."""
    check_project(ctx, project_id)
    everyone = ctx.is_admin and (all_tenants or "").lower() in ("1", "true")
    with state_of(request).pool.connection() as conn:
        rows = volume_rows(conn, None if everyone else project_id, name=name, status=status)
        if marker is not None:
            ids = [r[0] for r in rows]
            if marker not in ids:
                raise ApiError(400, f"Marker {marker} could not be found.")
            rows = rows[ids.index(marker) + 1:]
        page = rows[:limit] if limit is not None else rows
        attached = attachments_of(conn, [r[0] for r in page])
    base = public_base(request)
    out: Json = {"volumes": [volume_view(r, attached.get(r[0], []), base) for r in page]}
    if limit is not None and len(rows) > limit:
        out["volumes_links"] = [{"rel": "next", "href": (
            f"{base}/volume/v3/{project_id}/volumes/detail?limit={limit}&marker={page[-1][0]}")}]
    return out


@router.get("/v3/{project_id}/volumes/detail", summary="The project's volumes, in detail")
def list_volumes_detail(project_id: str, request: Request, ctx: Auth,
                        name: str | None = None, status: str | None = None,
                        all_tenants: str | None = None, marker: str | None = None,
                        limit: Annotated[int | None, Query(ge=1)] = None) -> Json:
    return _views(request, ctx, project_id, name, status, all_tenants, marker, limit)


@router.get("/v3/{project_id}/volumes", summary="The project's volumes")
def list_volumes(project_id: str, request: Request, ctx: Auth, name: str | None = None,
                 status: str | None = None, all_tenants: str | None = None,
                 marker: str | None = None,
                 limit: Annotated[int | None, Query(ge=1)] = None) -> Json:
    page = _views(request, ctx, project_id, name, status, all_tenants, marker, limit)
    page["volumes"] = [{"id": v["id"], "name": v["name"], "links": v["links"]}
                       for v in page["volumes"]]
    return page


@router.get("/v3/{project_id}/volumes/{volume_id}", summary="One volume",
            responses={404: {"description": "no such volume in the project"}})
def show_volume(project_id: str, volume_id: str, request: Request, ctx: Auth) -> Json:
    return show(request, ctx, project_id, volume_id)


def _type(request: Request, project_id: str) -> Json:
    return {"id": DEFAULT_TYPE_ID, "name": "__DEFAULT__", "description": "Default Volume Type",
            "is_public": True, "extra_specs": {}, "os-volume-type-access:is_public": True,
            "qos_specs_id": None}


@router.get("/v3/{project_id}/types", summary="Volume types: the one default")
def list_types(project_id: str, request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    return {"volume_types": [_type(request, project_id)]}


@router.get("/v3/{project_id}/types/default", summary="The default volume type")
def default_type(project_id: str, request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    return {"volume_type": _type(request, project_id)}


@router.get("/v3/{project_id}/types/{type_id}", summary="One volume type")
def show_type(project_id: str, type_id: str, request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    if type_id not in (DEFAULT_TYPE_ID, "__DEFAULT__"):
        raise ApiError(404, f"Volume type {type_id} could not be found.")
    return {"volume_type": _type(request, project_id)}


@router.get("/v3/{project_id}/os-quota-sets/{target}", summary="A project's volume quotas")
def show_volume_quotas(project_id: str, target: str, request: Request, ctx: Auth,
                       usage: bool = False) -> Json:
    check_project(ctx, project_id)
    check_project(ctx, target)
    with state_of(request).pool.connection() as conn:
        limits, used = volume_limits(conn, target), volume_usage(conn, target)
    if usage:
        return {"quota_set": {"id": target, **{
            r: {"limit": v, "in_use": used.get(r, 0), "reserved": 0, "allocated": 0}
            for r, v in limits.items()}}}
    return {"quota_set": {"id": target, **limits}}


@router.get("/v3/{project_id}/limits", summary="Absolute volume limits and usage")
def limits(project_id: str, request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    with state_of(request).pool.connection() as conn:
        limit, used = volume_limits(conn, project_id), volume_usage(conn, project_id)
    return {"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": limit["volumes"], "maxTotalVolumeGigabytes": limit["gigabytes"],
        "maxTotalSnapshots": limit["snapshots"], "maxTotalBackups": limit["backups"],
        "maxTotalBackupGigabytes": limit["backup_gigabytes"],
        "totalVolumesUsed": used["volumes"], "totalGigabytesUsed": used["gigabytes"],
        "totalSnapshotsUsed": 0, "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}}}


# -- the compute side: a server's volume attachments ---------------------------------
@compute_router.get("/servers/{server_id}/os-volume_attachments",
                    summary="The volumes attached to a server")
def list_attachments(server_id: str, request: Request, ctx: Auth) -> Json:
    with state_of(request).pool.connection() as conn:
        server_of(conn, ctx, server_id)
        return {"volumeAttachments": server_attachments(conn, server_id)}


@compute_router.get("/servers/{server_id}/os-volume_attachments/{volume_id}",
                    summary="One of a server's volume attachments")
def show_attachment(server_id: str, volume_id: str, request: Request, ctx: Auth) -> Json:
    with state_of(request).pool.connection() as conn:
        server_of(conn, ctx, server_id)
        found = [a for a in server_attachments(conn, server_id) if a["volumeId"] == volume_id]
    if not found:
        raise ApiError(404, f"Volume {volume_id} is not attached to {server_id}.")
    return {"volumeAttachment": found[0]}


# -- audit and time travel (novalog's own API, beside the servers') ------------------
@router.get("/v3/{project_id}/volumes/{volume_id}/audit",
            summary="A volume's complete history straight from the volumes topic")
def volume_audit(project_id: str, volume_id: str, request: Request, ctx: Auth) -> Json:
    check_project(ctx, project_id)
    project, entries = volume_history(state_of(request).settings, volume_id)
    if project != project_id:
        raise ApiError(404, f"Volume {volume_id} could not be found.")
    return {"events": entries}


@router.get("/v3/{project_id}/volumes/{volume_id}/as-of",
            summary="A volume as it was at a past moment (a fold of its projected events)")
def volume_as_of(project_id: str, volume_id: str, request: Request, ctx: Auth,
                 at: str) -> Json:
    check_project(ctx, project_id)
    try:
        moment = parse_moment(at)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    with state_of(request).pool.connection() as conn:
        rows = conn.execute("SELECT raw FROM volume_events WHERE volume_id = %s ORDER BY seq",
                            (volume_id,)).fetchall()
    state = fold.fold([decode(bytes(r[0])) for r in rows], until=moment)
    if state is None or state.project_id != project_id:
        raise ApiError(404, f"Volume {volume_id} could not be found as of {moment.isoformat()}.")
    return {"as_of": moment.isoformat(), "volume": {
        "id": state.volume_id, "name": state.name or "", "status": state.status,
        "size": state.size_gb, "attachments": [
            {"server_id": a.instance_uuid, "attach_status": a.attach_status,
             "device": a.device} for a in state.attachments]}}
