"""Query endpoints: what Nova's API shows, read from the projection.

Members see their project's servers; admins see theirs, or every project's
with `all_tenants=1`; another project's server is a 404, as in Nova. A server
accepted a moment ago but not projected yet is shown as BUILD / scheduling
from the API's own record, so `openstack server create` can GET it at once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from psycopg.rows import class_row

from novalog import views
from novalog.domain import states
from novalog.domain.instance import instance_name
from novalog.timeparse import parse_moment
from novalog.tokens import Context
from novalog.views import Link, zulu
from novalog.web import (
    MAX_MICROVERSION,
    MIN_MICROVERSION,
    ApiError,
    Auth,
    dotted,
    public_base,
    require_admin,
    server_link,
    state_of,
)
from projections.history import ServerRow, StoredFault, as_row, cloud_as_of, server_as_of
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

SERVER_COLUMNS = ("uuid, name, project_id, user_id, status, vm_state, task_state, power_state, "
                  "host, node, availability_zone, flavor, image, addresses, key_name, metadata, "
                  "reservation_id, launch_index, created_at, updated_at, launched_at, fault, "
                  "(SELECT COALESCE(jsonb_agg(a.volume_id ORDER BY a.device), '[]') FROM "
                  "volume_attachments a WHERE a.instance_uuid = servers.uuid AND "
                  "a.attach_status <> 'reserved') AS volumes_attached, "
                  "(SELECT zone FROM services z WHERE z.host = servers.host AND "
                  "z.service_binary = 'nova-compute') AS host_zone, "
                  "COALESCE((state->>'config_drive')::boolean, false) AS config_drive, "
                  "COALESCE(state->'security_groups', '[]') AS security_groups")


class AcceptedRow(TypedDict):
    """An `accepted_instances` row: a request the API accepted (producers/admission.py)."""

    uuid: str
    project_id: str
    user_id: str
    name: str
    reservation_id: str
    vcpus: int
    memory_mb: int
    flavor: payloads.Flavor
    image_id: str | None
    request_id: str
    created_at: datetime
    delete_request_id: str | None
    delete_requested_at: datetime | None


class ActionRow(TypedDict):
    """An `instance_actions` row."""

    instance_uuid: str
    request_id: str
    action: str
    project_id: str
    user_id: str
    start_time: datetime
    finish_time: datetime | None
    message: str | None


class ActionEventRow(TypedDict):
    """An `instance_action_events` row."""

    instance_uuid: str
    request_id: str
    event: str
    attempt: int
    host: str | None
    start_time: datetime
    finish_time: datetime | None
    result: str | None
    details: str | None


def server_view(request: Request, row: ServerRow, ctx: Context) -> views.ServerView:
    """Nova's server representation (v2.1)."""
    host_id = hashlib.sha224((row["project_id"] + (row["host"] or "")).encode()).hexdigest() \
        if row["host"] else ""
    view: views.ServerView = {
        "id": row["uuid"], "name": row["name"], "status": row["status"],
        "tenant_id": row["project_id"], "user_id": row["user_id"],
        "metadata": row["metadata"], "hostId": host_id,
        "image": {"id": row["image"]["id"]} if row["image"] else "",
        "flavor": {"id": row["flavor"]["flavorid"]},
        "created": zulu(row["created_at"]), "updated": zulu(row["updated_at"]),
        "addresses": row["addresses"], "accessIPv4": "", "accessIPv6": "",
        "links": server_link(request, row["uuid"]),
        "OS-DCF:diskConfig": "MANUAL",
        # Nova's get_instance_availability_zone: the host's zone once placed, else the
        # zone asked for
        "OS-EXT-AZ:availability_zone": (row.get("host_zone") if row["host"] else None)
        or row["availability_zone"] or "",
        "config_drive": "True" if row.get("config_drive") else "",  # Nova's string
        "key_name": row["key_name"],
        "OS-SRV-USG:launched_at": zulu(row["launched_at"]),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:vm_state": row["vm_state"], "OS-EXT-STS:task_state": row["task_state"],
        "OS-EXT-STS:power_state": row["power_state"],
        "security_groups": [{"name": g} for g in row.get("security_groups") or ["default"]],
        "os-extended-volumes:volumes_attached": [
            {"id": v} for v in row.get("volumes_attached", [])],
    }
    if row["status"] in states.PROGRESS_STATUSES:
        view["progress"] = 0  # what libvirt's Nova shows: no driver step reports progress
    if ctx.is_admin:
        view["OS-EXT-SRV-ATTR:host"] = row["host"]
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row["node"]
        view["OS-EXT-SRV-ATTR:instance_name"] = instance_name(row["uuid"])
    fault = row["fault"]
    if fault and row["status"] in ("ERROR", "DELETED"):  # Nova's _fault_statuses
        view["fault"] = {"code": fault["code"], "message": fault["message"],
                         "created": fault.get("created")}
        details = fault.get("details")
        if details and (ctx.is_admin or fault["code"] != 500):  # Nova's rule
            view["fault"]["details"] = details
    return view


