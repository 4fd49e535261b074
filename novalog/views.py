"""The JSON bodies novalog's API answers with (Nova's, Glance's and Neutron's shapes).

The read side builds them (projections/api.py); the CLI verbs and the bench read
them from the API (through novalog/client.py). FastAPI takes a route's return type
as its response model, so these are also what /openapi.json says the API returns.
Keys that are not Python names (`OS-EXT-STS:vm_state`) need the functional syntax.
TypedDicts FastAPI validates come from typing_extensions (pydantic asks for it
before Python 3.12).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NotRequired, overload

from pydantic import ConfigDict, JsonValue
from typing_extensions import TypedDict

from novalog.idempotency import derived_id


@overload
def zulu(value: datetime) -> str: ...
@overload
def zulu(value: datetime | None) -> str | None: ...
def zulu(value: datetime | None) -> str | None:
    """A moment as Nova writes it: UTC, seconds, a Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


class Link(TypedDict):
    rel: str
    href: str


class IdRef(TypedDict):
    id: str


class NameRef(TypedDict):
    name: str


# (in the order Postgres keeps jsonb keys, so projected servers answer as they always did)
Address = TypedDict("Address", {
    "addr": str, "version": int, "OS-EXT-IPS:type": str, "OS-EXT-IPS-MAC:mac_addr": str})
Addresses = dict[str, list[Address]]  # Nova's `addresses`: by network name


class FaultView(TypedDict):
    code: int
    message: str
    created: str | datetime | None  # as projected (ISO 8601), or folded (time travel)
    details: NotRequired[str]  # admins only


ServerView = TypedDict("ServerView", {
    "id": str, "name": str, "status": str, "tenant_id": str, "user_id": str,
    "metadata": dict[str, str], "hostId": str, "image": IdRef | str, "flavor": IdRef,
    "created": str | None, "updated": str | None, "addresses": Addresses,
    "accessIPv4": str, "accessIPv6": str, "links": list[Link], "OS-DCF:diskConfig": str,
    "progress": NotRequired[int], "OS-EXT-AZ:availability_zone": str, "config_drive": str,
    "key_name": str | None, "OS-SRV-USG:launched_at": str | None,
    "OS-SRV-USG:terminated_at": None, "OS-EXT-STS:vm_state": str,
    "OS-EXT-STS:task_state": str | None, "OS-EXT-STS:power_state": int,
    "security_groups": list[NameRef], "os-extended-volumes:volumes_attached": list[IdRef],
    # admins only
    "OS-EXT-SRV-ATTR:host": NotRequired[str | None],
    "OS-EXT-SRV-ATTR:hypervisor_hostname": NotRequired[str | None],
    "OS-EXT-SRV-ATTR:instance_name": NotRequired[str],
    "fault": NotRequired[FaultView],
})


class ServerRef(TypedDict):
    id: str
    name: str
    links: list[Link]


class ServerRefs(TypedDict):
    servers: list[ServerRef]
    servers_links: NotRequired[list[Link]]


class ServerList(TypedDict):
    as_of: NotRequired[str]  # time travel (/novalog/v1/servers?as_of=)
    servers: list[ServerView]
    servers_links: NotRequired[list[Link]]


class OneServer(TypedDict):
    as_of: NotRequired[str]
    server: ServerView


class ComputeVersion(TypedDict):
    id: str
    status: str
    version: str
    min_version: str
    updated: str
    links: list[Link]


class ComputeVersionDoc(TypedDict):
    version: ComputeVersion


class InstanceActionView(TypedDict):
    action: str
    instance_uuid: str
    request_id: str
    user_id: str
    project_id: str
    start_time: str | None
    message: str | None


class InstanceActions(TypedDict):
    instanceActions: list[InstanceActionView]


class ActionEventView(TypedDict):
    event: str
    start_time: str | None
    finish_time: str | None
    result: str | None
    traceback: str | None
    host: str | None
    hostId: str


class InstanceActionDetail(InstanceActionView):
    events: list[ActionEventView]


class OneInstanceAction(TypedDict):
    instanceAction: InstanceActionDetail


FlavorView = TypedDict("FlavorView", {
    "id": str, "name": str, "links": list[Link],
    # with detail
    "vcpus": NotRequired[int], "ram": NotRequired[int], "disk": NotRequired[int],
    "OS-FLV-EXT-DATA:ephemeral": NotRequired[int], "swap": NotRequired[int | str],
    "os-flavor-access:is_public": NotRequired[bool], "rxtx_factor": NotRequired[float],
    "OS-FLV-DISABLED:disabled": NotRequired[bool],
})


