"""Query endpoints: what Nova's API shows, read from the projection.

Members see their project's servers; admins see theirs, or every project's
with `all_tenants=1`; another project's server is a 404, as in Nova. A server
accepted a moment ago but not projected yet is shown as BUILD / scheduling
from the API's own record, so `openstack server create` can GET it at once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import psycopg
from fastapi import APIRouter, Request
from psycopg import Connection
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from novalog import views
from novalog.domain import states
from novalog.service import CONTROL_PLANE, service_id
from novalog.settings import Settings
from novalog.timeparse import parse_moment
from novalog.tokens import Context
from novalog.web import ApiError, Auth, server_link, state_of
from projections.history import ServerRow, StoredFault, as_row, cloud_as_of, server_as_of
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

SERVER_COLUMNS = ("uuid, name, project_id, user_id, status, vm_state, task_state, power_state, "
                  "host, node, availability_zone, flavor, image, addresses, key_name, metadata, "
                  "reservation_id, launch_index, created_at, updated_at, launched_at, fault")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


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
        "created": _iso(row["created_at"]), "updated": _iso(row["updated_at"]),
        "addresses": row["addresses"], "accessIPv4": "", "accessIPv6": "",
        "links": server_link(request, row["uuid"]),
        "OS-DCF:diskConfig": "MANUAL", "progress": 100 if row["status"] == "ACTIVE" else 0,
        "OS-EXT-AZ:availability_zone": row["availability_zone"] or "nova",
        "config_drive": "", "key_name": row["key_name"],
        "OS-SRV-USG:launched_at": _iso(row["launched_at"]),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:vm_state": row["vm_state"], "OS-EXT-STS:task_state": row["task_state"],
        "OS-EXT-STS:power_state": row["power_state"],
        "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": [],
    }
    if ctx.is_admin:
        view["OS-EXT-SRV-ATTR:host"] = row["host"]
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row["node"]
        view["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{row['uuid']}"
    fault = row["fault"]
    if fault and row["status"] in ("ERROR", "DELETED"):  # Nova's _fault_statuses
        view["fault"] = {"code": fault["code"], "message": fault["message"],
                         "created": fault.get("created")}
        details = fault.get("details")
        if ctx.is_admin and details:
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
    all_tenants = ctx.is_admin and params.get("all_tenants", "0").lower() in ("1", "true")
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
    base = str(request.base_url).rstrip("/")
    return {"version": {"id": "v2.1", "status": "CURRENT", "version": "2.1",
                        "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                        "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}]}}


@router.get("/servers", summary="List servers (id, name, links)")
def list_servers(request: Request, ctx: Auth) -> views.ServerRefs:
    return {"servers": [{"id": r["uuid"], "name": r["name"],
                         "links": server_link(request, r["uuid"])}
                        for r in list_rows(request, ctx)]}


@router.get("/servers/detail", summary="List servers with details")
def list_servers_detail(request: Request, ctx: Auth) -> views.ServerList:
    return {"servers": [server_view(request, r, ctx) for r in list_rows(request, ctx)]}


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
        "start_time": _iso(r["start_time"]), "message": r["message"]} for r in rows]}


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
        "start_time": _iso(action["start_time"]), "message": action["message"],
        "events": [{"event": e["event"], "start_time": _iso(e["start_time"]),
                    "finish_time": _iso(e["finish_time"]), "result": e["result"],
                    "traceback": e["details"], "host": e["host"],
                    "hostId": hashlib.sha224((action["project_id"] + (e["host"] or ""))
                                             .encode()).hexdigest() if e["host"] else ""}
                   for e in events]}}


FLAVOR_COLUMNS = "flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb, swap_mb, is_public"


def flavor_view(request: Request, r: tuple[Any, ...], detail: bool) -> views.FlavorView:
    base = str(request.base_url).rstrip("/")
    view: views.FlavorView = {"id": r[0], "name": r[1], "links": [
        {"rel": "self", "href": f"{base}/compute/v2.1/flavors/{r[0]}"}]}
    if detail:
        view.update({"vcpus": r[2], "ram": r[3], "disk": r[4],
                     "OS-FLV-EXT-DATA:ephemeral": r[5], "swap": r[6] or "",
                     "os-flavor-access:is_public": r[7], "rxtx_factor": 1.0,
                     "OS-FLV-DISABLED:disabled": False})
    return view


def _flavors(request: Request, detail: bool) -> views.Flavors:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(f"SELECT {FLAVOR_COLUMNS} FROM flavors ORDER BY memory_mb, flavorid"
                            ).fetchall()
    return {"flavors": [flavor_view(request, r, detail) for r in rows]}


@router.get("/flavors", summary="List flavors")
def list_flavors(request: Request, _ctx: Auth) -> views.Flavors:
    return _flavors(request, detail=False)


@router.get("/flavors/detail", summary="List flavors with details")
def list_flavors_detail(request: Request, _ctx: Auth) -> views.Flavors:
    return _flavors(request, detail=True)


@router.get("/flavors/{flavor_id}", summary="Show a flavor")
def show_flavor(flavor_id: str, request: Request, _ctx: Auth) -> views.OneFlavor:
    with state_of(request).pool.connection() as conn:
        row = conn.execute(f"SELECT {FLAVOR_COLUMNS} FROM flavors WHERE flavorid = %s",
                           (flavor_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return {"flavor": flavor_view(request, row, True)}


def service_rows(conn: Connection[Any], down_time: timedelta, *, host: str | None = None,
                 binary: str | None = None) -> list[views.ServiceView]:
    """Every service with Nova's up / down: the last heartbeat within `down_time`."""
    now = datetime.now(UTC)
    rows = conn.execute(
        "SELECT host, service_binary, zone, disabled, disabled_reason, last_heartbeat, "
        "updated_at FROM services WHERE (%(host)s::text IS NULL OR host = %(host)s) AND "
        "(%(binary)s::text IS NULL OR service_binary = %(binary)s) "
        "ORDER BY service_binary <> 'nova-compute', host, service_binary",
        {"host": host, "binary": binary}).fetchall()
    return [{
        "id": service_id(r[0], r[1]), "binary": r[1], "host": r[0], "zone": r[2],
        "status": "disabled" if r[3] else "enabled", "disabled_reason": r[4],
        "state": "up" if r[5] and now - r[5] <= down_time else "down",
        "updated_at": _iso(r[6]), "forced_down": False} for r in rows]


