"""Neutron v2.0, the writing half (admin): create a network, give it its subnet, delete it.

`openstack network create N` then `openstack subnet create --network N --subnet-range
C S`, as with Neutron; novalog's networks have one IPv4 subnet each, so a second one
is a 409. The gateway defaults to the first address and the allocation pool to the
rest but the last (the bootstrap network's shape). A network servers still use is
not deleted (409). Each step is a catalog fact (NetworkCreated, SubnetCreated,
NetworkDeleted), read back before the answer.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from novalog.tokens import Context
from novalog.views import network_view, subnet_id, subnet_view
from novalog.web import ApiError, Auth, require_admin, state_of
from producers import facts
from schemas import payloads

router = APIRouter(prefix="/networking/v2.0", tags=["network"])


class NetworkCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Neutron's many optional attributes
    name: str = Field(default="", max_length=255)
    shared: bool = False
    project_id: str | None = Field(default=None, max_length=255)
    admin_state_up: bool = True


class NetworkBody(BaseModel):
    network: NetworkCreate


class Pool(BaseModel):
    start: str
    end: str


class SubnetCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    network_id: str
    cidr: str
    ip_version: int = 4
    name: str = Field(default="", max_length=255)
    gateway_ip: str | None = None
    allocation_pools: list[Pool] | None = Field(default=None, max_length=1)


class SubnetBody(BaseModel):
    subnet: SubnetCreate


def _network(conn: Connection[Any], network_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM networks WHERE network_id = %s",
                           (network_id,)).fetchone()


def _admin(ctx: Context, what: str) -> None:
    require_admin(ctx, f"{what} (Neutron's network administration)")


@router.post("/networks", status_code=201, summary="Create a network (admin; no subnet yet)")
def create_network(body: NetworkBody, request: Request, ctx: Auth) -> dict[str, Any]:
    _admin(ctx, "create_network")
    net = body.network
    network_id = str(uuid.uuid4())
    app = state_of(request)
    facts.publish(app, [("NetworkCreated", network_id, payloads.NetworkCreated(
        network_id=network_id, name=net.name, cidr="", gateway_ip="", allocation_start="",
        allocation_end="", project_id=net.project_id or ctx.project_id, shared=net.shared))],
        lambda c: _network(c, network_id) is not None)
    with app.pool.connection() as conn:
        return {"network": network_view(_network(conn, network_id) or {})}


def _addresses(cidr: str, gateway: str | None, pools: list[Pool] | None,
               ) -> tuple[ipaddress.IPv4Network, str, str, str]:
    """(network, gateway, first, last address to allocate), checked as Neutron does."""
    try:
        net = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise ApiError(400, f"Invalid input for cidr. Reason: '{cidr}' is not a valid IPv4 "
                            f"subnet ({exc}).") from None
    if net.num_addresses < 8:
        raise ApiError(400, f"Invalid input for cidr: {cidr} is too small (at least /29).")
    hosts = [net[1], net[-2]]
    gw = ipaddress.IPv4Address(gateway) if gateway else net[1]
    first, last = (net[2], net[-2]) if pools is None else (
        ipaddress.IPv4Address(pools[0].start), ipaddress.IPv4Address(pools[0].end))
    if not (hosts[0] <= gw <= hosts[1] and hosts[0] <= first <= last <= hosts[1]):
        raise ApiError(400, f"The gateway and the allocation pool must be host addresses "
                            f"of {cidr}, the pool's start before its end.")
    if first <= gw <= last:
        raise ApiError(409, f"Gateway ip {gw} conflicts with allocation pool {first}-{last}")
    return net, str(gw), str(first), str(last)


@router.post("/subnets", status_code=201, summary="Give a network its one subnet (admin)",
             responses={409: {"description": "the network has its subnet already"}})
def create_subnet(body: SubnetBody, request: Request, ctx: Auth) -> dict[str, Any]:
    _admin(ctx, "create_subnet")
    sub = body.subnet
    if sub.ip_version != 4:
        raise ApiError(400, "novalog's networks are IPv4 only (ip_version 4).")
    try:
        addresses = _addresses(sub.cidr, sub.gateway_ip, sub.allocation_pools)
    except ValueError as exc:
        raise ApiError(400, f"Invalid address: {exc}") from None
    net, gateway, first, last = addresses
    app = state_of(request)
    with facts.owner_lock(app, f"network/{sub.network_id}") as conn:
        network = _network(conn, sub.network_id)
        if network is None:
            raise ApiError(404, f"Network {sub.network_id} could not be found.")
        if network["cidr"]:
            raise ApiError(409, f"Network {sub.network_id} has its subnet already: "
                                "novalog's networks have one each.")
        facts.publish(app, [("SubnetCreated", sub.network_id, payloads.SubnetCreated(
            network_id=sub.network_id, subnet_id=subnet_id(sub.network_id),
            name=sub.name, cidr=str(net), gateway_ip=gateway, allocation_start=first,
            allocation_end=last))],
            lambda c: bool((_network(c, sub.network_id) or {}).get("cidr")), conn)
        return {"subnet": subnet_view(_network(conn, sub.network_id) or {})}


@router.delete("/networks/{network_id}", status_code=204, response_class=Response,
               summary="Delete a network no server uses (admin)",
               responses={409: {"description": "servers still have ports on it"}})
def delete_network(network_id: str, request: Request, ctx: Auth) -> Response:
    _admin(ctx, "delete_network")
    app = state_of(request)
    with facts.owner_lock(app, f"network/{network_id}") as conn:
        if _network(conn, network_id) is None:
            raise ApiError(404, f"Network {network_id} could not be found.")
        used = conn.execute(
            "SELECT count(*) FROM servers s, jsonb_array_elements(s.state->'ports') p "
            "WHERE s.vm_state <> 'deleted' AND p->>'network_id' = %s", (network_id,)
        ).fetchone()
        if used and used[0]:
            raise ApiError(409, f"Unable to complete operation on network {network_id}. "
                                f"There are one or more ports still in use on the network.")
        facts.publish(app, [("NetworkDeleted", network_id,
                             payloads.NetworkDeleted(network_id=network_id))],
                      lambda c: _network(c, network_id) is None, conn)
    return Response(status_code=204)
