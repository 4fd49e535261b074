"""POST /compute/v2.1/servers: Nova's servers.create, validated, then published.

A request is checked in Nova's order with Nova's status codes and messages.
A rejected one publishes nothing. An accepted one yields one
InstanceBuildRequested per instance (vm_state building, task_state scheduling)
and answers 202 at once. Quota usage is counted in `accepted_instances` under a
per-project advisory lock; the events go into the outbox in that same
transaction, then out to the broker (producers/outbox.py). A crash at any
point either loses the whole request or delivers all of it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, final

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates the response bodies

from novalog import request_ids
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.tokens import Context, seal
from novalog.views import Link, NameRef
from novalog.web import ApiError, Auth, server_link, state_of
from producers import facts, outbox
from producers.admission import admit
from producers.volumes import check_volume_quota
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
log = logging.getLogger(__name__)

MAX_USER_DATA = 65535
MAX_COUNT = 1000  # instances in one request; quotas usually bind long before
MAX_METADATA_ITEMS = 128
DEFAULT_NETWORK = "private"


class NetworkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uuid: str | None = None
    fixed_ip: str | None = None
    port: str | None = None
    tag: str | None = None


class BlockDeviceMappingV2(BaseModel):
    """Nova's block_device_mapping_v2 entry at microversion 2.1 (tag and volume_type come
    later, and are refused as unknown); what novalog cannot serve is refused in
    check_mapping, never accepted and ignored."""

    model_config = ConfigDict(extra="forbid")
    source_type: Literal["image", "volume", "snapshot", "blank"] = "image"
    destination_type: Literal["local", "volume"] = "local"
    uuid: str | None = None
    boot_index: int | str | None = None
    volume_size: int | None = Field(default=None, ge=0, le=2**31 - 1)
    guest_format: str | None = None
    delete_on_termination: bool = False
    device_name: str | None = Field(default=None, max_length=255)  # ignored, as libvirt's
    disk_bus: str | None = None
    device_type: str | None = None
    no_device: bool | None = None


class SecurityGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)


Metadata = dict[Annotated[str, Field(min_length=1, max_length=255)],
                Annotated[str, Field(max_length=255)]]


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=255)
    imageRef: str | None = None
    flavorRef: str | int
    networks: list[NetworkRequest] | Literal["auto", "none"] | None = None
    min_count: int = Field(default=1, ge=1, le=MAX_COUNT)
    max_count: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    return_reservation_id: bool = False
    key_name: str | None = Field(default=None, max_length=255)
    user_data: str | None = None
    metadata: Metadata = Field(default_factory=dict)
    availability_zone: str | None = Field(default=None, max_length=255)
    block_device_mapping: list[dict[str, Any]] | None = None
    block_device_mapping_v2: list[BlockDeviceMappingV2] | None = None
    security_groups: list[SecurityGroup] | None = None
    adminPass: str | None = None
    config_drive: bool | str | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    description: str | None = Field(default=None, max_length=255)
    disk_config: str | None = Field(default=None, alias="OS-DCF:diskConfig")


class SchedulerHints(BaseModel):
    model_config = ConfigDict(extra="allow")
    group: str | None = None
    same_host: list[str] | str | None = None
    different_host: list[str] | str | None = None


class CreateServerBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    server: ServerCreate
    scheduler_hints: SchedulerHints | None = Field(default=None, alias="os:scheduler_hints")
    # the name openstackclient and novaclient send (Nova accepts both)
    legacy_hints: SchedulerHints | None = Field(default=None, alias="OS-SCH-HNT:scheduler_hints")

    @property
    def hints(self) -> SchedulerHints | None:
        return self.scheduler_hints or self.legacy_hints


@dataclass(frozen=True)
class BuildPlan:
    """A validated request, as the InstanceBuildRequested of its first instance: the
    others differ only in their name and launch index (producers/admission.py)."""

    request: payloads.InstanceBuildRequested


class CatalogImage(TypedDict):
    """What the checks need of an image of the catalog."""

    id: str
    name: str
    min_disk: int
    min_ram: int
    size: int
    properties: dict[str, str]


CreatedServer = TypedDict("CreatedServer", {
    "id": str, "links": list[Link], "OS-DCF:diskConfig": str, "security_groups": list[NameRef],
    "adminPass": str})


@final  # so that `"server" in answer` tells the two answers apart
class ServerCreated(TypedDict):
    server: CreatedServer


@final
class ReservationCreated(TypedDict):
    """The answer to a multi-create that asked for return_reservation_id."""

    reservation_id: str


@dataclass(frozen=True)
class Target:
    zone: str | None
    host: str | None
    node: str | None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _one(conn: Connection[Any], query: str, *args: Any) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(query, args).fetchone()
    return row


def check_name(name: str) -> None:
    if name != name.strip() or not name.isprintable():
        raise ApiError(400, f"Invalid input for field/attribute name. Value: {name!r}. "
                            "The name must be printable and can not start or end with "
                            "whitespace.")


def boot_image_id(s: ServerCreate) -> str | None:
    """The image to boot from a local disk: imageRef, or the boot_index 0 image of
    block_device_mapping_v2; None to boot from a volume (the boot_index 0 mapping's)."""
    if s.block_device_mapping and s.block_device_mapping_v2:
        raise ApiError(400, "Using different block_device_mapping syntaxes is not allowed")
    if s.block_device_mapping:
        raise ApiError(400, "Block Device Mapping is Invalid: the legacy block_device_mapping "
                            "is not supported; use block_device_mapping_v2.")
    bdms = s.block_device_mapping_v2 or []
    boot = [b for b in bdms if str(b.boot_index) == "0"]
    if len(boot) > 1:
        raise ApiError(400, "Boot sequence for the instance and image/block device mapping "
                            "combination is not valid.")
    for bdm in bdms:
        check_mapping(bdm)
    if boot and boot[0].destination_type == "volume":
        return None
    if s.imageRef:
        if not _is_uuid(s.imageRef):
            raise ApiError(400, "Invalid imageRef provided.")
        return s.imageRef
    if boot and boot[0].uuid:
        if not _is_uuid(boot[0].uuid):
            raise ApiError(400, "Invalid imageRef provided.")
        return boot[0].uuid
    raise ApiError(400, "Missing imageRef attribute")


def check_mapping(b: BlockDeviceMappingV2) -> None:
    """Nova's checks of one block_device_mapping_v2 entry, as far as novalog serves them:
    image or blank to a new volume, an existing volume, the image to the local root."""
    invalid = "Block Device Mapping is Invalid: "
    if b.no_device:
        raise ApiError(400, invalid + "no_device (suppressing an image's device) is not "
                                      "supported.")
    if b.disk_bus not in (None, "virtio"):
        raise ApiError(400, invalid + f"disk_bus {b.disk_bus} is not supported (novalog "
                                      "attaches every disk on virtio).")
    if b.device_type not in (None, "disk"):
        raise ApiError(400, invalid + f"device_type {b.device_type} is not supported "
                                      "(disks only).")
    if b.guest_format is not None:
        raise ApiError(400, invalid + "guest_format is not supported (novalog formats no "
                                      "disk).")
    if b.source_type == "snapshot":
        raise ApiError(400, invalid + "snapshots are not supported (novalog has none).")
    if b.destination_type == "local":
        if b.source_type != "image" or str(b.boot_index) != "0":
            raise ApiError(400, invalid + "a local disk other than the image's root is not "
                                          "supported (ephemeral and swap come from the "
                                          "flavor).")
        return
    if b.source_type in ("image", "volume") and not b.uuid:
        raise ApiError(400, invalid + "Missing device UUID.")
    if b.source_type in ("image", "volume") and not _is_uuid(b.uuid or ""):
        raise ApiError(400, invalid + f"failed to get {b.source_type} {b.uuid}.")
    if b.source_type == "image" and not b.volume_size:
        raise ApiError(400, "Images with destination_type 'volume' need to have a non-zero "
                            "size specified")
    if b.source_type == "blank" and not b.volume_size:
        raise ApiError(400, "Blank volumes (source: 'blank', dest: 'volume') need to have "
                            "non-zero size")


def check_volumes(conn: Connection[Any], s: ServerCreate, ctx: Context,
                  flavor: payloads.Flavor, image_id: str | None, max_count: int) -> None:
    """The volumes a request names: an image to copy exists and fits, an existing volume
    is the project's and available, the new ones fit the volume quota; a flavor without a
    disk boots only from a volume (Nova's policy, admins excepted)."""
    bdms = [b for b in s.block_device_mapping_v2 or [] if b.destination_type == "volume"]
    if image_id is not None and flavor["root_gb"] == 0 and not ctx.is_admin:
        raise ApiError(403, "Only volume-backed servers are allowed for flavors with zero "
                            "disk.")
    new = [b for b in bdms if b.source_type in ("image", "blank")]
    for b in new:
        if b.source_type == "image" and b.uuid:
            image = image_record(conn, b.uuid, ctx)
            need = max(image["min_disk"] * 2**30, image["size"])
            if (b.volume_size or 0) * 2**30 < need:
                raise ApiError(400, f"Volume is smaller than the minimum size specified in "
                                    f"image metadata. Volume size is "
                                    f"{(b.volume_size or 0) * 2**30} bytes, minimum size is "
                                    f"{need} bytes.")
    if new:
        check_volume_quota(conn, ctx.project_id, len(new) * max_count,
                           sum(b.volume_size or 0 for b in new))
    for b in bdms:
        if b.source_type != "volume":
            continue
        row = _one(conn, "SELECT status, project_id, bootable FROM volumes "
                         "WHERE volume_id = %s", b.uuid)
        if row is None or row[1] != ctx.project_id:
            raise ApiError(400, f"Block Device Mapping is Invalid: failed to get volume "
                                f"{b.uuid}.")
        if str(b.boot_index) == "0" and not row[2]:
            raise ApiError(400, f"Block Device {b.uuid} is not bootable.")
        if row[0] != "available":
            raise ApiError(400, f"Invalid volume: Volume {b.uuid} status must be available or "
                                f"downloading to reserve, but the current status is {row[0]}.")
        if max_count > 1:
            raise ApiError(400, f"Block Device Mapping is Invalid: volume {b.uuid} can be "
                                "attached to one server only (no multiattach).")


def source_volumes(s: ServerCreate) -> list[str]:
    """The existing volumes a request boots with (each reserved for the server)."""
    return [b.uuid for b in s.block_device_mapping_v2 or []
            if b.source_type == "volume" and b.destination_type == "volume" and b.uuid]


def image_record(conn: Connection[Any], image_id: str, ctx: Context) -> CatalogImage:
    row = _one(conn, "SELECT image_id, name, status, min_disk, min_ram, size, properties, "
                     "visibility, owner FROM images WHERE image_id = %s", image_id)
    if row is None or not (row[7] in ("public", "community") or row[8] == ctx.project_id
                           or ctx.is_admin):
        raise ApiError(400, "Can not find requested image")
    if row[2] != "active":
        raise ApiError(400, f"Image {image_id} is not active.")
    return {"id": row[0], "name": row[1], "min_disk": row[3], "min_ram": row[4],
            "size": row[5], "properties": row[6]}


def flavor_record(conn: Connection[Any], ref: str | int) -> payloads.Flavor:
    flavorid = str(ref).rstrip("/").rsplit("/", 1)[-1]  # a flavor URL is accepted too
    row = _one(conn, "SELECT flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb, swap_mb, "
                     "extra_specs FROM flavors WHERE flavorid = %s", flavorid)
    if row is None:
        raise ApiError(400, "Invalid flavorRef provided.")
    flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb, swap_mb, extra_specs = row
    return payloads.Flavor(flavorid=flavorid, name=name, vcpus=vcpus, memory_mb=memory_mb,
                           root_gb=root_gb, ephemeral_gb=ephemeral_gb, swap_mb=swap_mb,
                           extra_specs=extra_specs)


def check_flavor_fits_image(flavor: payloads.Flavor, image: CatalogImage) -> None:
    if image["min_ram"] > flavor["memory_mb"]:
        raise ApiError(400, "Flavor's memory is too small for requested image.")
    if flavor["root_gb"] and (image["min_disk"] > flavor["root_gb"]
                              or image["size"] > flavor["root_gb"] * 1024**3):
        raise ApiError(400, "Flavor's disk is too small for requested image.")


def requested_networks(conn: Connection[Any], s: ServerCreate,
                       ctx: Context) -> list[payloads.RequestedNetwork]:
    if s.networks == "none":
        return []
    if s.networks in (None, "auto") or s.networks == []:
        row = _one(conn, "SELECT network_id FROM networks WHERE name = %s", DEFAULT_NETWORK)
        if row is None:
            raise ApiError(400, f"Network {DEFAULT_NETWORK} could not be found.")
        return [{"network_id": row[0], "fixed_ip": None, "port_id": None}]
    assert isinstance(s.networks, list)
    out: list[payloads.RequestedNetwork] = []
    ports = [n.port for n in s.networks if n.port]
    for port in ports:  # Nova's first pass, before any port is looked up
        if ports.count(port) > 1:
            raise ApiError(400, f"Port ID '{port}' was specified twice: you cannot attach a "
                                "port multiple times.")
    for net in s.networks:
        if net.port:  # novalog makes every port at boot: none exists beforehand to ask for
            raise ApiError(400, f"Port id {net.port} could not be found.")
        if not net.uuid:
            raise ApiError(400, "Bad network format: missing 'uuid'")
        if not _is_uuid(net.uuid):
            raise ApiError(400, f"Bad networks format: network uuid is not in proper format "
                                f"({net.uuid})")
        row = _one(conn, "SELECT network_id, cidr, shared, project_id FROM networks "
                   "WHERE network_id = %s", net.uuid)
        if row is None or not (row[2] or row[3] == ctx.project_id or ctx.is_admin):
            raise ApiError(400, f"Network {net.uuid} could not be found.")
        if not row[1]:  # created, no subnet yet: Neutron would give the port no address
            raise ApiError(400, f"Network {net.uuid} has no subnet: no address to give.")
        # the same network twice is two ports on it, as Nova allows since Liberty
        if net.fixed_ip is not None:
            try:
                ip = ipaddress.ip_address(net.fixed_ip)
            except ValueError:
                raise ApiError(400, f"Invalid fixed IP address ({net.fixed_ip})") from None
            if ip not in ipaddress.ip_network(row[1]):
                raise ApiError(400, f"Fixed IP address {net.fixed_ip} is not in the subnet "
                                    f"{row[1]} of network {net.uuid}")
        out.append({"network_id": net.uuid, "fixed_ip": net.fixed_ip, "port_id": None})
    return out


def check_user_data(user_data: str | None) -> None:
    if user_data is None:
        return
    if len(user_data) > MAX_USER_DATA:
        raise ApiError(400, f"User data too large. User data must be no larger than "
                            f"{MAX_USER_DATA} bytes once base64 encoded. Your data is "
                            f"{len(user_data)} bytes")
    try:
        base64.b64decode(user_data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "User data needs to be valid base 64.") from None


def parse_target(conn: Connection[Any], az: str | None, ctx: Context) -> Target:
    """`availability_zone`, possibly Nova's admin-only `AZ:host[:node]` form."""
    if not az:
        return Target(None, None, None)
    zone, _, rest = az.partition(":")
    host, _, node = rest.partition(":")
    if (host or node) and not ctx.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:servers:create:forced_host "
                            "to be performed.")
    if zone:
        known = {r[0] for r in conn.execute("SELECT DISTINCT zone FROM services").fetchall()}
        if zone not in known | {"nova"}:
            raise ApiError(400, "The requested availability zone is not available")
    if host and _one(conn, "SELECT 1 FROM compute_nodes WHERE host = %s", host) is None:
        raise ApiError(400, f"Compute host {host} could not be found.")
    if node and _one(conn, "SELECT 1 FROM compute_nodes WHERE host = %s AND node = %s",
                     host, node) is None:
        raise ApiError(400, f"Compute host {host} with node {node} could not be found.")
    return Target(zone or None, host or None, node or None)


