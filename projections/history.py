"""Time travel: the state of a server, or of the cloud, as of a past occurred_at.

The projected `instance_events` keep every instance event exactly as on the
log (`raw`). A past state is the fold (novalog.domain.instance) of a server's
events with occurred_at <= the moment, in log order. Broker timestamps and
offsets_for_times are never used, on Apache Kafka either: occurred_at is the
business time (DESIGN.md §3), a broker timestamp is when a record was appended
(a re-delivered or outbox-relayed event is appended late), and on Tansu both
are wrong besides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from psycopg import Connection

from novalog.domain.instance import Fault, Instance, TransitionError, apply
from novalog.views import Addresses, IdRef
from projections.writers import addresses
from schemas import decode, payloads


class StoredFault(TypedDict):
    """`servers.fault`: the instance's Fault as the projector stores it (JSON)."""

    code: int
    message: str
    details: str | None
    created: str  # ISO 8601


class ServerRow(TypedDict):
    """A `servers` row (the columns of projections.api.SERVER_COLUMNS): what the server
    views are made of."""

    uuid: str
    name: str
    project_id: str
    user_id: str
    status: str
    vm_state: str
    task_state: str | None
    power_state: int
    host: str | None
    node: str | None
    availability_zone: str | None
    flavor: payloads.Flavor
    image: IdRef | None  # the request's image record, or only its id (an accepted request)
    addresses: Addresses
    key_name: str | None
    metadata: dict[str, str]
    reservation_id: str
    launch_index: int
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    fault: StoredFault | Fault | None
    volumes_attached: NotRequired[list[str]]  # ids, device order (the live projection's)
    host_zone: NotRequired[str | None]  # the zone of the host's compute service
    config_drive: NotRequired[bool]
    security_groups: NotRequired[list[str]]


def fold_rows(raws: list[bytes]) -> Instance | None:
    state: Instance | None = None
    for raw in raws:
        try:
            state = apply(state, decode(raw))
        except TransitionError:
            break  # a later event out of business-time order: the state stands as it was
    return state


def server_as_of(conn: Connection[Any], server_id: str, moment: datetime) -> Instance | None:
    rows = conn.execute("SELECT raw FROM instance_events WHERE instance_uuid = %s AND "
                        "occurred_at <= %s ORDER BY seq", (server_id, moment)).fetchall()
    return fold_rows([bytes(r[0]) for r in rows])


def cloud_as_of(conn: Connection[Any], moment: datetime,
                project_id: str | None) -> list[Instance]:
    """Every server that existed at `moment` (of one project, or all)."""
    rows = conn.execute(
        "SELECT e.instance_uuid, e.raw FROM instance_events e WHERE e.occurred_at <= %s AND "
        "(%s::text IS NULL OR e.instance_uuid IN (SELECT instance_uuid FROM instance_events "
        " WHERE event_type = 'InstanceBuildRequested' AND payload->>'project_id' = %s)) "
        "ORDER BY e.instance_uuid, e.seq", (moment, project_id, project_id)).fetchall()
    streams: dict[str, list[bytes]] = {}
    for uuid, raw in rows:
        streams.setdefault(uuid, []).append(bytes(raw))
    states = [s for s in (fold_rows(raws) for raws in streams.values()) if s is not None]
    return sorted(states, key=lambda s: (s.created_at, s.uuid), reverse=True)


def as_row(s: Instance) -> ServerRow:
    """An Instance in the shape of a `servers` row, for the same views."""
    return {"uuid": s.uuid, "name": s.name, "project_id": s.project_id, "user_id": s.user_id,
            "status": s.status, "vm_state": s.vm_state, "task_state": s.task_state,
            "power_state": s.power_state, "host": s.host, "node": s.node,
            "availability_zone": s.availability_zone, "flavor": s.flavor, "image": s.image,
            "addresses": addresses(s), "key_name": s.key_name, "metadata": s.metadata,
            "reservation_id": s.reservation_id, "launch_index": s.launch_index,
            "created_at": s.created_at, "updated_at": s.updated_at,
            "launched_at": s.launched_at, "fault": s.fault, "config_drive": s.config_drive,
            "security_groups": list(s.security_groups)}
