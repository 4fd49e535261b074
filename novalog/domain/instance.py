"""The fold of one instance's events into its current state, and the boot's transition rules.

`apply(state, event)` is the only place that decides what an instance event
means. The projector, the audit trail, time travel and the roles that need an
instance's state all call it, so they can never disagree.

Rules:
- Events of a past attempt (a late claim refusal from a host the conductor
  has already given up on) are facts for the audit trail, but they do not
  change the state.
- An event that makes no sense in the current state (a spawn after an error,
  anything before the build request) raises TransitionError. Consumers
  dead-letter it with that reason.
- A move (resize, cold or live migration, evacuation) is one migration record in the
  state, opened by the conductor (InstanceMigrationStarted) and closed by the step that
  ends it; its status follows Nova's migration statuses (docs/lifecycle.md).
- Delete is allowed from any state (as in Nova): InstanceDeleteRequested sets
  task_state `deleting`, which the build steps that may still be under way keep;
  InstanceDeleted ends it. A deleted instance absorbs late events (a build step
  or a second InstanceDeleted from a path that raced the delete): they stay in
  its history but change nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypedDict, cast

from novalog.domain import states as s
from novalog.domain.actions import RESIZE_FINISHED, refusal
from schemas import Event, payloads
from schemas.typed import payload_of

NO_VALID_HOST = "No valid host was found. "
NOT_ENOUGH_HOSTS = "There are not enough hosts available."


def filter_counts(filters: Iterable[payloads.FilterResult]) -> str:
    """Which filter removed how many hosts: NoValidHost's details, for admins only (Nova
    keeps them in the scheduler's log; members see only NOT_ENOUGH_HOSTS)."""
    removed = [f"{f['filter']} removed {f['hosts_in'] - f['hosts_out']} of {f['hosts_in']}"
               for f in filters if f["hosts_in"] != f["hosts_out"]]
    return "; ".join(removed) or "no compute host is known"


def instance_name(instance_uuid: str) -> str:
    """Nova's instance_name_template, `instance-%08x` of the instance's number: the
    libvirt domain's name and the API's OS-EXT-SRV-ATTR:instance_name. Nova numbers
    instances with a database sequence; novalog derives 48 bits from the uuid, the
    same in every replay and never coordinated (a clash is a 1-in-10^4 chance with a
    hundred thousand guests on one libvirtd)."""
    digest = hashlib.sha256(instance_uuid.encode()).digest()
    return f"instance-{int.from_bytes(digest[:6], 'big'):08x}"


class TransitionError(ValueError):
    """An event that cannot happen in the instance's current state."""


class Fault(TypedDict):
    """Nova's instance fault: why the instance is in error, and since when."""

    code: int
    message: str
    details: str | None
    created: datetime


@dataclass(frozen=True)
class Instance:
    """What Nova's API shows about a server, plus what the boot flow needs to go on."""

    uuid: str
    name: str
    project_id: str
    user_id: str
    reservation_id: str
    launch_index: int
    flavor: payloads.Flavor
    image: payloads.Image | None
    requested_networks: list[payloads.RequestedNetwork]
    key_name: str | None
    metadata: dict[str, str]
    availability_zone: str | None
    request_id: str
    created_at: datetime
    updated_at: datetime
    vm_state: str = s.BUILDING
    task_state: str | None = s.SCHEDULING
    power_state: int = s.NOSTATE
    host: str | None = None
    node: str | None = None
    attempt: int = 1
    tried_hosts: tuple[str, ...] = ()
    ports: tuple[payloads.Port, ...] = ()
    disks: tuple[payloads.Disk, ...] = ()
    launched_at: datetime | None = None
    terminated_at: datetime | None = None
    fault: Fault | None = None
    action_request_id: str | None = None  # the request whose task is in progress
    migration: payloads.Migration | None = None  # the move under way (resize ... evacuate)
    config_drive: bool = False
    security_groups: tuple[str, ...] = ()  # as asked for; none: Nova's "default"
    events_applied: int = 1

    @property
    def status(self) -> str:
        return s.api_status(self.vm_state, self.task_state)