def hints_of(conn: Connection[Any], hints: SchedulerHints | None,
             ctx: Context) -> dict[str, list[str]]:
    if hints is None:
        return {}
    out: dict[str, list[str]] = {}
    if hints.group:
        row = _one(conn, "SELECT project_id FROM server_groups WHERE group_id = %s", hints.group)
        if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
            raise ApiError(400, f"Instance group {hints.group} could not be found.")
        out["group"] = [hints.group]
    for key in ("same_host", "different_host"):
        value = getattr(hints, key)
        uuids = [value] if isinstance(value, str) else list(value or [])
        if any(not _is_uuid(u) for u in uuids):
            raise ApiError(400, f"Invalid input for field/attribute {key}: not a UUID")
        if uuids:
            out[key] = uuids
    return out


@router.post("/servers", status_code=202, summary="Create one or more servers",
             responses={400: {"description": "invalid request"},
                        401: {"description": "no valid token"},
                        403: {"description": "quota exceeded or admin only"},
                        503: {"description": "the broker did not acknowledge the request"}})
def create_server(body: CreateServerBody, ctx: Auth, request: Request,
                  response: Response) -> ServerCreated | ReservationCreated:
    s = body.server
    app = state_of(request)
    counts, image_id = validate(s)
    request_id = request_ids.request_id()
    volumes = source_volumes(s)
    password = s.adminPass or secrets.token_urlsafe(9)  # Nova's: one for the whole request
    with app.pool.connection() as conn, facts.held_locks(conn, [f"volume/{v}" for v in volumes]):
        with conn.transaction():
            plan = plan_build(conn, s, body.hints, ctx, image_id, counts[1],
                              seal(app.settings, password))
            admitted = admit(conn, Publisher(app.producer, "api", app.settings.hostname),
                             Topics(app.settings.topic_prefix), ctx, plan, counts, request_id)
        outbox.publish_accepted(conn, app.producer, admitted.outgoing,
                                f"request {request_id}")
        if volumes:  # held until the projection shows them reserved
            facts.wait_projected(app, lambda c: c.execute(
                "SELECT count(*) FROM volumes WHERE volume_id = ANY(%s) AND status <> "
                "'available'", (volumes,)).fetchone() == (len(volumes),), conn)
    if s.return_reservation_id:
        return {"reservation_id": admitted.reservation_id}
    first = admitted.server_ids[0]
    links = server_link(request, first)
    response.headers["Location"] = links[0]["href"]  # Nova's _add_location: the self link
    return {"server": {"id": first, "links": links,
                       "OS-DCF:diskConfig": s.disk_config or "MANUAL",
                       "security_groups": [{"name": g.name} for g in s.security_groups or []]
                       or [{"name": "default"}],
                       "adminPass": password}}


