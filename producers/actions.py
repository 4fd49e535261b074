"""What an operator does to a server after its boot: DELETE, reboot, stop and start.

Each action is accepted in one transaction: the API's own row of the instance is
locked and marked, and the action's event is queued in the outbox (published at
once, or by the relay after a crash). The API answers before anything is torn
down; the conductor decides where the action is carried out (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from psycopg import Connection

from novalog.domain import states
from novalog.domain.actions import refusal
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection, ServerState
from novalog.tokens import Context
from novalog.web import ApiError, AppState, Auth, state_of
from producers import outbox
from schemas import payloads

log = logging.getLogger(__name__)
router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


def new_request_id(response: Response) -> str:
    request_id = f"req-{uuid.uuid4()}"
    response.headers["X-Openstack-Request-Id"] = request_id
    return request_id


def _locked(conn: Connection[Any], app: AppState, ctx: Context,
            server_id: str) -> tuple[tuple[str, str, str | None], ServerState | None]:
    """The API's row of the instance, locked for the request's transaction (project, user,
    a pending DELETE's request id), and its projected state (None while not projected);
    404 for another project's server or a deleted one."""
    row = conn.execute("SELECT project_id, user_id, delete_request_id FROM accepted_instances "
                       "WHERE uuid = %s FOR UPDATE", (server_id,)).fetchone()
    if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"Instance {server_id} could not be found.")
    server = LiveProjection(app.pool, app.settings.db_schema).server(server_id)
    if server is not None and server.vm_state == states.DELETED:
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return (row[0], row[1], row[2]), server


@router.delete("/servers/{server_id}", status_code=204, response_class=Response,
               summary="Delete a server, from any state (Nova's delete)",
               responses={404: {"description": "no such server in your project"}})
def delete_server(server_id: str, request: Request, ctx: Auth, response: Response) -> Response:
    app = state_of(request)
    request_id = new_request_id(response)
    answer = Response(status_code=204, headers=dict(response.headers))
    with app.pool.connection() as conn, conn.transaction():
        (project_id, user_id, pending), server = _locked(conn, app, ctx, server_id)
        if pending is not None:  # Nova: "already in deleting state", nothing new
            log.info("instance %s is already being deleted (%s)", server_id, pending)
            return answer
        conn.execute("UPDATE accepted_instances SET delete_request_id = %s, "
                     "delete_requested_at = %s WHERE uuid = %s",
                     (request_id, datetime.now(UTC), server_id))
        event = Publisher(app.producer, "api", app.settings.hostname).build(
            "InstanceDeleteRequested", server_id, payloads.InstanceDeleteRequested(
                project_id=project_id, user_id=user_id,
                host=server.host if server else None),
            correlation_id=request_id)
        outbox.add(conn, Topics(app.settings.topic_prefix).instances, event)
    outbox.publish_accepted(app.pool, app.producer, [event.event_id], f"delete {request_id}")
    return answer


# POST /servers/{id}/action: the body's one key, and what it asks for.
ACTIONS = {"reboot": "reboot", "os-stop": "stop", "os-start": "start"}


def _action_of(body: dict[str, Any]) -> tuple[str, str | None]:
    """(rule name, reboot type) of the body, or 400 as Nova words it."""
    if len(body) != 1:
        raise ApiError(400, "Malformed request body: one action per request")
    key, value = next(iter(body.items()))
    if key not in ACTIONS:
        raise ApiError(400, f"There is no such action: {key}")
    if key != "reboot":
        return ACTIONS[key], None
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
        raise ApiError(400, "Invalid input for field/attribute type. Value: "
                            f"{kind}. '{kind}' is not one of ['SOFT', 'HARD']")
    return ("reboot_hard" if kind.upper() == "HARD" else "reboot"), kind.upper()


@router.post("/servers/{server_id}/action", status_code=202, response_class=Response,
             summary="reboot (SOFT / HARD), os-stop, os-start",
             responses={400: {"description": "not an action novalog knows"},
                        404: {"description": "no such server in your project"},
                        409: {"description": "not allowed from the server's state"}})
def server_action(server_id: str, request: Request, ctx: Auth, response: Response,
                  body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    rule, reboot_type = _action_of(body)
    app = state_of(request)
    request_id = new_request_id(response)
    answer = Response(status_code=202, headers=dict(response.headers))
    with app.pool.connection() as conn, conn.transaction():
        (_, _, pending), server = _locked(conn, app, ctx, server_id)
        if server is None:  # accepted, not projected yet: still building
            raise ApiError(409, f"Cannot '{rule.removesuffix('_hard')}' instance {server_id} "
                                f"while it is in vm_state {states.BUILDING}")
        task = states.DELETING if pending is not None else server.task_state
        if rule in ("stop", "start") and server.host is None:
            raise ApiError(409, f"Instance {server_id} is not ready")
        refused = refusal(rule, server_id, server.vm_state, task, server.launched)
        if refused:
            raise ApiError(409, refused)
        pub = Publisher(app.producer, "api", app.settings.hostname)
        if reboot_type is not None:
            event = pub.build("InstanceRebootRequested", server_id,
                              payloads.InstanceRebootRequested(type=reboot_type),
                              correlation_id=request_id)
        else:
            kind = "InstanceStopRequested" if rule == "stop" else "InstanceStartRequested"
            event = pub.build(kind, server_id, {}, correlation_id=request_id)
        outbox.add(conn, Topics(app.settings.topic_prefix).instances, event)
    outbox.publish_accepted(app.pool, app.producer, [event.event_id], f"{rule} {request_id}")
    return answer