_FIELD_NAMES = frozenset(f.name for f in fields(Instance))


def evolve(state: Instance, **changes: Any) -> Instance:
    """dataclasses.replace, without the frozen __init__ that sets every field through
    object.__setattr__: the fold makes two new states per event, and that was a fifth of
    a replay's time."""
    unknown = changes.keys() - _FIELD_NAMES
    if unknown:
        raise TypeError(f"Instance has no field {', '.join(sorted(unknown))}")
    new = object.__new__(Instance)
    new.__dict__.update(state.__dict__, **changes)
    return new


BUILD_STEPS = {
    "InstanceNetworkingStarted": s.NETWORKING,
    "InstanceBlockDeviceMappingStarted": s.BLOCK_DEVICE_MAPPING,
    "InstanceSpawningStarted": s.SPAWNING,
}
ATTEMPT_EVENTS = {
    "InstanceScheduled", "InstanceBuildDispatched", "InstanceClaimAccepted",
    "InstanceClaimRefused", "InstanceNetworkAllocated", "InstanceBlockDevicesMapped",
    "InstanceSpawned", "InstanceBuildFailed", *BUILD_STEPS,
}

# Records that change nothing and whose successors come from another producer. The
# conductor writes InstanceBuildDispatched, then casts the build to the host's topic; when
# the instances partition's leader fails over between the two, the host's claim and spawn
# (its own producer) can reach the log first. A build that already ended absorbs it.
LATE_RECORDS = frozenset({"InstanceBuildDispatched"})


def created(event: Event) -> Instance:
    """The state right after InstanceBuildRequested."""
    p = payload_of(event, payloads.InstanceBuildRequested)
    return Instance(
        uuid=event.aggregate_id, name=p["name"], project_id=p["project_id"],
        user_id=p["user_id"], reservation_id=p["reservation_id"],
        launch_index=p["launch_index"], flavor=p["flavor"], image=p["image"],
        requested_networks=p["networks"], key_name=p["key_name"], metadata=p["metadata"],
        availability_zone=p["availability_zone"], request_id=event.correlation_id,
        created_at=event.occurred_at, updated_at=event.occurred_at,
        # (.get: fields added later than the first requests, absent from their JSON)
        config_drive=p.get("config_drive", False),
        security_groups=tuple(p.get("security_groups", ())),
    )


def apply(state: Instance | None, event: Event) -> Instance:
    """The instance after `event`; raises TransitionError when the event cannot happen now."""
    kind = event.event_type
    if state is None:
        if kind != "InstanceBuildRequested":
            raise TransitionError(f"{kind} for unknown instance {event.aggregate_id}")
        return created(event)
    if kind == "InstanceBuildRequested":
        raise TransitionError(f"instance {state.uuid} was already requested")
    moved = evolve(state, updated_at=event.occurred_at, events_applied=state.events_applied + 1)
    if state.vm_state == s.DELETED:
        return evolve(state, events_applied=moved.events_applied)  # absorbed, see above
    lifecycle = LIFECYCLE.get(kind)
    if lifecycle is not None:
        return lifecycle(moved, event)
    if state.vm_state != s.BUILDING:
        if kind in LATE_RECORDS:
            return evolve(state, events_applied=moved.events_applied)
        raise TransitionError(f"{kind} for instance {state.uuid} in vm_state {state.vm_state}")
    if kind in ATTEMPT_EVENTS and event.payload["attempt"] != state.attempt:
        return evolve(state, events_applied=state.events_applied + 1)  # stale attempt
    transition = TRANSITIONS.get(kind)
    if transition is None:
        raise TransitionError(f"{kind} is not an instance event")
    new = transition(moved, event)
    if state.task_state == s.DELETING:  # the build goes on, the delete is still pending
        new = evolve(new, task_state=s.DELETING)
    return new


