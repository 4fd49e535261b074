"""How each event changes the projection tables. Called inside the projector's transaction.

Instance events go through the pure fold (`novalog.domain.instance.apply`);
host and catalog events are upserts that tolerate re-delivery and reordering.
`WRITERS` (by family) is what the projector calls; inside a family, each event type
has its own entry in a table (ACTION_STEPS, HOST_WRITERS, CATALOG_UPSERTS).
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from novalog.domain.instance import Instance, apply, from_json, state_json
from novalog.domain.states import DELETED
from novalog.views import Addresses
from projections.volume_writers import project_volume_event
from schemas import Event, payloads
from schemas.typed import payload_of

Writer = Callable[[Connection[Any], Event, bytes], None]


def addresses(state: Instance) -> Addresses:
    """Nova's `addresses` field: {network name: [{version, addr, type, mac}]}."""
    out: Addresses = {}
    for port in state.ports:
        out.setdefault(port["network_name"], []).append({
            "version": 6 if ":" in port["ip_address"] else 4,
            "addr": port["ip_address"],
            "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
        })
    return out


def _as_is(text: str) -> str:
    """A Jsonb dumps for text that is JSON already."""
    return text


def _iso(value: Any) -> str:
    """json.dumps' `default`: datetimes (in payloads and faults) as ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_dumps = functools.partial(json.dumps, default=_iso)


def project_instance_event(conn: Connection[Any], event: Event, raw: bytes) -> None:
    """Fold one instance event (see InstanceBatch, which the projector uses for many)."""
    batch = InstanceBatch(conn, [event])
    batch.add(event, raw)
    batch.finish()


class InstanceBatch:
    """The instance events of one projector batch, written with a handful of round trips.

    Before the batch: which of its event ids are already projected (first wins)
    and the current state of every server it touches (no row locks: the projector's
    checkpoint holds its partitions' locks for the transaction). Then each event
    is folded in memory, in log order; a refused one raises TransitionError
    before anything of it is written. Writes need no answer, so the projector
    sends them in pipeline mode; each server is written once, at the end.
    """

    def __init__(self, conn: Connection[Any], events: list[Event],
                 known: Mapping[str, Instance] | None = None) -> None:
        """`known`: states this projector committed itself and still owns (FoldCache);
        the others are read from `servers`."""
        self.conn = conn
        ids = [e.event_id for e in events]
        uuids = {e.aggregate_id for e in events}
        known = known or {}
        self.states: dict[str, Instance] = {u: known[u] for u in uuids if u in known}
        missing = sorted(uuids - self.states.keys())
        self.seen = {r[0] for r in conn.execute(
            "SELECT event_id FROM instance_events WHERE event_id = ANY(%s)", (ids,))}
        if missing:
            self.states.update((r[0], from_json(r[1])) for r in conn.execute(
                "SELECT uuid, state FROM servers WHERE uuid = ANY(%s)", (missing,)))
        self.touched: list[str] = []
        self.rows: list[tuple[Any, ...]] = []  # instance_events, written by finish()
        self.actions: list[ActionOp] = []  # instance action steps, applied by finish()

    def fold(self, event: Event) -> Instance | None:
        """The state after `event`, or None for a duplicate; TransitionError if refused."""
        if event.event_id in self.seen:
            return None  # re-delivered: first wins
        return apply(self.states.get(event.aggregate_id), event)

    def add(self, event: Event, raw: bytes, state: Instance | None = None) -> None:
        state = state or self.fold(event)
        if state is None:
            return
        self.seen.add(event.event_id)
        before = self.states.get(event.aggregate_id)
        absorbed = before is not None and before.vm_state == DELETED  # history only
        self.states[event.aggregate_id] = state
        if event.aggregate_id not in self.touched:
            self.touched.append(event.aggregate_id)
        self.rows.append((event.event_id, event.aggregate_id, event.event_type,
                          event.occurred_at, state.vm_state, state.task_state, event.producer,
                          event.correlation_id, Jsonb(event.payload, _dumps), raw))
        if not absorbed:
            _record_action(self.actions, state, event)
            if state.migration is not None and (before is None or
                                                before.migration != state.migration):
                _upsert_migration(self.conn, state, state.migration, event.occurred_at)

    def finish(self) -> None:
        """The batch's events in one statement (one per event was the projector's largest
        share of Postgres's work), in log order; then each server once."""
        if self.rows:
            self.conn.execute(
                "INSERT INTO instance_events (event_id, instance_uuid, event_type, "
                "occurred_at, vm_state, task_state, producer, request_id, payload, raw) "
                "SELECT e, i, t, o, v, k, p, r, j, b FROM unnest(%b::text[], %b::text[], "
                "%b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], "
                "%b::text[], %b::jsonb[], %b::bytea[]) WITH ORDINALITY AS x(e, i, t, o, v, k, "
                "p, r, j, b, n) ORDER BY n ON CONFLICT (event_id) DO NOTHING",  # binary arrays:
                # no per-element quoting in Python (bytea's hex text was the costliest)
                [list(column) for column in zip(*self.rows, strict=True)])
            self.rows.clear()
        if self.actions:  # one statement, not one per step (a third of a replay's time)
            self.conn.execute(APPLY_ACTIONS,
                              [list(column) for column in zip(*self.actions, strict=True)])
            self.actions.clear()
        if self.touched:
            _upsert_servers(self.conn, [self.states[u] for u in self.touched])


class FoldCache:
    """The folded state of the servers a projector wrote last, so a batch need not read
    them back from `servers` (the JSON out of Postgres and back into Python was most of
    a batch's wait). Only states of committed transactions go in; it is emptied whenever
    the projector's partitions are (re)assigned, since another member may have written
    them meanwhile. Deleted servers leave it; at most `limit` are kept (least recent go)."""

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self.states: OrderedDict[str, Instance] = OrderedDict()

    def committed(self, states: Mapping[str, Instance]) -> None:
        for uuid, state in states.items():
            if state.vm_state == DELETED:
                self.states.pop(uuid, None)
                continue
            self.states[uuid] = state
            self.states.move_to_end(uuid)
        while len(self.states) > self.limit:
            self.states.popitem(last=False)

    def clear(self) -> None:
        self.states.clear()


SERVER_COLUMNS = (  # name, Postgres type: the servers table, in unnest's order
    ("uuid", "text"), ("name", "text"), ("project_id", "text"), ("user_id", "text"),
    ("status", "text"), ("vm_state", "text"), ("task_state", "text"), ("power_state", "int"),
    ("host", "text"), ("node", "text"), ("availability_zone", "text"), ("flavor", "jsonb"),
    ("image", "jsonb"), ("addresses", "jsonb"), ("key_name", "text"), ("metadata", "jsonb"),
    ("reservation_id", "text"), ("launch_index", "int"), ("attempt", "int"),
    ("request_id", "text"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
    ("launched_at", "timestamptz"), ("fault", "jsonb"), ("state", "jsonb"))
UPDATED = ("status", "vm_state", "task_state", "power_state", "host", "node", "flavor",
           "addresses", "attempt", "updated_at", "launched_at", "fault", "state")
UPSERT_SERVERS = (
    f"INSERT INTO servers ({', '.join(c for c, _ in SERVER_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for _, t in SERVER_COLUMNS)}) "
    f"ON CONFLICT (uuid) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPDATED)}")


def _upsert_servers(conn: Connection[Any], states: list[Instance]) -> None:
    """Every server of a batch in one statement (one each was the replay's most frequent
    statement after the events themselves); each uuid appears once."""
    rows = [(s.uuid, s.name, s.project_id, s.user_id, s.status, s.vm_state, s.task_state,
             s.power_state, s.host, s.node, s.availability_zone, Jsonb(s.flavor),
             Jsonb(s.image) if s.image else None, Jsonb(addresses(s)), s.key_name,
             Jsonb(s.metadata), s.reservation_id, s.launch_index, s.attempt, s.request_id,
             s.created_at, s.updated_at, s.launched_at,
             Jsonb(s.fault, _dumps) if s.fault else None, Jsonb(state_json(s), _as_is))
            for s in states]
    conn.execute(UPSERT_SERVERS, [list(column) for column in zip(*rows, strict=True)])


def _upsert_migration(conn: Connection[Any], s: Instance, m: payloads.Migration,
                      at: datetime) -> None:
    """Nova's migrations table (GET /os-migrations): one row per move, as it goes on."""
    conn.execute(
        "INSERT INTO migrations (migration_id, instance_uuid, project_id, migration_type, "
        "status, source_compute, source_node, dest_compute, dest_node, old_flavor_id, "
        "new_flavor_id, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (migration_id) DO UPDATE SET status = excluded.status, "
        "dest_compute = excluded.dest_compute, dest_node = excluded.dest_node, "
        "updated_at = excluded.updated_at",
        (m["migration_id"], s.uuid, s.project_id, m["kind"], m["status"], m["source_host"],
         m["source_node"], m["dest_host"], m["dest_node"], m["old_flavor"]["flavorid"],
         m["new_flavor"]["flavorid"], at, at))


# Nova's instance-action event names: the two steps of a build, per attempt, and the
# compute host's part of a delete.
SCHEDULE = "schedule_instances"
BUILD = "compute__do_build_and_run_instance"
TERMINATE = "compute_terminate_instance"


ActionOp = tuple[str, str, str, str | None, str | None, str | None, int | None, str | None,
                 datetime, str | None, str | None]


class _Actions:
    """Nova's instance actions of one server (`create`, with a step per attempt; `delete`,
    with its host's step), as one of its events moves them on. An action is keyed by its
    request id: the creating request's for the build, the event's own for later actions.
    Each step is queued in `ops` (kind, uuid, request id, action or step name, project,
    user, attempt, host, time, result, details or message); InstanceBatch.finish sends a
    batch's ops to `apply_instance_actions` (schema.sql), which runs them in this order."""

    def __init__(self, ops: list[ActionOp], s: Instance, event: Event) -> None:
        self.ops, self.s, self.at = ops, s, event.occurred_at
        self.request_id = s.request_id if event.event_type in BUILD_ACTION_EVENTS \
            else event.correlation_id

    def begin(self, action: str = "create") -> None:
        s = self.s
        self.ops.append(("begin", s.uuid, self.request_id, action, s.project_id, s.user_id,
                         None, None, self.at, None, None))

    def start(self, step: str, attempt: int, host: str | None = None) -> None:
        self.ops.append(("start", self.s.uuid, self.request_id, step, None, None, attempt,
                         host, self.at, None, None))

    def finish(self, step: str, attempt: int, result: str, details: str | None = None,
               host: str | None = None) -> None:
        # (an upsert: the host's answer may be in the log before the step's start)
        self.ops.append(("finish", self.s.uuid, self.request_id, step, None, None, attempt,
                         host, self.at, result, details))

    def end(self, message: str | None) -> None:
        self.ops.append(("end", self.s.uuid, self.request_id, None, None, None, None, None,
                         self.at, None, message))


APPLY_ACTIONS = (
    "SELECT apply_instance_actions(%b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::int[], %b::text[], %b::timestamptz[], %b::text[], "
    "%b::text[])")


def _action_requested(a: _Actions, _e: Event) -> None:
    a.begin()
    a.start(SCHEDULE, 1)


def _action_rescheduled(a: _Actions, e: Event) -> None:
    a.start(SCHEDULE, payload_of(e, payloads.InstanceRescheduled)["attempt"])


def _action_scheduled(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceScheduled)
    a.finish(SCHEDULE, p["attempt"], "Success", host=p["host"])


def _action_no_valid_host(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceNoValidHost)
    a.finish(SCHEDULE, p["attempt"], "Error", p["reason"])
    a.end("Error")


def _action_dispatched(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceBuildDispatched)
    a.start(BUILD, p["attempt"], p["host"])


def _action_claim_refused(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceClaimRefused)
    a.finish(BUILD, p["attempt"], "Error", p["reason"], p["host"])


def _action_build_failed(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceBuildFailed)
    a.finish(BUILD, p["attempt"], "Error", p["reason"], p["host"])


def _action_spawned(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceSpawned)
    a.finish(BUILD, p["attempt"], "Success", host=p["host"])
    a.end(None)


def _action_errored(a: _Actions, _e: Event) -> None:
    a.end("Error")


def _action_delete_requested(a: _Actions, _e: Event) -> None:
    a.begin("delete")


def _action_terminate_started(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceTerminateStarted)
    a.start(TERMINATE, p["attempt"], p["host"])


def _action_deleted(a: _Actions, e: Event) -> None:
    if not payload_of(e, payloads.InstanceDeleted)["local"]:
        a.finish(TERMINATE, a.s.attempt, "Success")
    a.end(None)


def _begin(name: str) -> Callable[[_Actions, Event], None]:
    """A request that starts action `name`, if the fold accepted it."""
    def begin(a: _Actions, e: Event) -> None:
        if a.s.action_request_id == e.correlation_id:
            a.begin(name)
    return begin


def _step(start: str | None = None, finish: str | None = None,
          end: bool = False) -> Callable[[_Actions, Event], None]:
    """An event that starts and / or finishes one of the action's steps (on the host the
    event names), and may end the action. An observation with no cause (the power-state
    sync's) records no action."""
    def step(a: _Actions, e: Event) -> None:
        if e.causation_id is None:
            return
        host = e.payload.get("host")
        if start:
            a.start(start, a.s.attempt, str(host) if host else None)
        if finish:
            a.finish(finish, a.s.attempt, "Success", host=str(host) if host else None)
        if end:
            a.end(None)
    return step


# Nova's action event names of a move, by migration kind: the conductor's, and the step
# each stage of InstanceMigrationFailed fails
CONDUCTOR_STEP = {"resize": "conductor_migrate_server", "migration": "conductor_migrate_server",
                  "live-migration": "conductor_live_migrate_instance",
                  "evacuation": "rebuild_server"}
FAILED_STEP = {
    "resize": {"prep": "compute_prep_resize", "migrate": "compute_resize_instance",
               "finish": "compute_finish_resize"},
    "live-migration": {"prep": "compute_pre_live_migration",
                       "migrate": "compute_live_migration", "finish": "compute_live_migration"},
    "evacuation": {"prep": "compute_rebuild_instance", "finish": "compute_rebuild_instance"},
}
FAILED_STEP["migration"] = FAILED_STEP["resize"]


def _kind(a: _Actions) -> str:
    return a.s.migration["kind"] if a.s.migration else "resize"


def _action_conductor(a: _Actions, e: Event) -> None:
    step = CONDUCTOR_STEP[_kind(a)]
    if e.event_type == "InstanceMigrationStarted":
        a.start(step, a.s.attempt)
    else:
        a.finish(step, a.s.attempt, "Success")


def _action_move_failed(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceMigrationFailed)
    kind = _kind(a)
    step = CONDUCTOR_STEP[kind] if p["stage"] == "scheduling" else \
        FAILED_STEP[kind].get(p["stage"], p["stage"])
    a.finish(step, a.s.attempt, "Error", p["reason"], p["dest_host"])
    a.end("Error")


def _action_claimed(a: _Actions, e: Event) -> None:
    p = payload_of(e, payloads.InstanceMigrationClaimed)
    m = a.s.migration
    kind = m["kind"] if m else "resize"
    if kind == "evacuation":
        a.start("compute_rebuild_instance", a.s.attempt, p["host"])
        return
    step = "compute_pre_live_migration" if kind == "live-migration" else "compute_prep_resize"
    a.start(step, a.s.attempt, p["host"])
    a.finish(step, a.s.attempt, "Success")


# The instance events that move a server's actions on, by type.
ACTION_STEPS: dict[str, Callable[[_Actions, Event], None]] = {
    "InstanceDeleteRequested": _action_delete_requested,
    "InstanceTerminateStarted": _action_terminate_started,
    "InstanceDeleted": _action_deleted,
    "InstanceRebootRequested": _begin("reboot"),
    "InstanceRebootPending": _step(start="compute_reboot_instance"),
    "InstanceRebooted": _step(finish="compute_reboot_instance", end=True),
    "InstanceStopRequested": _begin("stop"),
    "InstanceStopped": _step(start="compute_stop_instance", finish="compute_stop_instance",
                             end=True),
    "InstanceStartRequested": _begin("start"),
    "InstanceStarted": _step(start="compute_start_instance", finish="compute_start_instance",
                             end=True),
    "InstanceResizeRequested": lambda a, e: _begin(
        "migrate" if e.payload.get("migrate") else "resize")(a, e),
    "InstanceLiveMigrationRequested": _begin("live-migration"),
    "InstanceEvacuateRequested": _begin("evacuate"),
    "InstanceMigrationStarted": _action_conductor,
    "InstanceMigrationScheduled": _action_conductor,
    "InstanceMigrationClaimed": _action_claimed,
    "InstanceMigrationFailed": _action_move_failed,
    "InstanceResizeMigrating": _step(start="compute_resize_instance"),
    "InstanceResizeMigrated": _step(finish="compute_resize_instance"),
    "InstanceResizeFinishing": _step(start="compute_finish_resize"),
    "InstanceResized": _step(finish="compute_finish_resize", end=True),
    "InstanceResizeConfirmRequested": _begin("confirmResize"),
    "InstanceResizeConfirmed": _step(start="compute_confirm_resize",
                                     finish="compute_confirm_resize", end=True),
    "InstanceResizeRevertRequested": _begin("revertResize"),
    "InstanceResizeReverted": _step(start="compute_finish_revert_resize",
                                    finish="compute_finish_revert_resize", end=True),
    "InstanceLiveMigrationStarted": _step(start="compute_live_migration"),
    "InstanceLiveMigrated": _step(finish="compute_live_migration", end=True),
    "InstanceEvacuated": _step(finish="compute_rebuild_instance", end=True),
    "InstanceRescueRequested": _begin("rescue"),
    "InstanceRescued": _step(start="compute_rescue_instance",
                             finish="compute_rescue_instance", end=True),
    "InstanceUnrescueRequested": _begin("unrescue"),
    "InstanceUnrescued": _step(start="compute_unrescue_instance",
                               finish="compute_unrescue_instance", end=True),
    "InstanceBuildRequested": _action_requested,
    "InstanceRescheduled": _action_rescheduled,
    "InstanceScheduled": _action_scheduled,
    "InstanceNoValidHost": _action_no_valid_host,
    "InstanceBuildDispatched": _action_dispatched,
    "InstanceClaimRefused": _action_claim_refused,
    "InstanceBuildFailed": _action_build_failed,
    "InstanceSpawned": _action_spawned,
    "InstanceErrored": _action_errored,
}


# The events of the boot's own action (keyed by the creating request); every other
# action is keyed by its events' request id.
BUILD_ACTION_EVENTS = frozenset({
    "InstanceBuildRequested", "InstanceRescheduled", "InstanceScheduled",
    "InstanceNoValidHost", "InstanceBuildDispatched", "InstanceClaimRefused",
    "InstanceBuildFailed", "InstanceSpawned", "InstanceErrored"})


def _record_action(ops: list[ActionOp], s: Instance, event: Event) -> None:
    step = ACTION_STEPS.get(event.event_type)
    if step is not None:
        step(_Actions(ops, s, event), event)


def _upsert_service(conn: Connection[Any], host: str, binary: str, zone: str,
                    at: datetime) -> None:
    conn.execute(
        "INSERT INTO services (host, service_binary, zone, last_heartbeat, created_at, "
        "updated_at) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (host, service_binary) DO UPDATE SET "
        "zone = excluded.zone, last_heartbeat = GREATEST(services.last_heartbeat, "
        "excluded.last_heartbeat), updated_at = GREATEST(services.updated_at, "
        "excluded.updated_at)",
        (host, binary, zone, at, at, at))


def _service_started(conn: Connection[Any], e: Event) -> None:
    p = payload_of(e, payloads.ServiceStarted)
    _upsert_service(conn, p["host"], p["binary"], p["zone"], e.occurred_at)


def _compute_started(conn: Connection[Any], e: Event) -> None:
    p, at = payload_of(e, payloads.ComputeServiceStarted), e.occurred_at
    _upsert_service(conn, p["host"], p["binary"], p["zone"], at)
    conn.execute(
        "INSERT INTO compute_nodes (host, node, hypervisor_type, host_ip, updated_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (host) DO UPDATE SET node = excluded.node, "
        "hypervisor_type = excluded.hypervisor_type, host_ip = excluded.host_ip",
        (p["host"], p["hypervisor_hostname"], p["hypervisor_type"], p["host_ip"], at))


def _resources_reported(conn: Connection[Any], e: Event) -> None:
    p, at = payload_of(e, payloads.ComputeResourcesReported), e.occurred_at
    conn.execute(
        """INSERT INTO compute_nodes (host, node, hypervisor_type, cpu_arch, vcpus, memory_mb,
            local_gb, vcpus_used, memory_mb_used, local_gb_used, running_vms,
            cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (host) DO UPDATE SET node = excluded.node, cpu_arch = excluded.cpu_arch,
            vcpus = excluded.vcpus, memory_mb = excluded.memory_mb,
            local_gb = excluded.local_gb, vcpus_used = excluded.vcpus_used,
            memory_mb_used = excluded.memory_mb_used, local_gb_used = excluded.local_gb_used,
            running_vms = excluded.running_vms,
            cpu_allocation_ratio = excluded.cpu_allocation_ratio,
            ram_allocation_ratio = excluded.ram_allocation_ratio,
            disk_allocation_ratio = excluded.disk_allocation_ratio,
            updated_at = excluded.updated_at
        WHERE compute_nodes.updated_at <= excluded.updated_at
            AND EXISTS (SELECT 1 FROM services WHERE host = excluded.host
                        AND service_binary = 'nova-compute')""",
        (p["host"], p["node"], p["hypervisor_type"], p["cpu_arch"], p["vcpus"],
         p["memory_mb"], p["local_gb"], p["vcpus_used"], p["memory_mb_used"],
         p["local_gb_used"], p["running_vms"], p["cpu_allocation_ratio"],
         p["ram_allocation_ratio"], p["disk_allocation_ratio"], at))


def _heartbeat(conn: Connection[Any], e: Event) -> None:
    p, at = payload_of(e, payloads.ServiceHeartbeat), e.occurred_at
    conn.execute(
        "UPDATE services SET last_heartbeat = GREATEST(last_heartbeat, %s), "
        "updated_at = GREATEST(updated_at, %s) WHERE host = %s AND service_binary = %s",
        (at, at, p["host"], p["binary"]))


def _set_disabled(conn: Connection[Any], e: Event, host: str, binary: str, disabled: bool,
                  reason: str | None) -> None:
    conn.execute(
        "UPDATE services SET disabled = %s, disabled_reason = %s, updated_at = %s "
        "WHERE host = %s AND service_binary = %s",
        (disabled, reason, e.occurred_at, host, binary))


def _service_disabled(conn: Connection[Any], e: Event) -> None:
    p = payload_of(e, payloads.ServiceDisabled)
    _set_disabled(conn, e, p["host"], p["binary"], True, p["reason"])


def _service_enabled(conn: Connection[Any], e: Event) -> None:
    p = payload_of(e, payloads.ServiceEnabled)
    _set_disabled(conn, e, p["host"], p["binary"], False, None)


def _host_removed(conn: Connection[Any], e: Event) -> None:
    host = payload_of(e, payloads.HostRemoved)["host"]
    conn.execute("DELETE FROM services WHERE host = %s AND service_binary = 'nova-compute'",
                 (host,))
    conn.execute("DELETE FROM compute_nodes WHERE host = %s", (host,))


def _service_deleted(conn: Connection[Any], e: Event) -> None:
    p = payload_of(e, payloads.ServiceDeleted)
    conn.execute("DELETE FROM services WHERE host = %s AND service_binary = %s",
                 (p["host"], p["binary"]))
    if p["binary"] == "nova-compute":
        conn.execute("DELETE FROM compute_nodes WHERE host = %s", (p["host"],))


# Host facts, by type: services and compute nodes.
HOST_WRITERS: dict[str, Callable[[Connection[Any], Event], None]] = {
    "ComputeServiceStarted": _compute_started,
    "ServiceStarted": _service_started,
    "ComputeResourcesReported": _resources_reported,
    "ServiceHeartbeat": _heartbeat,
    "ServiceDisabled": _service_disabled,
    "ServiceEnabled": _service_enabled,
    "HostRemoved": _host_removed,
    "ServiceDeleted": _service_deleted,
}


def project_host_event(conn: Connection[Any], event: Event, _raw: bytes = b"") -> None:
    """Services and compute nodes; a late or repeated fact never moves time backwards."""
    write = HOST_WRITERS.get(event.event_type)
    if write is not None:
        write(conn, event)


CATALOG_UPSERTS: dict[str, tuple[str, list[str], list[str]]] = {
    # event type: (table, columns from the payload, primary key)
    "FlavorCreated": ("flavors", ["flavorid", "name", "vcpus", "memory_mb", "root_gb",
                                  "ephemeral_gb", "swap_mb", "is_public", "extra_specs"],
                      ["flavorid"]),
    "ImageRegistered": ("images", ["image_id", "name", "status", "disk_format",
                                   "container_format", "size", "checksum", "min_disk",
                                   "min_ram", "location", "visibility", "properties",
                                   "owner"], ["image_id"]),
    "NetworkCreated": ("networks", ["network_id", "name", "cidr", "gateway_ip",
                                    "allocation_start", "allocation_end", "project_id",
                                    "shared"], ["network_id"]),
    "ProjectCreated": ("projects", ["project_id", "name", "domain"], ["project_id"]),
    "UserCreated": ("users", ["user_id", "name", "password_hash", "default_project_id",
                              "domain"], ["user_id"]),
    "RoleAssigned": ("role_assignments", ["user_id", "project_id", "role"],
                     ["user_id", "project_id", "role"]),
    "QuotaSet": ("quotas", ["project_id", "resource", "limit"], ["project_id", "resource"]),
    "KeypairCreated": ("keypairs", ["user_id", "name", "public_key", "fingerprint", "type"],
                       ["user_id", "name"]),
    "ServerGroupCreated": ("server_groups", ["group_id", "name", "policy", "project_id",
                                             "user_id"], ["group_id"]),
}
CATALOG_DELETES = {  # event type: (table, the key columns, from the payload)
    "KeypairDeleted": ("keypairs", ["user_id", "name"]),
    "ServerGroupDeleted": ("server_groups", ["group_id"]),
    "ImageDeleted": ("images", ["image_id"]),
    "NetworkDeleted": ("networks", ["network_id"]),
    "FlavorDeleted": ("flavors", ["flavorid"]),
}
STAMPED = {"images", "keypairs", "server_groups"}  # created_at = the event's occurred_at


def project_catalog_event(conn: Connection[Any], event: Event, _raw: bytes = b"") -> None:
    """Catalog facts are upserts keyed by the entity: re-delivery changes nothing."""
    if event.event_type in CATALOG_DELETES:
        table, key = CATALOG_DELETES[event.event_type]
        conn.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = %s" for k in key),
                     [event.payload[k] for k in key])
        return
    if event.event_type == "ImageUploaded":  # data stored: active (a no-op once deleted)
        p = payload_of(event, payloads.ImageUploaded)
        conn.execute("UPDATE images SET status = 'active', size = %s, checksum = %s, "
                     "os_hash_value = %s, virtual_size = %s, location = %s, updated_at = %s "
                     "WHERE image_id = %s",
                     (p["size"], p["checksum"], p["os_hash_value"], p["virtual_size"],
                      p["location"], event.occurred_at, p["image_id"]))
        return
    if event.event_type == "FlavorExtraSpecsSet":
        specs = payload_of(event, payloads.FlavorExtraSpecsSet)
        conn.execute("UPDATE flavors SET extra_specs = %s WHERE flavorid = %s",
                     (Jsonb(specs["extra_specs"]), specs["flavorid"]))
        return
    if event.event_type == "SubnetCreated":
        sub = payload_of(event, payloads.SubnetCreated)
        conn.execute("UPDATE networks SET cidr = %s, gateway_ip = %s, allocation_start = %s, "
                     "allocation_end = %s, subnet_name = %s WHERE network_id = %s",
                     (sub["cidr"], sub["gateway_ip"], sub["allocation_start"],
                      sub["allocation_end"], sub["name"], sub["network_id"]))
        return
    spec = CATALOG_UPSERTS.get(event.event_type)
    if spec is None:
        return
    table, fields, key = spec
    columns = ["hard_limit" if f == "limit" else f for f in fields]
    values = [Jsonb(v) if isinstance(v, dict) else v
              for v in (event.payload[f] for f in fields)]
    if table in STAMPED:
        columns, values = [*columns, "created_at"], [*values, event.occurred_at]
    updates = [c for c in columns if c not in key]
    set_clause = ", ".join(f"{c} = excluded.{c}" for c in updates) if updates else None
    conflict = f"ON CONFLICT ({', '.join(key)}) " + (f"DO UPDATE SET {set_clause}"
                                                      if set_clause else "DO NOTHING")
    placeholders = ", ".join(["%s"] * len(columns))
    conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
                 f"{conflict}", values)


WRITERS: dict[str, Writer] = {"instance": project_instance_event, "host": project_host_event,
                              "catalog": project_catalog_event, "volume": project_volume_event}
