"""os-services administration (Nova's API before microversion 2.53): disable, enable and
delete a service. Each is an event on the hosts topic; the answer waits (briefly) until
the projection shows it, so a client that lists services next sees its change.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates the response bodies

from novalog import request_ids
from novalog.kafka import DeliveryError, Topics
from novalog.publish import Publisher
from novalog.service import service_id
from novalog.web import ApiError, AppState, Auth, digits, require_admin, state_of
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
COMPUTE = "nova-compute"


class ServiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1, max_length=255)
    binary: str = Field(min_length=1, max_length=255)
    disabled_reason: str | None = Field(default=None, min_length=1, max_length=255)


class ServiceStatus(TypedDict, total=False):
    host: str
    binary: str
    status: str
    disabled_reason: str


class ServiceUpdated(TypedDict):
    service: ServiceStatus


def _publish(app: AppState, event_type: str, host: str, payload: dict[str, object],
             done: Callable[[], bool]) -> None:
    """Publish the admin's event, then wait up to 10 s for the projection to show it."""
    Publisher(app.producer, "api", app.settings.hostname).emit(
        Topics(app.settings.topic_prefix).hosts, event_type, host, payload,
        correlation_id=request_ids.request_id())
    try:
        app.producer.flush(10)
    except DeliveryError as exc:
        raise ApiError(503, f"The change could not be recorded ({exc}).") from None
    deadline = time.monotonic() + 10
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def _service(app: AppState, host: str, binary: str) -> tuple[bool, str | None] | None:
    with app.pool.connection() as conn:
        row = conn.execute("SELECT disabled, disabled_reason FROM services WHERE host = %s "
                           "AND service_binary = %s", (host, binary)).fetchone()
    return (bool(row[0]), row[1]) if row else None


@router.put("/os-services/{action}", summary="Disable or enable a compute service (admin)",
            responses={400: {"description": "not a compute service, or no reason given"},
                       404: {"description": "no such service, or no such action"}})
def update_service(action: str, body: ServiceRef, request: Request,
                   ctx: Auth) -> ServiceUpdated:
    require_admin(ctx, "os_compute_api:os-services:update")
    if action not in ("disable", "disable-log-reason", "enable"):
        raise ApiError(404, "Unknown action")
    if body.binary != COMPUTE:
        raise ApiError(400, f"Updating a {body.binary} service is not supported. Only "
                            "nova-compute services can be updated.")
    reason = body.disabled_reason if action == "disable-log-reason" else None
    if action == "disable-log-reason" and reason is None:
        raise ApiError(400, "Missing disabled reason field")
    app = state_of(request)
    if _service(app, body.host, body.binary) is None:
        raise ApiError(404, f"Could not find binary {body.binary} on host {body.host}.")
    disable = action != "enable"
    if disable:
        _publish(app, "ServiceDisabled", body.host, dict(payloads.ServiceDisabled(
            host=body.host, binary=body.binary, reason=reason)),
            lambda: _service(app, body.host, body.binary) == (True, reason))
    else:
        _publish(app, "ServiceEnabled", body.host, dict(payloads.ServiceEnabled(
            host=body.host, binary=body.binary)),
            lambda: _service(app, body.host, body.binary) == (False, None))
    status: ServiceStatus = {"host": body.host, "binary": body.binary,
                             "status": "disabled" if disable else "enabled"}
    if reason is not None:
        status["disabled_reason"] = reason
    return {"service": status}


@router.delete("/os-services/{service_id_}", status_code=204, response_class=Response,
               summary="Delete a service (admin); a compute host only when it hosts nothing",
               responses={400: {"description": "not a service id"},
                          404: {"description": "no such service"},
                          409: {"description": "the host still has instances"}})
def delete_service(service_id_: str, request: Request, ctx: Auth) -> Response:
    require_admin(ctx, "os_compute_api:os-services:delete")
    if not digits(service_id_):
        raise ApiError(400, f"Invalid ID {service_id_} passed")
    app = state_of(request)
    with app.pool.connection() as conn:
        rows = conn.execute("SELECT host, service_binary FROM services").fetchall()
        found = [(h, b) for h, b in rows if service_id(h, b) == int(service_id_)]
        if not found:
            raise ApiError(404, f"Service {service_id_} not found.")
        host, binary = found[0]
        if binary == COMPUTE and conn.execute(
                "SELECT 1 FROM servers WHERE host = %s AND vm_state <> 'deleted' LIMIT 1",
                (host,)).fetchone():
            raise ApiError(409, "Unable to delete compute service that is hosting instances. "
                                "Migrate or delete the instances first.")
    _publish(app, "ServiceDeleted", host,
             dict(payloads.ServiceDeleted(host=host, binary=binary)),
             lambda: _service(app, host, binary) is None)
    return Response(status_code=204)