# -- what each instance event changes, given the state already moved on (updated_at) ----
def _scheduled(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceScheduled)
    return evolve(new, host=p["host"], node=p["node"], tried_hosts=(*new.tried_hosts, p["host"]))


def _build_step(new: Instance, event: Event) -> Instance:
    return evolve(new, task_state=BUILD_STEPS[event.event_type])


def _network_allocated(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceNetworkAllocated)
    return evolve(new, ports=tuple(p["ports"]))


def _block_devices_mapped(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceBlockDevicesMapped)
    return evolve(new, disks=tuple(p["disks"]))


def _spawned(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceSpawned)
    return evolve(new, vm_state=s.ACTIVE, task_state=None, power_state=p["power_state"],
                   host=p["host"], node=p["node"], launched_at=p["launched_at"])


def _released(new: Instance, _event: Event) -> Instance:
    """A refused claim or a failed build: what it took is released."""
    return evolve(new, ports=(), disks=())


def _rescheduled(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceRescheduled)
    return evolve(new, attempt=p["attempt"], host=None, node=None, task_state=s.SCHEDULING)


def _no_valid_host(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceNoValidHost)
    return _errored(new, 500, NO_VALID_HOST + p["reason"], filter_counts(p["filters"]))


def _instance_errored(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceErrored)
    return _errored(new, p["code"], p["message"], p["details"])


def _unchanged(new: Instance, _event: Event) -> Instance:
    return new


def _errored(state: Instance, code: int, message: str, details: str | None = None) -> Instance:
    return evolve(state, vm_state=s.ERROR, task_state=None, power_state=s.NOSTATE,
                   ports=(), disks=(),
                   fault=Fault(code=code, message=message, details=details,
                               created=state.updated_at))


# The instance events after InstanceBuildRequested, by type.
TRANSITIONS: dict[str, Callable[[Instance, Event], Instance]] = {
    "InstanceScheduled": _scheduled,
    **dict.fromkeys(BUILD_STEPS, _build_step),
    "InstanceNetworkAllocated": _network_allocated,
    "InstanceBlockDevicesMapped": _block_devices_mapped,
    "InstanceSpawned": _spawned,
    "InstanceClaimRefused": _released,
    "InstanceBuildFailed": _released,
    "InstanceRescheduled": _rescheduled,
    "InstanceNoValidHost": _no_valid_host,
    "InstanceErrored": _instance_errored,
    "InstanceBuildDispatched": _unchanged,
    "InstanceClaimAccepted": _unchanged,
}


def _delete_requested(new: Instance, _event: Event) -> Instance:
    return evolve(new, task_state=s.DELETING)


def _deleted(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceDeleted)
    return evolve(new, vm_state=s.DELETED, task_state=None, power_state=s.NOSTATE,
                   ports=(), disks=(), terminated_at=p["terminated_at"])


def _requested_action(action: str, task_state: str) -> Callable[[Instance, Event],
                                                                  Instance]:
    """An action request: its task state when Nova's rules allow it now; otherwise the fold
    keeps the state (the request stays in the history, and no role acts on it: they act
    only on the request the state names, `action_request_id`)."""
    def requested(new: Instance, event: Event) -> Instance:
        if refusal(action, new.uuid, new.vm_state, new.task_state,
                   new.launched_at is not None) or open_migration(new) is not None:
            return new  # (a move waiting for confirm / revert takes no other action)
        return evolve(new, task_state=task_state, action_request_id=event.correlation_id)
    return requested


def _reboot_requested(new: Instance, event: Event) -> Instance:
    hard = payload_of(event, payloads.InstanceRebootRequested)["type"] == "HARD"
    return _requested_action("reboot_hard" if hard else "reboot",
                             s.REBOOTING_HARD if hard else s.REBOOTING)(new, event)


