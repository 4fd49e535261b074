"""os-server-groups, the writing half: create and delete (ServerGroupCreated / ...Deleted).

A group's policy is what the scheduler applies to the servers booted with the hint
`group`: affinity and anti-affinity as filters, soft-affinity and soft-anti-affinity
as weighers (consumers/scheduler). Nova accepts the soft policies from microversion
2.15; novalog accepts them at 2.1 too, since they change no response shape
(docs/decisions.md). At most 10 groups per project: Nova's quota.server_groups.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from novalog.views import ServerGroupView
from novalog.web import ApiError, Auth, state_of
from producers import facts
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

SERVER_GROUPS_QUOTA = 10  # Nova's default quota.server_groups, per project
Policy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


class ServerGroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    policies: list[Policy] = Field(min_length=1, max_length=1)


class ServerGroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server_group: ServerGroupCreate


class CreatedGroupView(TypedDict):
    server_group: ServerGroupView


def _exists(conn: Connection[Any], group_id: str) -> bool:
    return conn.execute("SELECT 1 FROM server_groups WHERE group_id = %s",
                        (group_id,)).fetchone() is not None


@router.post("/os-server-groups", summary="Create a server group (one policy)",
             responses={403: {"description": "over the server_groups quota"}})
def create_server_group(body: ServerGroupBody, request: Request,
                        ctx: Auth) -> CreatedGroupView:
    group = body.server_group
    if not group.name.strip():
        raise ApiError(400, "Invalid input for field/attribute name. It must not be blank.")
    app = state_of(request)
    group_id = str(uuid.uuid4())
    with facts.owner_lock(app, ctx.project_id) as conn:
        row = conn.execute("SELECT count(*) FROM server_groups WHERE project_id = %s",
                           (ctx.project_id,)).fetchone()
        if row is not None and row[0] >= SERVER_GROUPS_QUOTA:
            raise ApiError(403, "Quota exceeded, too many server groups.")
        facts.publish(app, [("ServerGroupCreated", group_id, payloads.ServerGroupCreated(
            group_id=group_id, name=group.name, policy=group.policies[0],
            project_id=ctx.project_id, user_id=ctx.user_id))],
            lambda c: _exists(c, group_id), conn)
    return {"server_group": {"id": group_id, "name": group.name,
                             "policies": list(group.policies), "members": [], "metadata": {},
                             "project_id": ctx.project_id, "user_id": ctx.user_id}}


@router.delete("/os-server-groups/{group_id}", status_code=204, response_class=Response,
               summary="Delete a server group (its members stay where they are)",
               responses={404: {"description": "no such group in your project"}})
def delete_server_group(group_id: str, request: Request, ctx: Auth) -> Response:
    app = state_of(request)
    with app.pool.connection() as conn:
        row = conn.execute("SELECT project_id FROM server_groups WHERE group_id = %s",
                           (group_id,)).fetchone()
    if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"Instance group {group_id} could not be found.")
    facts.publish(app, [("ServerGroupDeleted", group_id, payloads.ServerGroupDeleted(
        group_id=group_id, project_id=row[0]))], lambda c: not _exists(c, group_id))
    return Response(status_code=204)