def validate(s: ServerCreate) -> tuple[tuple[int, int], str | None]:
    """The checks that need nothing but the request: (min, max) count and the image id."""
    check_name(s.name)
    wants_config_drive(s.config_drive)
    max_count = s.max_count or s.min_count
    if s.min_count > max_count:
        raise ApiError(400, "min_count must be <= max_count")
    image_id = boot_image_id(s)
    check_user_data(s.user_data)
    if len(s.metadata) > MAX_METADATA_ITEMS:
        raise ApiError(403, f"Maximum number of metadata items exceeds {MAX_METADATA_ITEMS}")
    if max_count > 1 and isinstance(s.networks, list) and any(
            n.uuid and n.fixed_ip for n in s.networks):
        raise ApiError(400, "Failed to launch instances: max_count cannot be greater than 1 "
                            "if an fixed_ip is specified.")
    return (s.min_count, max_count), image_id


def wants_config_drive(value: bool | str | None) -> bool:
    """Nova's boolean parameter type, as config_drive takes it (a bool or its spelling)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ApiError(400, f"Invalid input for field/attribute config_drive. Value: {value}. "
                        f"'{value}' is not a boolean")


TRUE_WORDS = ("true", "1", "on", "yes", "y", "t")
FALSE_WORDS = ("false", "0", "off", "no", "n", "f", "")


def plan_build(conn: Connection[Any], s: ServerCreate, hints: SchedulerHints | None,
               ctx: Context, image_id: str | None, max_count: int = 1,
               admin_password: str | None = None) -> BuildPlan:
    """Everything the request names, looked up and checked: what each instance will be.
    Booted from a volume, the instance has no image of its own (Nova's image "")."""
    flavor = flavor_record(conn, s.flavorRef)
    image = image_record(conn, image_id, ctx) if image_id is not None else None
    if image is not None:
        check_flavor_fits_image(flavor, image)
    check_volumes(conn, s, ctx, flavor, image_id, max_count)
    networks = requested_networks(conn, s, ctx)
    key = _one(conn, "SELECT public_key FROM keypairs WHERE user_id = %s AND name = %s",
               ctx.user_id, s.key_name) if s.key_name is not None else None
    if s.key_name is not None and key is None:
        raise ApiError(400, "Invalid key_name provided.")
    target = parse_target(conn, s.availability_zone, ctx)
    bdm = [payloads.BlockDeviceMapping(
        source_type=b.source_type, destination_type=b.destination_type, uuid=b.uuid,
        volume_size=b.volume_size, guest_format=b.guest_format,
        delete_on_termination=b.delete_on_termination,
        boot_index=int(b.boot_index) if b.boot_index not in (None, "") else None,
        volume_id=b.uuid if b.source_type == "volume" else None, connection=None, device=None,
        attachment_id=None)
        for b in s.block_device_mapping_v2 or []]
    return BuildPlan(payloads.InstanceBuildRequested(
        name=s.name, project_id=ctx.project_id, user_id=ctx.user_id,
        reservation_id=f"r-{secrets.token_hex(4)}", launch_index=0, flavor=flavor,
        image=payloads.Image(id=image["id"], name=image["name"], min_disk=image["min_disk"],
                             min_ram=image["min_ram"], properties=image["properties"])
        if image is not None else None,
        networks=networks, block_device_mapping=bdm, key_name=s.key_name,
        metadata=s.metadata, user_data=s.user_data,
        availability_zone=target.zone, forced_host=target.host,
        forced_node=target.node, scheduler_hints=hints_of(conn, hints, ctx),
        is_admin=ctx.is_admin, config_drive=wants_config_drive(s.config_drive),
        security_groups=[g.name for g in s.security_groups or []],
        admin_password=admin_password, key_data=key[0] if key else None))