def _reboot_step(pending: bool) -> Callable[[Instance, Event], Instance]:
    def step(new: Instance, event: Event) -> Instance:
        hard = bool(event.payload.get("hard"))
        if pending:
            return evolve(new, task_state=s.REBOOT_PENDING_HARD if hard else s.REBOOT_PENDING)
        return evolve(new, task_state=s.REBOOT_STARTED_HARD if hard else s.REBOOT_STARTED)
    return step


def _action_done(vm_state: str) -> Callable[[Instance, Event], Instance]:
    def done(new: Instance, event: Event) -> Instance:
        power = event.payload.get("power_state")
        task = s.DELETING if new.task_state == s.DELETING else None  # a delete came meanwhile
        return evolve(new, vm_state=vm_state, task_state=task, action_request_id=None,
                       power_state=power if isinstance(power, int) else new.power_state,
                       fault=None if vm_state == s.ACTIVE else new.fault)
    return done


# -- moves: resize, cold and live migration, evacuation ------------------------------------
MIGRATION_STATUS = {  # Nova's migration status after each step, by migration kind
    "resize": {"started": "pre-migrating", "migrating": "migrating",
               "migrated": "post-migrating", "finished": "finished", "confirming": "confirming",
               "confirmed": "confirmed", "reverting": "reverting", "reverted": "reverted",
               "failed": "error"},
    "live-migration": {"started": "accepted", "scheduled": "queued", "claimed": "preparing",
                       "migrating": "running", "finished": "completed", "failed": "failed"},
    "evacuation": {"started": "accepted", "claimed": "pre-migrating", "finished": "done",
                   "cleaned": "completed", "failed": "failed"},
}
MIGRATION_STATUS["migration"] = MIGRATION_STATUS["resize"]
CLOSED = frozenset({"confirmed", "reverted", "completed", "done", "error", "failed"})


def open_migration(state: Instance, migration_id: object = None) -> payloads.Migration | None:
    """The instance's migration while it is under way (or waits for confirm / revert);
    with `migration_id`, only if it is that one. The last one stays in the state, closed."""
    m = state.migration
    if m is None or m["status"] in CLOSED:
        return None
    if migration_id is not None and m["migration_id"] != migration_id:
        return None
    return m


def _with_status(m: payloads.Migration, step: str) -> payloads.Migration:
    return {**m, "status": MIGRATION_STATUS[m["kind"]].get(step, m["status"])}


def _task(new: Instance, task_state: str | None) -> str | None:
    return s.DELETING if new.task_state == s.DELETING else task_state


def _migration_step(step: str | None, task_state: str | None = None,
                    ) -> Callable[[Instance, Event], Instance]:
    """A step of the open migration: its status (and the task state) move on. An event
    of another migration than the open one is history only."""
    def moved(new: Instance, event: Event) -> Instance:
        m = open_migration(new, event.payload.get("migration_id"))
        if m is None:
            return new
        task = new.task_state if task_state is None else _task(new, task_state)
        return evolve(new, migration=_with_status(m, step) if step else m, task_state=task)
    return moved


def _resize_requested(new: Instance, event: Event) -> Instance:
    migrate = payload_of(event, payloads.InstanceResizeRequested)["migrate"]
    return _requested_action("migrate" if migrate else "resize", s.RESIZE_PREP)(new, event)


def _migration_started(new: Instance, event: Event) -> Instance:
    if new.action_request_id != event.correlation_id or open_migration(new) is not None:
        return new  # not the request in progress, or another move is not over
    return evolve(new, migration=payload_of(event, payloads.InstanceMigrationStarted)[
        "migration"])


def _migration_scheduled(new: Instance, event: Event) -> Instance:
    p = payload_of(event, payloads.InstanceMigrationScheduled)
    m = open_migration(new, p["migration_id"])
    if m is None:
        return new
    return evolve(new, migration={**_with_status(m, "scheduled"), "dest_host": p["host"],
                                   "dest_node": p["node"]})