def services_health(pool: ConnectionPool, settings: Settings) -> str:
    """"ok" while every control-plane binary that ever registered has a service up (a
    replica down beside one up is not an outage); compute hosts are counted, not judged."""
    down_time = timedelta(seconds=settings.service_down_time_s)
    try:
        with pool.connection() as conn:
            rows = service_rows(conn, down_time)
    except psycopg.Error as exc:
        return f"services unknown: {type(exc).__name__}"
    up: dict[str, int] = {}
    for row in rows:
        up[row["binary"]] = up.get(row["binary"], 0) + (row["state"] == "up")
    dead = [binary for binary, count in up.items()
            if binary in CONTROL_PLANE and count == 0]
    computes = [r for r in rows if r["binary"] == "nova-compute"]
    summary = (f"{sum(1 for r in rows if r['state'] == 'up')} of {len(rows)} up; "
               f"compute {sum(1 for r in computes if r['state'] == 'up')} of {len(computes)}")
    return f"down: {', '.join(sorted(dead))} ({summary})" if dead else f"ok ({summary})"


@router.get("/os-services", summary="Every service, up or down by heartbeat age")
def list_services(request: Request, _ctx: Auth, host: str | None = None,
                  binary: str | None = None) -> views.Services:
    state = state_of(request)
    down_time = timedelta(seconds=state.settings.service_down_time_s)
    with state.pool.connection() as conn:
        return {"services": service_rows(conn, down_time, host=host, binary=binary)}


@router.get("/os-hosts", summary="Every host with its services (Nova's os-hosts, up to 2.43)")
def list_hosts(request: Request, _ctx: Auth, zone: str | None = None) -> views.Hosts:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute("SELECT host, service_binary, zone FROM services WHERE "
                            "%(zone)s::text IS NULL OR zone = %(zone)s "
                            "ORDER BY host, service_binary", {"zone": zone}).fetchall()
    return {"hosts": [{"host_name": host, "service": binary.removeprefix("nova-"),
                       "zone": zone} for host, binary, zone in rows]}


@router.get("/os-hosts/{host}", summary="A compute host's resources: total, used now, "
                                        "and per project (admin)")
def show_host(host: str, request: Request, ctx: Auth) -> views.HostDetail:
    if not ctx.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:os-hosts:show to be "
                            "performed.")
    with state_of(request).pool.connection() as conn:
        node = conn.execute("SELECT vcpus, memory_mb, local_gb, vcpus_used, memory_mb_used, "
                            "local_gb_used FROM compute_nodes WHERE host = %s",
                            (host,)).fetchone()
        if node is None:
            raise ApiError(404, f"Compute host {host} could not be found.")
        projects = conn.execute(
            "SELECT project_id, SUM((flavor->>'vcpus')::int), SUM((flavor->>'memory_mb')::int),"
            " SUM((flavor->>'root_gb')::int + (flavor->>'ephemeral_gb')::int) FROM servers "
            "WHERE host = %s AND vm_state <> 'deleted' GROUP BY project_id ORDER BY project_id",
            (host,)).fetchall()
    used_max = [sum(int(p[i] or 0) for p in projects) for i in (1, 2, 3)]
    rows = [("(total)", node[0], node[1], node[2]), ("(used_now)", node[3], node[4], node[5]),
            ("(used_max)", *used_max), *projects]
    return {"host": [{"resource": {"host": host, "project": str(r[0]), "cpu": int(r[1] or 0),
                                   "memory_mb": int(r[2] or 0), "disk_gb": int(r[3] or 0)}}
                     for r in rows]}