FLAVOR_COLUMNS = "flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb, swap_mb, is_public"


def flavor_view(base: str, r: tuple[Any, ...], detail: bool) -> FlavorView:
    """Nova 2.1's flavor from a row of FLAVOR_COLUMNS; `base`: the public base URL."""
    view: FlavorView = {"id": r[0], "name": r[1], "links": [
        {"rel": "self", "href": f"{base}/compute/v2.1/flavors/{r[0]}"}]}
    if detail:
        view.update({"vcpus": r[2], "ram": r[3], "disk": r[4],
                     "OS-FLV-EXT-DATA:ephemeral": r[5], "swap": r[6] or "",
                     "os-flavor-access:is_public": r[7], "rxtx_factor": 1.0,
                     "OS-FLV-DISABLED:disabled": False})
    return view


class Flavors(TypedDict):
    flavors: list[FlavorView]


class OneFlavor(TypedDict):
    flavor: FlavorView


class ExtraSpecs(TypedDict):
    extra_specs: dict[str, str]


class FlavorTenant(TypedDict):
    flavor_id: str
    tenant_id: str


class FlavorAccess(TypedDict):
    flavor_access: list[FlavorTenant]


class ServiceView(TypedDict):
    id: int
    binary: str
    host: str
    zone: str
    status: str
    disabled_reason: str | None
    state: str
    updated_at: str | None
    forced_down: bool


class Services(TypedDict):
    services: list[ServiceView]


class HostRef(TypedDict):
    host: str


class HypervisorView(TypedDict):
    id: int
    hypervisor_hostname: str
    hypervisor_type: str
    host_ip: str | None
    state: str
    status: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    running_vms: int
    free_ram_mb: int
    free_disk_gb: int
    service: HypervisorService


class HypervisorService(TypedDict):
    host: str
    id: int


class Hypervisors(TypedDict):
    hypervisors: list[HypervisorView]


class HypervisorRef(TypedDict):
    id: int
    hypervisor_hostname: str
    state: str
    status: str


class HypervisorRefs(TypedDict):
    hypervisors: list[HypervisorRef]


class OneHypervisor(TypedDict):
    hypervisor: HypervisorView


class Statistics(TypedDict):
    count: int
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    running_vms: int
    free_ram_mb: int
    free_disk_gb: int
    current_workload: int
    disk_available_least: int


class HypervisorStatistics(TypedDict):
    hypervisor_statistics: Statistics


class HostView(TypedDict):
    """GET /os-hosts (Nova's, up to microversion 2.43)."""

    host_name: str
    service: str
    zone: str


class Hosts(TypedDict):
    hosts: list[HostView]


class HostResourceView(TypedDict):
    host: str
    project: str  # "(total)", "(used_now)", "(used_max)" or a project id
    cpu: int
    memory_mb: int
    disk_gb: int


class HostResource(TypedDict):
    resource: HostResourceView


class HostDetail(TypedDict):
    host: list[HostResource]


class MigrationView(TypedDict):
    """GET /os-migrations at 2.1 (Nova's fields), plus migration_type (2.23's)."""

    id: int
    instance_uuid: str
    migration_type: str
    status: str
    source_compute: str
    source_node: str
    dest_compute: str | None
    dest_node: str | None
    dest_host: str | None
    old_instance_type_id: int | str
    new_instance_type_id: int | str
    created_at: str | None
    updated_at: str | None


class Migrations(TypedDict):
    migrations: list[MigrationView]


class ProjectedEvent(TypedDict):
    """One row of a server's projected events (a client follows a build with these)."""

    seq: int
    event_id: str
    event_type: str
    occurred_at: str
    vm_state: str | None
    task_state: str | None
    producer: str
    request_id: str
    payload: dict[str, JsonValue]  # the event's payload, as JSON


class ServerEvents(TypedDict):
    events: list[ProjectedEvent]


# os-server-groups (producers/server_groups.py answers a create, projections/ the reads)
class ServerGroupView(TypedDict):
    id: str
    name: str
    policies: list[str]
    members: list[str]
    metadata: dict[str, str]
    project_id: str
    user_id: str | None