def _answer_requested(action: str, task_state: str | None,
                      step: str) -> Callable[[Instance, Event], Instance]:
    """confirmResize / revertResize: allowed only while the resize waits for the answer."""
    def requested(new: Instance, event: Event) -> Instance:
        m = open_migration(new)
        if m is None or m["status"] != RESIZE_FINISHED or refusal(
                action, new.uuid, new.vm_state, new.task_state, True):
            return new
        return evolve(new, task_state=task_state, action_request_id=event.correlation_id,
                       migration=_with_status(m, step))
    return requested


class _Arrived(TypedDict):
    """What the events that end a move share (InstanceResized, ...Reverted, ...)."""

    migration_id: str
    host: str
    node: str
    power_state: int
    disks: list[payloads.Disk]


def _arrived(step: str, vm_state: str | None = None,
             flavor: str | None = None) -> Callable[[Instance, Event], Instance]:
    """A move that put the instance on the event's host: `flavor` (new / old) from the
    migration; vm_state given, or back to what it was before the move (None)."""
    def done(new: Instance, event: Event) -> Instance:
        p = cast(_Arrived, event.payload)
        m = open_migration(new, p["migration_id"])
        if m is None:
            return new
        state = vm_state or (s.STOPPED if m["old_vm_state"] == s.STOPPED else s.ACTIVE)
        waiting = state == s.RESIZED  # for confirm / revert: the request stays the owner
        return evolve(
            new, vm_state=state, task_state=_task(new, None), host=p["host"], node=p["node"],
            power_state=p["power_state"], disks=tuple(p["disks"]),
            flavor={"new": m["new_flavor"], "old": m["old_flavor"]}.get(flavor or "",
                                                                     new.flavor),
            migration=_with_status(m, step),
            action_request_id=new.action_request_id if waiting else None,
            fault=None if state == s.ACTIVE else new.fault)
    return done


def _resize_confirmed(new: Instance, event: Event) -> Instance:
    m = open_migration(new, event.payload.get("migration_id"))
    if m is None:
        return new
    stopped = new.power_state in (s.SHUTDOWN, s.CRASHED)  # Nova: by the power state
    return evolve(new, vm_state=s.STOPPED if stopped else s.ACTIVE, action_request_id=None,
                   task_state=_task(new, None), migration=_with_status(m, "confirmed"))


def _source_cleaned(new: Instance, event: Event) -> Instance:
    m = new.migration  # an evacuation is done before its old host comes back to clean
    if m is None or m["migration_id"] != event.payload.get("migration_id") or \
            m["kind"] != "evacuation" or m["status"] != "done":
        return new
    return evolve(new, migration=_with_status(m, "cleaned"))


def _migration_failed(new: Instance, event: Event) -> Instance:
    """Rolled back: as before the request, with a fault saying why (Nova keeps the
    status); otherwise in error, still on the source host with its addresses."""
    p = payload_of(event, payloads.InstanceMigrationFailed)
    m = open_migration(new, p["migration_id"])
    if m is None:
        return new
    message = f"{m['kind']} of {new.uuid} failed at {p['stage']}: {p['reason']}"
    status = "error" if p["stage"] == "scheduling" else \
        MIGRATION_STATUS[m["kind"]]["failed"]  # Nova: a pre-check failure is an error
    closed = evolve(new, migration={**m, "status": status}, action_request_id=None)
    if not p["rolled_back"]:
        return evolve(_errored(closed, 500, message), ports=new.ports, disks=new.disks)
    return evolve(closed, vm_state=m["old_vm_state"], task_state=_task(new, None),
                   fault=Fault(code=500, message=message, details=p["reason"],
                               created=new.updated_at))


