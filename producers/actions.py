"""What an operator does to a server after its boot, starting with DELETE /servers/{id}.

Each action is accepted in one transaction: the API's own row of the instance is
locked and marked, and the action's event is queued in the outbox (published at
once, or by the relay after a crash). The API answers before anything is torn
down; the conductor decides where the action is carried out (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from novalog.domain import states
from novalog.faults import crash_point
from novalog.kafka import DeliveryError, Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from novalog.web import ApiError, Auth, state_of
from producers import outbox
from schemas import payloads

log = logging.getLogger(__name__)
router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


def new_request_id(response: Response) -> str:
    request_id = f"req-{uuid.uuid4()}"
    response.headers["X-Openstack-Request-Id"] = request_id
    return request_id


@router.delete("/servers/{server_id}", status_code=204, response_class=Response,
               summary="Delete a server, from any state (Nova's delete)",
               responses={404: {"description": "no such server in your project"}})
def delete_server(server_id: str, request: Request, ctx: Auth, response: Response) -> Response:
    app = state_of(request)
    request_id = new_request_id(response)
    answer = Response(status_code=204, headers=dict(response.headers))
    projection = LiveProjection(app.pool, app.settings.db_schema)
    with app.pool.connection() as conn, conn.transaction():
        row = conn.execute("SELECT project_id, user_id, delete_request_id FROM "
                           "accepted_instances WHERE uuid = %s FOR UPDATE",
                           (server_id,)).fetchone()
        if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
            raise ApiError(404, f"Instance {server_id} could not be found.")
        project_id, user_id, pending = row
        server = projection.server(server_id)
        if server is not None and server.vm_state == states.DELETED:
            raise ApiError(404, f"Instance {server_id} could not be found.")
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
    crash_point("api.after_commit")
    try:
        outbox.publish(app.pool, app.producer, [event.event_id])
    except DeliveryError as exc:  # accepted all the same: the outbox relay publishes it
        log.warning("delete %s accepted, publishing deferred to the relay: %s", request_id, exc)
    return answer