def _accepted_as_row(row: AcceptedRow) -> ServerRow:
    """A just-accepted request, shown as Nova shows a server still scheduling."""
    return {"uuid": row["uuid"], "name": row["name"], "project_id": row["project_id"],
            "user_id": row["user_id"], "status": "BUILD", "vm_state": states.BUILDING,
            "task_state": states.SCHEDULING, "power_state": states.NOSTATE, "host": None,
            "node": None, "availability_zone": None, "flavor": row["flavor"],
            "image": {"id": row["image_id"]} if row["image_id"] else None, "addresses": {},
            "key_name": None, "metadata": {}, "reservation_id": row["reservation_id"],
            "launch_index": 0, "created_at": row["created_at"],
            "updated_at": row["created_at"], "launched_at": None, "fault": None}


def _changes_since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Invalid input for query parameters changes-since. Value: "
                            f"{value}. '{value}' is not a 'date-time'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def list_rows(request: Request, ctx: Context) -> list[ServerRow]:
    params = request.query_params
    all_tenants = params.get("all_tenants", "0").lower() in ("", "1", "true", "t", "yes")
    if all_tenants:
        require_admin(ctx, "os_compute_api:servers:index:get_all_tenants")
    where: list[str] = []
    args: list[Any] = []
    if not all_tenants:
        where.append("project_id = %s")
        args.append(ctx.project_id)
    status = params.get("status", "").upper()
    if status == "DELETED" and not ctx.is_admin:
        raise ApiError(403, "Only administrators may list deleted instances")
    deleted = ctx.is_admin and (status == "DELETED" or
                                params.get("deleted", "").lower() in ("1", "true", "yes", "on"))
    if deleted:  # Nova's deleted=True: the deleted ones only
        where.append("vm_state = 'deleted'")
    elif not params.get("changes-since"):  # changes-since also shows the deleted, as Nova
        where.append("vm_state <> 'deleted'")
    if status and status != "DELETED":
        where.append("status = %s")
        args.append(status)
    if ctx.is_admin and params.get("host"):
        where.append("host = %s")
        args.append(params["host"])
    if params.get("reservation_id"):
        where.append("reservation_id = %s")
        args.append(params["reservation_id"])
    if params.get("changes-since"):  # Nova: servers updated at or after that moment
        where.append("updated_at >= %s")
        args.append(_changes_since(params["changes-since"]))
    query = f"SELECT {SERVER_COLUMNS} FROM servers"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY created_at DESC, uuid"
    with state_of(request).pool.connection() as conn, \
            conn.cursor(row_factory=class_row(ServerRow)) as cur:
        rows = cur.execute(query, args).fetchall()
    if params.get("name"):
        try:
            pattern = re.compile(params["name"])
        except re.error:
            raise ApiError(400, f"Invalid regular expression in name: {params['name']}") \
                from None
        rows = [r for r in rows if pattern.search(r["name"])]
    return rows


