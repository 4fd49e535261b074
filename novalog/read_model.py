"""Read ports: what reactors read of the projections, through schema-qualified SQL.

A reactor that needs data another part owns names the table it reads, here, in
one place; nothing relies on the connection's search_path to find it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import sql

from novalog.consume import TransientError
from novalog.db import Source, borrowed, live_schema
from novalog.domain.instance import Instance, from_json
from schemas import Event, payloads


class ServerState(NamedTuple):
    """What a reactor needs of a server's projected state to route an action."""

    vm_state: str
    task_state: str | None
    host: str | None
    attempt: int
    launched: bool = False
    action_request_id: str | None = None  # the request whose task is in progress


class VolumeRecord(NamedTuple):
    """What the volume role and the conductor need of a projected volume."""

    volume_id: str
    status: str
    size_gb: int
    image_id: str | None
    connection: payloads.VolumeConnection | None


class LiveProjection:
    """The queries reactors make of the live projection (S_live), each naming its table."""

    def __init__(self, pool: Source, base_schema: str) -> None:
        """`pool`: the role's pool, or the connection a request already holds."""
        self.pool = pool
        self.schema = sql.Identifier(live_schema(base_schema))
        self.base = sql.Identifier(base_schema)

    def _rows(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with borrowed(self.pool) as conn:
            return conn.execute(sql.SQL(query).format(live=self.schema, base=self.base),
                                args).fetchall()

    def folded(self, event_id: str) -> bool:
        """The projection has folded this instance event, hence every event before it on its
        partition: what it says of the instance is then at least as new as the event."""
        return bool(self._rows("SELECT 1 FROM {live}.instance_events WHERE event_id = %s",
                               (event_id,)))

    def volume_folded(self, event_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM {live}.volume_events WHERE event_id = %s",
                               (event_id,)))

    def wait_folded(self, event: Event, timeout_s: float = 10.0) -> None:
        """Until the projection has folded `event` (an instance or a volume fact): what it
        says of the aggregate is then at least as new. TransientError after `timeout_s`,
        so the consume loop tries the event again."""
        check = self.volume_folded if event.event_type.startswith("Volume") else self.folded
        deadline = time.monotonic() + timeout_s
        while not check(event.event_id):
            if time.monotonic() > deadline:
                raise TransientError(f"the projection has not folded {event.event_type} "
                                     f"{event.event_id} within {timeout_s:.0f}s")
            time.sleep(0.02)

    def volume(self, volume_id: str) -> VolumeRecord | None:
        rows = self._rows("SELECT volume_id, status, size_gb, image_id, connection "
                          "FROM {live}.volumes WHERE volume_id = %s", (volume_id,))
        return VolumeRecord(*rows[0]) if rows else None

    def attached_volumes(self, instance: str) -> list[payloads.BlockDeviceMapping]:
        """The instance's volumes as block device mappings (a move carries them along)."""
        rows = self._rows(
            "SELECT a.volume_id, v.connection, a.device, a.attachment_id "
            "FROM {live}.volume_attachments a "
            "JOIN {live}.volumes v ON v.volume_id = a.volume_id WHERE a.instance_uuid = %s "
            "AND a.attach_status IN ('attaching', 'attached') ORDER BY a.device", (instance,))
        return [payloads.BlockDeviceMapping(
            source_type="volume", destination_type="volume", uuid=volume_id,
            boot_index=0 if device == "vda" else None, volume_size=None, guest_format=None,
            delete_on_termination=False, volume_id=volume_id, connection=connection,
            device=device, attachment_id=attachment_id)
            for volume_id, connection, device, attachment_id in rows]

    def server(self, instance: str) -> ServerState | None:
        rows = self._rows("SELECT vm_state, task_state, host, attempt, launched_at IS NOT NULL, "
                          "state->>'action_request_id' FROM {live}.servers WHERE uuid = %s",
                          (instance,))
        if not rows:
            return None
        return ServerState(*rows[0])

    def instance(self, instance: str) -> Instance | None:
        """The whole fold of the instance, as the projection last wrote it."""
        rows = self._rows("SELECT state FROM {live}.servers WHERE uuid = %s", (instance,))
        return from_json(rows[0][0]) if rows else None

    def compute_service(self, host: str) -> tuple[datetime | None, bool] | None:
        """(last heartbeat, disabled) of the host's nova-compute service, None if unknown."""
        rows = self._rows("SELECT last_heartbeat, disabled FROM {live}.services "
                          "WHERE host = %s AND service_binary = 'nova-compute'", (host,))
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def unconfirmed_resizes(self, host: str, before: datetime) -> list[tuple[str, str, str]]:
        """(uuid, migration id, request id) of resizes onto `host` whose migration has been
        `finished` since before `before` (Nova's get_unconfirmed_by_dest_compute)."""
        rows = self._rows("SELECT s.uuid, m.migration_id, s.request_id FROM {live}.migrations m "
                          "JOIN {live}.servers s ON s.uuid = m.instance_uuid "
                          "WHERE m.status = 'finished' AND m.dest_compute = %s "
                          "AND m.updated_at < %s AND s.vm_state = 'resized' "
                          "AND s.task_state IS NULL", (host, before))
        return [(str(u), str(m), str(r)) for u, m, r in rows]

    def delete_request(self, instance: str) -> str | None:
        """The request id of the DELETE the API accepted for this instance, if any: written
        in the API's transaction before its event exists, so never behind the log."""
        rows = self._rows("SELECT delete_request_id FROM {base}.accepted_instances "
                          "WHERE uuid = %s", (instance,))
        return str(rows[0][0]) if rows and rows[0][0] else None

    def build_request(self, instance: str) -> payloads.InstanceBuildRequested | None:
        rows = self._rows("SELECT payload FROM {live}.instance_events WHERE instance_uuid = %s "
                          "AND event_type = 'InstanceBuildRequested'", (instance,))
        if not rows:
            return None
        request: payloads.InstanceBuildRequested = rows[0][0]  # the payload, as projected
        return request

    def image(self, image_id: str) -> payloads.ImageToBoot | None:
        rows = self._rows("SELECT image_id, name, disk_format, checksum, size, location, "
                          "properties FROM {live}.images WHERE image_id = %s", (image_id,))
        if not rows:
            return None
        image_id, name, disk_format, checksum, size, location, properties = rows[0]
        return {"id": image_id, "name": name, "disk_format": disk_format, "checksum": checksum,
                "size": size, "location": location, "properties": properties}

    def server_group(self, group_id: str) -> payloads.ServerGroupPolicy | None:
        rows = self._rows("SELECT group_id, policy FROM {live}.server_groups "
                          "WHERE group_id = %s", (group_id,))
        return {"group_id": rows[0][0], "policy": rows[0][1]} if rows else None

    def network(self, network_id: str | None,
                fixed_ip: str | None) -> payloads.NetworkToAttach | None:
        """The network as compute and the network role need it, with the address asked."""
        rows = self._rows("SELECT network_id, name, cidr, gateway_ip, allocation_start, "
                          "allocation_end FROM {live}.networks WHERE network_id = %s",
                          (network_id,))
        if not rows:
            return None
        network_id, name, cidr, gateway_ip, allocation_start, allocation_end = rows[0]
        return {"network_id": network_id, "name": name, "cidr": cidr, "gateway_ip": gateway_ip,
                "allocation_start": allocation_start, "allocation_end": allocation_end,
                "fixed_ip": fixed_ip}

    def tried_hosts(self, instance: str) -> list[str]:
        rows = self._rows("SELECT state->'tried_hosts' FROM {live}.servers WHERE uuid = %s",
                          (instance,))
        return list(rows[0][0]) if rows and rows[0][0] else []

    def stuck_builds(self, vm_state: str, before: datetime,
                     limit: int = 100) -> list[tuple[str, int, str, str]]:
        """(uuid, attempt, task_state, request_id) of builds not updated since `before`."""
        rows = self._rows("SELECT uuid, attempt, task_state, request_id FROM {live}.servers "
                          "WHERE vm_state = %s AND updated_at < %s LIMIT %s",
                          (vm_state, before, limit))
        return [(str(u), int(a), str(t), str(r)) for u, a, t, r in rows]


class BuildRequests:
    """Each instance's InstanceBuildRequested payload: remembered as it passes on the log,
    or read from the live projection after a restart in the middle of a build.

    The scheduler and the conductor both see a request before any later event of the
    same instance (one key, one partition), so the projection matters only after a
    restart, and its lag is then a TransientError (retried), never a wrong answer.
    """

    def __init__(self, projection: LiveProjection, limit: int = 100_000) -> None:
        self.projection = projection
        self.limit = limit
        self._cache: OrderedDict[str, payloads.InstanceBuildRequested] = OrderedDict()

    def remember(self, instance: str, payload: payloads.InstanceBuildRequested) -> None:
        self._cache[instance] = payload
        if len(self._cache) > self.limit:
            self._cache.popitem(last=False)

    def forget(self, instance: str) -> None:
        self._cache.pop(instance, None)

    def __contains__(self, instance: str) -> bool:
        return instance in self._cache

    def get(self, instance: str) -> payloads.InstanceBuildRequested:
        if instance in self._cache:
            return self._cache[instance]
        payload = self.projection.build_request(instance)
        if payload is None:
            raise TransientError(f"the build request of {instance} is not projected yet")
        return payload
