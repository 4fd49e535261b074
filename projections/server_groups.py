"""os-server-groups, the reading half, from the projection.

A group is its project's (an admin sees every project's with all_projects). Nova
2.1's shape: `policies` (one) and the live `members`, the servers booted with the
scheduler hint `group` that are not deleted (read from their InstanceBuildRequested).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from psycopg import Connection
from typing_extensions import TypedDict

from novalog.tokens import Context
from novalog.views import ServerGroupView
from novalog.web import ApiError, Auth, state_of

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


class ServerGroups(TypedDict):
    server_groups: list[ServerGroupView]


class OneServerGroup(TypedDict):
    server_group: ServerGroupView


MEMBERS_SQL = """SELECT e.payload->'scheduler_hints'->'group'->>0, s.uuid
    FROM instance_events e JOIN servers s ON s.uuid = e.instance_uuid
    WHERE e.event_type = 'InstanceBuildRequested' AND s.vm_state <> 'deleted'
    AND e.payload->'scheduler_hints'->'group'->>0 = ANY(%s) ORDER BY s.created_at, s.uuid"""


def server_groups(conn: Connection[Any], ctx: Context, *, everyone: bool = False,
                  group_id: str | None = None) -> list[ServerGroupView]:
    rows = conn.execute(
        "SELECT group_id, name, policy, project_id, user_id FROM server_groups WHERE "
        "(%(everyone)s OR project_id = %(project)s) AND "
        "(%(group)s::text IS NULL OR group_id = %(group)s) ORDER BY name, group_id",
        {"everyone": everyone, "project": ctx.project_id, "group": group_id}).fetchall()
    members: dict[str, list[str]] = {}
    for group, server in conn.execute(MEMBERS_SQL, ([r[0] for r in rows],)).fetchall():
        members.setdefault(group, []).append(server)
    return [{"id": r[0], "name": r[1], "policies": [r[2]], "members": members.get(r[0], []),
             "metadata": {}, "project_id": r[3], "user_id": r[4]} for r in rows]


@router.get("/os-server-groups", summary="The project's server groups (?all_projects: admin)")
def list_server_groups(request: Request, ctx: Auth, all_projects: str = "false",
                       ) -> ServerGroups:
    everyone = all_projects.lower() in ("1", "true", "yes", "") and ctx.is_admin
    with state_of(request).pool.connection() as conn:
        return {"server_groups": server_groups(conn, ctx, everyone=everyone)}


@router.get("/os-server-groups/{group_id}", summary="One server group with its members",
            responses={404: {"description": "no such group in your project"}})
def show_server_group(group_id: str, request: Request, ctx: Auth) -> OneServerGroup:
    with state_of(request).pool.connection() as conn:
        found = server_groups(conn, ctx, everyone=ctx.is_admin, group_id=group_id)
    if not found:
        raise ApiError(404, f"Instance group {group_id} could not be found.")
    return {"server_group": found[0]}
