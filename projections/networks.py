"""Neutron v2.0, the reading half: networks, their one subnet each, and the ports.

novalog's network role (consumers/network) allocates an address per server and
network; those allocations are the ports, read from the servers' folded state. A
network here has exactly one IPv4 subnet, whose id is derived from the network's.
A member sees shared networks and its own project's, and only its own ports.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from psycopg.rows import dict_row
from typing_extensions import TypedDict

from novalog.tokens import Context
from novalog.views import Link, SubnetView, network_view, subnet_id, subnet_view
from novalog.web import ApiError, Auth, public_base, state_of

router = APIRouter(prefix="/networking", tags=["network"])


class NetworkVersion(TypedDict):
    id: str
    status: str
    links: list[Link]


class NetworkVersions(TypedDict):
    versions: list[NetworkVersion]


class FixedIp(TypedDict):
    subnet_id: str
    ip_address: str


class PortView(TypedDict):
    id: str
    name: str
    network_id: str
    tenant_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    binding_host_id: str
    description: str
    tags: list[str]


def _visible(ctx: Context) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of the networks a caller may see: shared ones and its project's."""
    return ("(%(admin)s OR shared OR project_id = %(project)s)",
            {"admin": ctx.is_admin, "project": ctx.project_id})


def _networks(request: Request, ctx: Context, **filters: str | None) -> list[dict[str, Any]]:
    visible, args = _visible(ctx)
    where = [visible]
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = %({column})s")
            args[column] = value
    with state_of(request).pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM networks WHERE " + " AND ".join(where) +
                           " ORDER BY name, network_id", args).fetchall()


def _not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, f"{kind} {ident} could not be found.")


def _uuid_or_404(kind: str, ident: str) -> None:
    """A name in the path is a 404, so the clients fall back to `?name=`."""
    try:
        uuid.UUID(ident)
    except ValueError:
        raise _not_found(kind, ident) from None


@router.get("", summary="Neutron version discovery")
def network_versions(request: Request) -> NetworkVersions:
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"rel": "self", "href": f"{public_base(request)}/networking/v2.0/"}]}]}


@router.get("/v2.0/networks", summary="List networks (?name=, ?id=, ?shared=)")
def list_networks(request: Request, ctx: Auth, name: str | None = None,
                  id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    return {"networks": [network_view(r) for r in
                         _networks(request, ctx, name=name, network_id=id)]}


@router.get("/v2.0/networks/{network_id}", summary="Show a network")
def show_network(network_id: str, request: Request, ctx: Auth) -> dict[str, dict[str, Any]]:
    _uuid_or_404("Network", network_id)
    found = _networks(request, ctx, network_id=network_id)
    if not found:
        raise _not_found("Network", network_id)
    return {"network": network_view(found[0])}


@router.get("/v2.0/subnets", summary="List subnets (?name=, ?network_id=)")
def list_subnets(request: Request, ctx: Auth, name: str | None = None,
                 network_id: str | None = None, id: str | None = None,
                 ) -> dict[str, list[SubnetView]]:
    subnets = [subnet_view(r) for r in _networks(request, ctx, network_id=network_id)
               if r["cidr"]]  # a network created without its subnet yet
    return {"subnets": [s for s in subnets if (name is None or s["name"] == name) and
                        (id is None or s["id"] == id)]}


@router.get("/v2.0/subnets/{subnet}", summary="Show a subnet")
def show_subnet(subnet: str, request: Request, ctx: Auth) -> dict[str, SubnetView]:
    _uuid_or_404("Subnet", subnet)
    found = list_subnets(request, ctx, id=subnet)["subnets"]
    if not found:
        raise _not_found("Subnet", subnet)
    return {"subnet": found[0]}


def _ports(request: Request, ctx: Context) -> list[PortView]:
    """Every allocated port of a live server the caller may see."""
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT s.uuid, s.project_id, coalesce(s.host, ''), p FROM servers s, "
            "jsonb_array_elements(s.state->'ports') p WHERE s.vm_state <> 'deleted' AND "
            "(%s OR s.project_id = %s) ORDER BY s.created_at, s.uuid",
            (ctx.is_admin, ctx.project_id)).fetchall()
    return [{"id": p["port_id"], "name": "", "network_id": p["network_id"], "tenant_id": project,
             "project_id": project, "mac_address": p["mac_address"],
             "fixed_ips": [{"subnet_id": subnet_id(p["network_id"]),
                            "ip_address": p["ip_address"]}],
             "device_id": server, "device_owner": "compute:nova", "status": "ACTIVE",
             "admin_state_up": True, "binding_host_id": host, "description": "", "tags": []}
            for server, project, host, p in rows]


@router.get("/v2.0/ports", summary="List ports (?device_id=, ?network_id=, ?mac_address=)")
def list_ports(request: Request, ctx: Auth, device_id: str | None = None,
               network_id: str | None = None, mac_address: str | None = None,
               id: str | None = None) -> dict[str, list[PortView]]:
    wanted = {"device_id": device_id, "network_id": network_id, "mac_address": mac_address,
              "id": id}
    return {"ports": [p for p in _ports(request, ctx)
                      if all(v is None or p[k] == v  # type: ignore[literal-required]
                             for k, v in wanted.items())]}


@router.get("/v2.0/ports/{port_id}", summary="Show a port")
def show_port(port_id: str, request: Request, ctx: Auth) -> dict[str, PortView]:
    found = list_ports(request, ctx, id=port_id)["ports"]
    if not found:
        raise _not_found("Port", port_id)
    return {"port": found[0]}


NEUTRON_RESOURCES = ("network", "subnet", "port", "router", "floatingip", "security_group",
                     "security_group_rule", "rbac_policy", "subnetpool")


@router.get("/v2.0/quotas/{project_id}", summary="Network quotas: none are enforced (-1)")
def network_quotas(project_id: str, ctx: Auth) -> dict[str, dict[str, int]]:
    """novalog limits servers (os-quota-sets), not networks or ports: every Neutron
    resource is unlimited, said as Neutron says it, so `openstack quota show` works."""
    if project_id != ctx.project_id and not ctx.is_admin:
        raise ApiError(403, "You are not authorized to perform the requested action.")
    return {"quota": dict.fromkeys(NEUTRON_RESOURCES, -1)}
