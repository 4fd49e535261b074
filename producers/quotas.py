"""os-quota-sets: an admin changes a project's limits (QuotaSet events); anyone reads theirs."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates the response bodies

from novalog.kafka import DeliveryError, Topics
from novalog.publish import Publisher
from novalog.web import ApiError, Auth, state_of
from producers.admission import quota_limits
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


@router.get("/os-quota-sets/{project_id}", summary="A project's quota limits")
def show_quotas(project_id: str, request: Request, ctx: Auth) -> QuotaSetView:
    if project_id != ctx.project_id and not ctx.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:show to be "
                            "performed.")
    with state_of(request).pool.connection() as conn:
        return {"quota_set": {"id": project_id, **quota_limits(conn, project_id)}}


@router.put("/os-quota-sets/{project_id}", summary="Change a project's quota limits (admin)")
def update_quotas(project_id: str, body: QuotaSetBody, request: Request,
                  ctx: Auth) -> QuotaSetView:
    if not ctx.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:update to be "
                            "performed.")
    app = state_of(request)
    changes = body.quota_set.model_dump(exclude_none=True, exclude={"force"})
    pub = Publisher(app.producer, "api", app.settings.hostname)
    request_id = f"req-{time.time_ns()}"
    for resource, limit in changes.items():
        pub.emit(Topics(app.settings.topic_prefix).catalog, "QuotaSet", project_id,
                 payloads.QuotaSet(project_id=project_id, resource=resource, limit=limit),
                 correlation_id=request_id)
    try:
        app.producer.flush(10)
    except DeliveryError as exc:
        raise ApiError(503, f"The change could not be recorded ({exc}).") from None
    deadline = time.monotonic() + 10  # answer with what the projection now says
    while True:
        with app.pool.connection() as conn:
            limits = quota_limits(conn, project_id)
        if all(limits[r] == v for r, v in changes.items()) or time.monotonic() > deadline:
            return {"quota_set": limits}
        time.sleep(0.05)
