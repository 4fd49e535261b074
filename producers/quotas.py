"""os-quota-sets: an admin changes a project's limits (QuotaSet events); anyone reads theirs.

The limits enforced are Nova's instances, cores and ram (producers/admission.py) and
metadata_items (a fixed 128, as Nova's default); `limits` shows the same, with usage.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates the response bodies

from novalog.tokens import Context
from novalog.web import Auth, require_admin, state_of
from producers import facts
from producers.admission import quota_limits, quota_usage
from producers.catalog import DEFAULT_QUOTAS
from producers.servers import MAX_METADATA_ITEMS
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
INT32 = 2**31 - 1  # QuotaSet.limit is an Avro int


class QuotaValues(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: int | None = Field(default=None, ge=-1, le=INT32)
    cores: int | None = Field(default=None, ge=-1, le=INT32)
    ram: int | None = Field(default=None, ge=-1, le=INT32)
    force: bool | None = None


class QuotaSetBody(BaseModel):
    quota_set: QuotaValues


class QuotaSetView(TypedDict):
    quota_set: Mapping[str, int | str]  # limit by resource (and the project's "id")


class QuotaDetail(TypedDict):
    limit: int
    in_use: int
    reserved: int


class QuotaDetailView(TypedDict):
    quota_set: Mapping[str, QuotaDetail | str]


class Limits(TypedDict):
    rate: list[dict[str, str]]
    absolute: dict[str, int]


class LimitsView(TypedDict):
    limits: Limits


def _readable(ctx: Context, project_id: str) -> None:
    if project_id != ctx.project_id:
        require_admin(ctx, "os_compute_api:os-quota-sets:show")


@router.get("/os-quota-sets/{project_id}", summary="A project's quota limits")
def show_quotas(project_id: str, request: Request, ctx: Auth) -> QuotaSetView:
    _readable(ctx, project_id)
    with state_of(request).pool.connection() as conn:
        return {"quota_set": {"id": project_id, **quota_limits(conn, project_id),
                              "metadata_items": MAX_METADATA_ITEMS}}


@router.get("/os-quota-sets/{project_id}/defaults", summary="The limits a new project gets")
def default_quotas(project_id: str, _ctx: Auth) -> QuotaSetView:
    return {"quota_set": {"id": project_id, **DEFAULT_QUOTAS,
                          "metadata_items": MAX_METADATA_ITEMS}}


@router.get("/os-quota-sets/{project_id}/detail", summary="Limits with what is in use")
def quota_details(project_id: str, request: Request, ctx: Auth) -> QuotaDetailView:
    _readable(ctx, project_id)
    with state_of(request).pool.connection() as conn:
        limits, used = quota_limits(conn, project_id), quota_usage(conn, project_id)
    return {"quota_set": {"id": project_id, **{
        r: {"limit": limits[r], "in_use": used[r], "reserved": 0} for r in limits}}}


@router.get("/limits", summary="The caller's absolute limits and usage (rate limits: none)")
def limits(request: Request, ctx: Auth) -> LimitsView:
    with state_of(request).pool.connection() as conn:
        limit, used = quota_limits(conn, ctx.project_id), quota_usage(conn, ctx.project_id)
    return {"limits": {"rate": [], "absolute": {
        "maxTotalInstances": limit["instances"], "maxTotalCores": limit["cores"],
        "maxTotalRAMSize": limit["ram"], "maxServerMeta": MAX_METADATA_ITEMS,
        "totalInstancesUsed": used["instances"], "totalCoresUsed": used["cores"],
        "totalRAMUsed": used["ram"]}}}


@router.put("/os-quota-sets/{project_id}", summary="Change a project's quota limits (admin)")
def update_quotas(project_id: str, body: QuotaSetBody, request: Request,
                  ctx: Auth) -> QuotaSetView:
    require_admin(ctx, "os_compute_api:os-quota-sets:update")
    app = state_of(request)
    changes = body.quota_set.model_dump(exclude_none=True, exclude={"force"})
    facts.publish(app, [("QuotaSet", project_id, payloads.QuotaSet(
        project_id=project_id, resource=resource, limit=limit))
        for resource, limit in changes.items()],
        lambda conn: all(quota_limits(conn, project_id)[r] == v for r, v in changes.items()))
    with app.pool.connection() as conn:
        return {"quota_set": quota_limits(conn, project_id)}