# Instance events allowed in any state but deleted (the lifecycle after the build).
LIFECYCLE: dict[str, Callable[[Instance, Event], Instance]] = {
    "InstanceDeleteRequested": _delete_requested,
    "InstanceTerminateStarted": _unchanged,
    "InstanceDeleted": _deleted,
    "InstanceRebootRequested": _reboot_requested,
    "InstanceRebootPending": _reboot_step(pending=True),
    "InstanceRebootStarted": _reboot_step(pending=False),
    "InstanceRebooted": _action_done(s.ACTIVE),
    "InstanceStopRequested": _requested_action("stop", s.POWERING_OFF),
    "InstanceStopped": _action_done(s.STOPPED),
    "InstanceStartRequested": _requested_action("start", s.POWERING_ON),
    "InstanceStarted": _action_done(s.ACTIVE),
    "InstanceResizeRequested": _resize_requested,
    "InstanceLiveMigrationRequested": _requested_action("os-migrateLive", s.MIGRATING),
    "InstanceEvacuateRequested": _requested_action("evacuate", s.REBUILDING),
    "InstanceMigrationStarted": _migration_started,
    "InstanceMigrationScheduled": _migration_scheduled,
    "InstanceMigrationClaimed": _migration_step("claimed"),
    "InstanceMigrationFailed": _migration_failed,
    "InstanceResizeMigrating": _migration_step("migrating", s.RESIZE_MIGRATING),
    "InstanceResizeMigrated": _migration_step("migrated", s.RESIZE_MIGRATED),
    "InstanceResizeFinishing": _migration_step("finishing", s.RESIZE_FINISH),
    "InstanceResized": _arrived("finished", s.RESIZED, "new"),
    "InstanceResizeConfirmRequested": _answer_requested("confirmResize", None, "confirming"),
    "InstanceResizeConfirmed": _resize_confirmed,
    "InstanceResizeRevertRequested": _answer_requested("revertResize", s.RESIZE_REVERTING,
                                                       "reverting"),
    "InstanceResizeReverted": _arrived("reverted", flavor="old"),
    "InstanceLiveMigrationStarted": _migration_step("migrating"),
    "InstanceLiveMigrated": _arrived("finished"),
    "InstanceMigrationSourceCleaned": _source_cleaned,
    "InstanceRebuildBlockDeviceMapping": _migration_step(None, s.REBUILD_BLOCK_DEVICE_MAPPING),
    "InstanceRebuildSpawning": _migration_step(None, s.REBUILD_SPAWNING),
    "InstanceEvacuated": _arrived("finished"),
    "InstanceRescueRequested": _requested_action("rescue", s.RESCUING),
    "InstanceRescued": _action_done(s.RESCUED),
    "InstanceUnrescueRequested": _requested_action("unrescue", s.UNRESCUING),
    "InstanceUnrescued": _action_done(s.ACTIVE),
    "InstancePowerStateChanged": lambda new, e: evolve(
        new, power_state=payload_of(e, payloads.InstancePowerStateChanged)["power_state"]),
}


_TIMES = ("created_at", "updated_at", "launched_at", "terminated_at")
_FIELDS = fields(Instance)


def state_json(state: Instance) -> str:
    """The state as JSON text: what the projector stores, and from_json reads back."""
    d = {f.name: getattr(state, f.name) for f in _FIELDS}  # not asdict: no deep copy
    for key in _TIMES:
        d[key] = d[key].isoformat() if d[key] else None
    if d["fault"] and d["fault"].get("created"):
        d["fault"] = {**d["fault"], "created": d["fault"]["created"].isoformat()}
    return json.dumps(d, default=str)  # (tuples go out as lists)


def from_json(d: dict[str, Any]) -> Instance:
    d = dict(d)
    for key in _TIMES:
        d[key] = datetime.fromisoformat(d[key]) if d.get(key) else None
    if d["fault"] and d["fault"].get("created"):
        d["fault"] = {**d["fault"], "created": datetime.fromisoformat(d["fault"]["created"])}
    d["ports"], d["disks"], d["tried_hosts"] = tuple(d["ports"]), tuple(d["disks"]), \
        tuple(d["tried_hosts"])
    d["security_groups"] = tuple(d.get("security_groups", ()))
    return Instance(**d)


def fold(events: Iterable[Event]) -> Instance | None:
    """Replay a stream of one instance's events from the beginning."""
    state: Instance | None = None
    for event in events:
        state = apply(state, event)
    return state