@router.get("", summary="Compute API version (microversions up to 2.1)")
def compute_version(request: Request) -> views.ComputeVersionDoc:
    base = public_base(request)
    return {"version": {"id": "v2.1", "status": "CURRENT", "version": dotted(MAX_MICROVERSION),
                        "min_version": dotted(MIN_MICROVERSION), "updated": "2013-07-23T11:33:21Z",
                        "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}]}}


MAX_LIMIT = 1000  # Nova's api.max_limit


def _page(request: Request, rows: list[ServerRow], path: str,
          ) -> tuple[list[ServerRow], list[Link]]:
    """Nova's paging: `marker` (the last id seen, 400 when unknown), `limit` (capped at
    max_limit), and a `next` link while a page is full."""
    params = request.query_params
    if params.get("marker"):
        at = next((i for i, r in enumerate(rows) if r["uuid"] == params["marker"]), None)
        if at is None:
            raise ApiError(400, f"marker [{params['marker']}] not found")
        rows = rows[at + 1:]
    try:
        limit = int(params.get("limit", MAX_LIMIT))
    except ValueError:
        raise ApiError(400, f"limit {params['limit']!r} is not an integer") from None
    if limit < 0:
        raise ApiError(400, "limit must be >= 0")
    page, links = rows[:min(limit, MAX_LIMIT)], list[Link]()
    if page and len(page) == min(limit, MAX_LIMIT) and len(rows) > len(page):
        query = {k: v for k, v in params.items() if k != "marker"}
        links.append({"rel": "next", "href": f"{public_base(request)}/compute/v2.1{path}?"
                      + urlencode({**query, "marker": page[-1]["uuid"]})})
    return page, links


@router.get("/servers", summary="List servers (id, name, links; ?name= is a regex)")
def list_servers(request: Request, ctx: Auth) -> views.ServerRefs:
    rows, links = _page(request, list_rows(request, ctx), "/servers")
    out: views.ServerRefs = {"servers": [{"id": r["uuid"], "name": r["name"],
                                          "links": server_link(request, r["uuid"])}
                                         for r in rows]}
    if links:
        out["servers_links"] = links
    return out


@router.get("/servers/detail", summary="List servers with details")
def list_servers_detail(request: Request, ctx: Auth) -> views.ServerList:
    rows, links = _page(request, list_rows(request, ctx), "/servers/detail")
    out: views.ServerList = {"servers": [server_view(request, r, ctx) for r in rows]}
    if links:
        out["servers_links"] = links
    return out


def find_server(request: Request, ctx: Context, server_id: str, *,
                deleted_ok: bool = False) -> ServerRow:
    """The server row, or 404 when it does not exist, belongs to another project, or is
    deleted (unless `deleted_ok`: its actions and history stay readable, as in Nova)."""
    with state_of(request).pool.connection() as conn:
        with conn.cursor(row_factory=class_row(ServerRow)) as cur:
            row = cur.execute(f"SELECT {SERVER_COLUMNS} FROM servers WHERE uuid = %s",
                              (server_id,)).fetchone()
        if row is None:
            with conn.cursor(row_factory=class_row(AcceptedRow)) as accepted_cur:
                accepted = accepted_cur.execute(
                    "SELECT * FROM accepted_instances WHERE uuid = %s", (server_id,)).fetchone()
            row = _accepted_as_row(accepted) if accepted else None
    if row is None or (row["project_id"] != ctx.project_id and not ctx.is_admin) or \
            (row["vm_state"] == states.DELETED and not deleted_ok):
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return row


@router.get("/servers/{server_id}", summary="Show one server",
            responses={404: {"description": "no such server in your project"}})
def show_server(server_id: str, request: Request, ctx: Auth) -> views.OneServer:
    return {"server": server_view(request, find_server(request, ctx, server_id), ctx)}


@router.get("/servers/{server_id}/os-instance-actions", summary="Actions on a server")
def instance_actions(server_id: str, request: Request, ctx: Auth) -> views.InstanceActions:
    find_server(request, ctx, server_id, deleted_ok=True)
    with state_of(request).pool.connection() as conn, \
            conn.cursor(row_factory=class_row(ActionRow)) as cur:
        rows = cur.execute("SELECT * FROM instance_actions WHERE instance_uuid = %s "
                           "ORDER BY start_time DESC", (server_id,)).fetchall()
    return {"instanceActions": [{
        "action": r["action"], "instance_uuid": r["instance_uuid"],
        "request_id": r["request_id"], "user_id": r["user_id"], "project_id": r["project_id"],
        "start_time": zulu(r["start_time"]), "message": r["message"]} for r in rows]}


@router.get("/servers/{server_id}/os-instance-actions/{request_id}",
            summary="One action with its per-step events")
def instance_action(server_id: str, request_id: str, request: Request,
                    ctx: Auth) -> views.OneInstanceAction:
    find_server(request, ctx, server_id, deleted_ok=True)
    with state_of(request).pool.connection() as conn:
        with conn.cursor(row_factory=class_row(ActionRow)) as cur:
            action = cur.execute("SELECT * FROM instance_actions WHERE instance_uuid = %s AND "
                                 "request_id = %s", (server_id, request_id)).fetchone()
        if action is None:
            raise ApiError(404, f"Action for request_id {request_id} on instance {server_id} "
                                "not found")
        with conn.cursor(row_factory=class_row(ActionEventRow)) as events_cur:
            events = events_cur.execute(
                "SELECT * FROM instance_action_events WHERE instance_uuid = %s "
                "AND request_id = %s ORDER BY start_time, attempt",
                (server_id, request_id)).fetchall()
    return {"instanceAction": {
        "action": action["action"], "instance_uuid": server_id, "request_id": request_id,
        "user_id": action["user_id"], "project_id": action["project_id"],
        "start_time": zulu(action["start_time"]), "message": action["message"],
        "events": [{"event": e["event"], "start_time": zulu(e["start_time"]),
                    "finish_time": zulu(e["finish_time"]), "result": e["result"],
                    "traceback": e["details"], "host": e["host"],
                    "hostId": hashlib.sha224((action["project_id"] + (e["host"] or ""))
                                             .encode()).hexdigest() if e["host"] else ""}
                   for e in events]}}


history_router = APIRouter(tags=["novalog"])


@history_router.get("/novalog/v1/servers/{server_id}/events",
                    summary="The server's events as projected, oldest first")
def server_events(server_id: str, request: Request, ctx: Auth,
                  after: int = 0) -> views.ServerEvents:
    """`after` = the last `seq` already seen, so a client can follow a build live."""
    find_server(request, ctx, server_id, deleted_ok=True)
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT seq, event_id, event_type, occurred_at, vm_state, task_state, producer, "
            "request_id, payload FROM instance_events WHERE instance_uuid = %s AND seq > %s "
            "ORDER BY seq", (server_id, after)).fetchall()
    return {"events": [{"seq": seq, "event_id": event_id, "event_type": event_type,
                        "occurred_at": occurred_at.isoformat(), "vm_state": vm_state,
                        "task_state": task_state, "producer": producer,
                        "request_id": request_id, "payload": payload}
                       for (seq, event_id, event_type, occurred_at, vm_state, task_state,
                            producer, request_id, payload) in rows]}


def _moment(as_of: str) -> datetime:
    try:
        return parse_moment(as_of)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@history_router.get("/novalog/v1/servers", summary="Servers now, or as of a past moment")
def servers_as_of(request: Request, ctx: Auth, as_of: str | None = None,
                  all_tenants: str = "0") -> views.ServerList:
    """`as_of`: ISO 8601 or relative (-5m). The answer is a fold of the events with
    occurred_at <= as_of, never broker timestamps."""
    if as_of is None:
        return list_servers_detail(request, ctx)
    everyone = ctx.is_admin and all_tenants.lower() in ("1", "true")
    with state_of(request).pool.connection() as conn:
        states = cloud_as_of(conn, _moment(as_of), None if everyone else ctx.project_id)
    return {"as_of": _moment(as_of).isoformat(),
            "servers": [server_view(request, as_row(s), ctx) for s in states]}


@history_router.get("/novalog/v1/servers/{server_id}",
                    summary="One server now, or as of a past moment",
                    responses={404: {"description": "no such server (then)"}})
def server_as_of_endpoint(server_id: str, request: Request, ctx: Auth,
                          as_of: str | None = None) -> views.OneServer:
    if as_of is None:
        return show_server(server_id, request, ctx)
    moment = _moment(as_of)
    with state_of(request).pool.connection() as conn:
        state = server_as_of(conn, server_id, moment)
    if state is None or (state.project_id != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"Instance {server_id} could not be found as of {zulu(moment)}.")
    return {"as_of": moment.isoformat(), "server": server_view(request, as_row(state), ctx)}


@history_router.get("/novalog/v1/servers/{server_id}/audit",
                    summary="The server's history straight from the instances topic")
def server_audit(server_id: str, request: Request, ctx: Auth) -> views.ServerAudit:
    from projections.audit import server_history

    find_server(request, ctx, server_id, deleted_ok=True)
    entries = server_history(state_of(request).settings, server_id)
    return {"server_id": server_id, "events": entries}


class RequestRow(TypedDict):
    """A server's action joined with the server (requests_since)."""

    request_id: str
    action: str
    start_time: datetime
    finish_time: datetime | None
    user_id: str
    project_id: str
    uuid: str
    name: str
    status: str
    fault: StoredFault | None
    host: str | None


@history_router.get("/novalog/v1/requests", summary="Every request since a moment, with outcome")
def requests_since(request: Request, ctx: Auth, since: str = "-1h") -> views.RequestsSince:
    """Outcome per server of each request: active, error (with the fault), or building."""
    moment = _moment(since)
    everyone = ctx.is_admin
    with state_of(request).pool.connection() as conn, \
            conn.cursor(row_factory=class_row(RequestRow)) as cur:
        rows = cur.execute(
            "SELECT a.request_id, a.action, a.start_time, a.finish_time, a.user_id, "
            "a.project_id, s.uuid, s.name, s.status, s.fault, s.host FROM instance_actions a "
            "JOIN servers s ON s.uuid = a.instance_uuid WHERE a.start_time >= %s AND "
            "(%s OR a.project_id = %s) ORDER BY a.start_time, s.name",
            (moment, everyone, ctx.project_id)).fetchall()
    now = datetime.now(UTC)
    out: list[views.RequestOutcome] = []
    for r in rows:
        outcome = {"ACTIVE": "active", "ERROR": "error"}.get(r["status"], "building")
        end = r["finish_time"] or now
        out.append({
            "request_id": r["request_id"], "action": r["action"], "server_id": r["uuid"],
            "server": r["name"], "project_id": r["project_id"], "user_id": r["user_id"],
            "started": r["start_time"].isoformat(), "outcome": outcome, "host": r["host"],
            "fault": r["fault"]["message"] if r["fault"] else None,
            "duration_s": round((end - r["start_time"]).total_seconds(), 3),
            "finished": r["finish_time"] is not None})
    return {"since": moment.isoformat(), "requests": out}