def _flavor_number(flavorid: str) -> int | str:
    """Nova answers the flavor's integer id; novalog's flavor ids are those numbers (an
    admin's flavor with another id is answered as it is)."""
    return int(flavorid) if flavorid.isdigit() else flavorid


def migration_number(migration_id: str) -> int:
    """Nova's integer id, derived from the conductor's migration uuid (stable on replay)."""
    return int(migration_id.replace("-", "")[:12], 16)


@router.get("/os-migrations", summary="Every move of an instance (admin)")
def list_migrations(request: Request, ctx: Auth, host: str | None = None,
                    status: str | None = None, instance_uuid: str | None = None,
                    migration_type: str | None = None,
                    source_compute: str | None = None) -> views.Migrations:
    if not ctx.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:os-migrations:index to be "
                            "performed.")
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT m.migration_id, m.instance_uuid, m.migration_type, m.status, "
            "m.source_compute, m.source_node, m.dest_compute, m.dest_node, c.host_ip, "
            "m.old_flavor_id, m.new_flavor_id, m.created_at, m.updated_at FROM migrations m "
            "LEFT JOIN compute_nodes c ON c.host = m.dest_compute WHERE "
            "(%(host)s::text IS NULL OR %(host)s IN (m.source_compute, m.dest_compute)) AND "
            "(%(status)s::text IS NULL OR m.status = %(status)s) AND "
            "(%(uuid)s::text IS NULL OR m.instance_uuid = %(uuid)s) AND "
            "(%(type)s::text IS NULL OR m.migration_type = %(type)s) AND "
            "(%(source)s::text IS NULL OR m.source_compute = %(source)s) "
            "ORDER BY m.created_at DESC, m.migration_id",
            {"host": host, "status": status, "uuid": instance_uuid, "type": migration_type,
             "source": source_compute}).fetchall()
    return {"migrations": [{
        "id": migration_number(r[0]), "instance_uuid": r[1], "migration_type": r[2],
        "status": r[3], "source_compute": r[4], "source_node": r[5], "dest_compute": r[6],
        "dest_node": r[7], "dest_host": r[8], "old_instance_type_id": _flavor_number(r[9]),
        "new_instance_type_id": _flavor_number(r[10]), "created_at": _iso(r[11]),
        "updated_at": _iso(r[12]),
    } for r in rows]}


@router.get("/os-hypervisors/detail", summary="Compute nodes with their usage")
def list_hypervisors(request: Request, _ctx: Auth) -> views.Hypervisors:
    state = state_of(request)
    since = datetime.now(UTC) - timedelta(seconds=state.settings.service_down_time_s)
    with state.pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.host, c.node, c.hypervisor_type, c.host_ip, c.vcpus, c.memory_mb, "
            "c.local_gb, c.vcpus_used, c.memory_mb_used, c.local_gb_used, c.running_vms, "
            "s.disabled, s.last_heartbeat >= %s FROM compute_nodes c LEFT JOIN services s "
            "ON s.host = c.host AND s.service_binary = 'nova-compute' ORDER BY c.host",
            (since,)).fetchall()
    return {"hypervisors": [{
        "id": i + 1, "hypervisor_hostname": r[1], "hypervisor_type": r[2], "host_ip": r[3],
        "state": "up" if r[12] else "down", "status": "disabled" if r[11] else "enabled",
        "vcpus": r[4], "memory_mb": r[5], "local_gb": r[6], "vcpus_used": r[7],
        "memory_mb_used": r[8], "local_gb_used": r[9], "running_vms": r[10],
        "service": {"host": r[0]}} for i, r in enumerate(rows)]}


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
        raise ApiError(404, f"Instance {server_id} could not be found as of {_iso(moment)}.")
    return {"as_of": moment.isoformat(), "server": server_view(request, as_row(state), ctx)}


@history_router.get("/image/v2/images", summary="Glance: list images (?name=)")
def list_images(request: Request, _ctx: Auth, name: str | None = None) -> views.Images:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT image_id, name, status, disk_format, size, min_disk, min_ram, checksum "
            "FROM images WHERE %s::text IS NULL OR name = %s ORDER BY name",
            (name, name)).fetchall()
    return {"images": [{"id": image_id, "name": image_name, "status": status,
                        "disk_format": disk_format, "size": size, "min_disk": min_disk,
                        "min_ram": min_ram, "checksum": checksum}
                       for (image_id, image_name, status, disk_format, size, min_disk, min_ram,
                            checksum) in rows]}


@history_router.get("/networking/v2.0/networks", summary="Neutron: list networks (?name=)")
def list_networks(request: Request, _ctx: Auth, name: str | None = None) -> views.Networks:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT network_id, name, cidr FROM networks WHERE %s::text IS NULL OR name = %s "
            "ORDER BY name", (name, name)).fetchall()
    return {"networks": [{"id": r[0], "name": r[1], "subnets": [], "cidr": r[2],
                          "status": "ACTIVE"} for r in rows]}


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