# Glance v2 and Neutron v2.0 (projections/images.py, networks.py; the client reads them)
class ImageView(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]  # the properties
    id: str
    name: str
    status: str
    disk_format: str
    container_format: str
    size: int | None
    virtual_size: int | None
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    min_disk: int
    min_ram: int
    visibility: str
    protected: bool
    os_hidden: bool
    owner: str | None
    tags: list[str]
    created_at: str
    updated_at: str
    self: str
    file: str
    schema: str


def image_view(row: dict[str, Any]) -> ImageView:
    """Glance's image fields; the image's own properties are top-level, as Glance has them."""
    view: ImageView = {
        "id": row["image_id"], "name": row["name"], "status": row["status"],
        "disk_format": row["disk_format"], "container_format": row["container_format"],
        "size": row["size"] if row["status"] == "active" else None,
        "virtual_size": row["virtual_size"], "checksum": row["checksum"] or None,
        "os_hash_algo": "sha512" if row["os_hash_value"] else None,
        "os_hash_value": row["os_hash_value"], "min_disk": row["min_disk"],
        "min_ram": row["min_ram"], "visibility": row["visibility"], "protected": False,
        "os_hidden": False, "owner": row["owner"], "tags": [],
        "created_at": zulu(row["created_at"]),
        "updated_at": zulu(row["updated_at"] or row["created_at"]),
        "self": f"/v2/images/{row['image_id']}", "file": f"/v2/images/{row['image_id']}/file",
        "schema": "/v2/schemas/image"}
    return {**row["properties"], **view}


class ImageList(TypedDict, total=False):
    images: list[ImageView]
    first: str
    next: str
    schema: str


class NetworkView(TypedDict):
    id: str
    name: str
    status: str
    admin_state_up: bool
    shared: bool
    subnets: list[str]
    tenant_id: str
    project_id: str
    mtu: int
    ipv4_address_scope: None
    ipv6_address_scope: None
    is_default: bool
    port_security_enabled: bool
    availability_zones: list[str]
    description: str
    tags: list[str]
    # router:external and provider:* are added as Neutron names them


class AllocationPool(TypedDict):
    start: str
    end: str


class SubnetView(TypedDict):
    id: str
    name: str
    network_id: str
    tenant_id: str
    project_id: str
    cidr: str
    gateway_ip: str
    ip_version: int
    enable_dhcp: bool
    allocation_pools: list[AllocationPool]
    dns_nameservers: list[str]
    host_routes: list[str]
    description: str
    tags: list[str]


def subnet_id(network_id: str) -> str:
    return derived_id("subnet", network_id)


def network_view(r: dict[str, Any]) -> dict[str, Any]:
    owner = r["project_id"] or ""
    view: NetworkView = {
        "id": r["network_id"], "name": r["name"], "status": "ACTIVE", "admin_state_up": True,
        "shared": r["shared"], "subnets": [subnet_id(r["network_id"])] if r["cidr"] else [],
        "tenant_id": owner,
        "project_id": owner, "mtu": 1500, "ipv4_address_scope": None,
        "ipv6_address_scope": None, "is_default": False, "port_security_enabled": False,
        "availability_zones": ["nova"], "description": "", "tags": []}
    return {**view, "router:external": False, "provider:network_type": "flat"}


def subnet_view(r: dict[str, Any]) -> SubnetView:
    owner = r["project_id"] or ""
    return {"id": subnet_id(r["network_id"]), "name": r["subnet_name"] or f"{r['name']}-subnet",
            "network_id": r["network_id"], "tenant_id": owner, "project_id": owner,
            "cidr": r["cidr"], "gateway_ip": r["gateway_ip"], "ip_version": 4,
            "enable_dhcp": True,
            "allocation_pools": [{"start": r["allocation_start"], "end": r["allocation_end"]}],
            "dns_nameservers": [], "host_routes": [], "description": "", "tags": []}


class AuditEntryView(TypedDict):
    occurred_at: str
    event_type: str
    vm_state: str | None
    task_state: str | None
    role: str
    host: str
    request_id: str
    event_id: str
    partition: int
    offset: int
    details: dict[str, object]  # what an operator wants to read of the event


class ServerAudit(TypedDict):
    server_id: str
    events: list[AuditEntryView]


class RequestOutcome(TypedDict):
    request_id: str
    action: str
    server_id: str
    server: str
    project_id: str
    user_id: str
    started: str
    outcome: str
    host: str | None
    fault: str | None
    duration_s: float
    finished: bool


class RequestsSince(TypedDict):
    since: str
    requests: list[RequestOutcome]

