"""The operator's views of the hosts: os-services, os-hosts, os-hypervisors, os-migrations.

Up or down is Nova's rule: the last heartbeat within service_down_time. Like
Nova's default policy, these are for admins (403 otherwise), and so is /healthz's
detail (`services_health`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
from fastapi import APIRouter, Request
from psycopg import Connection
from psycopg_pool import ConnectionPool

from novalog import views
from novalog.service import CONTROL_PLANE, service_id
from novalog.settings import Settings
from novalog.views import zulu
from novalog.web import ApiError, Auth, digits, require_admin, state_of

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


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
        "updated_at": zulu(r[6]), "forced_down": False} for r in rows]


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
def list_services(request: Request, ctx: Auth, host: str | None = None,
                  binary: str | None = None) -> views.Services:
    require_admin(ctx, "os_compute_api:os-services:list")
    state = state_of(request)
    down_time = timedelta(seconds=state.settings.service_down_time_s)
    with state.pool.connection() as conn:
        return {"services": service_rows(conn, down_time, host=host, binary=binary)}


@router.get("/os-hosts", summary="Every host with its services (Nova's os-hosts, up to 2.43)")
def list_hosts(request: Request, ctx: Auth, zone: str | None = None) -> views.Hosts:
    require_admin(ctx, "os_compute_api:os-hosts:list")
    with state_of(request).pool.connection() as conn:
        rows = conn.execute("SELECT host, service_binary, zone FROM services WHERE "
                            "%(zone)s::text IS NULL OR zone = %(zone)s "
                            "ORDER BY host, service_binary", {"zone": zone}).fetchall()
    return {"hosts": [{"host_name": host, "service": binary.removeprefix("nova-"),
                       "zone": zone} for host, binary, zone in rows]}


@router.get("/os-hosts/{host}", summary="A compute host's resources: total, used now, "
                                        "and per project (admin)")
def show_host(host: str, request: Request, ctx: Auth) -> views.HostDetail:
    require_admin(ctx, "os_compute_api:os-hosts:show")
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
    return int(flavorid) if digits(flavorid) else flavorid


def migration_number(migration_id: str) -> int:
    """Nova's integer id, derived from the conductor's migration uuid (stable on replay)."""
    return int(migration_id.replace("-", "")[:12], 16)


@router.get("/os-migrations", summary="Every move of an instance (admin)")
def list_migrations(request: Request, ctx: Auth, host: str | None = None,
                    status: str | None = None, instance_uuid: str | None = None,
                    migration_type: str | None = None,
                    source_compute: str | None = None) -> views.Migrations:
    require_admin(ctx, "os_compute_api:os-migrations:index")
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
        "new_instance_type_id": _flavor_number(r[10]), "created_at": zulu(r[11]),
        "updated_at": zulu(r[12]),
    } for r in rows]}


def _hypervisors(request: Request) -> list[views.HypervisorView]:
    """Every compute node; its id is its nova-compute service's (stable across replays)."""
    state = state_of(request)
    since = datetime.now(UTC) - timedelta(seconds=state.settings.service_down_time_s)
    with state.pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.host, c.node, c.hypervisor_type, c.host_ip, c.vcpus, c.memory_mb, "
            "c.local_gb, c.vcpus_used, c.memory_mb_used, c.local_gb_used, c.running_vms, "
            "s.disabled, s.last_heartbeat >= %s FROM compute_nodes c LEFT JOIN services s "
            "ON s.host = c.host AND s.service_binary = 'nova-compute' ORDER BY c.host",
            (since,)).fetchall()
    return [{
        "id": service_id(r[0], "nova-compute"), "hypervisor_hostname": r[1],
        "hypervisor_type": r[2], "host_ip": r[3],
        "state": "up" if r[12] else "down", "status": "disabled" if r[11] else "enabled",
        "vcpus": r[4], "memory_mb": r[5], "local_gb": r[6], "vcpus_used": r[7],
        "memory_mb_used": r[8], "local_gb_used": r[9], "running_vms": r[10],
        "free_ram_mb": r[5] - r[8], "free_disk_gb": r[6] - r[9],
        "service": {"host": r[0], "id": service_id(r[0], "nova-compute")}} for r in rows]


@router.get("/os-hypervisors", summary="Compute nodes (id, hostname, state, status; admin)")
def list_hypervisors(request: Request, ctx: Auth) -> views.HypervisorRefs:
    require_admin(ctx, "os_compute_api:os-hypervisors:list")
    return {"hypervisors": [{"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"],
                             "state": h["state"], "status": h["status"]}
                            for h in _hypervisors(request)]}


@router.get("/os-hypervisors/detail", summary="Compute nodes with their usage (admin)")
def list_hypervisors_detail(request: Request, ctx: Auth) -> views.Hypervisors:
    require_admin(ctx, "os_compute_api:os-hypervisors:list-detail")
    return {"hypervisors": _hypervisors(request)}


@router.get("/os-hypervisors/statistics", summary="The nodes' totals (admin; Nova < 2.88)")
def hypervisor_statistics(request: Request, ctx: Auth) -> views.HypervisorStatistics:
    require_admin(ctx, "os_compute_api:os-hypervisors:statistics")
    nodes = _hypervisors(request)

    def total(key: str) -> int:
        return sum(int(cast(dict[str, Any], h)[key]) for h in nodes)

    return {"hypervisor_statistics": {
        "count": len(nodes), "vcpus": total("vcpus"), "memory_mb": total("memory_mb"),
        "local_gb": total("local_gb"), "vcpus_used": total("vcpus_used"),
        "memory_mb_used": total("memory_mb_used"), "local_gb_used": total("local_gb_used"),
        "running_vms": total("running_vms"), "free_ram_mb": total("free_ram_mb"),
        "free_disk_gb": total("free_disk_gb"), "current_workload": 0,
        "disk_available_least": total("free_disk_gb")}}


@router.get("/os-hypervisors/{hypervisor_id}", summary="One compute node (admin)",
            responses={404: {"description": "no such hypervisor id"}})
def show_hypervisor(hypervisor_id: str, request: Request, ctx: Auth) -> views.OneHypervisor:
    require_admin(ctx, "os_compute_api:os-hypervisors:show")
    found = [h for h in _hypervisors(request) if str(h["id"]) == hypervisor_id]
    if not found:
        raise ApiError(404, f"Hypervisor with ID '{hypervisor_id}' could not be found.")
    return {"hypervisor": found[0]}


@router.get("/os-aggregates", summary="Host aggregates: novalog has none (admin)")
def list_aggregates(ctx: Auth) -> dict[str, list[dict[str, str]]]:
    """Every host is in the one zone `nova`, with no aggregate; the clients ask for the
    list when they show a hypervisor."""
    require_admin(ctx, "os_compute_api:os-aggregates:index")
    return {"aggregates": []}


@router.get("/os-hypervisors/{hypervisor_id}/uptime", summary="Not reported (501, as Nova's "
            "drivers without it)", status_code=501, responses={501: {"description": "always"}})
def hypervisor_uptime(hypervisor_id: str, request: Request, ctx: Auth) -> None:
    """The compute agents do not report their hosts' uptime, so this is Nova's answer for
    a driver that cannot: 501. The clients then show the hypervisor without it."""
    show_hypervisor(hypervisor_id, request, ctx)  # 403 / 404 first
    raise ApiError(501, "Virt driver does not implement host uptime.")
