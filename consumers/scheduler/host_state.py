"""The scheduler's view of every compute host, folded from host facts and placements.

Usage = the host's last resource report + the placements this view knows of
that the report does not include yet (Nova's HostState.consume_from_request).
The compute claim stays the final word: a stale view only costs a reschedule.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property

from consumers.scheduler.host_table import HostTable
from novalog.domain.claims import Claim, claim_of
from schemas import Event, payloads
from schemas.typed import payload_of

SERVICE_DOWN_TIME = timedelta(seconds=60)  # Nova's service_down_time, unless configured
COMPUTE_BINARY = "nova-compute"
DELETED_KEPT = 100_000


@dataclass(frozen=True)
class HostState:
    """Immutable: the view replaces a host's state on every change, so the derived
    figures (cached properties) are computed at most once per state."""

    host: str
    node: str
    zone: str = "nova"
    disabled: bool = False
    last_heartbeat: datetime | None = None
    vcpus: int = 0
    memory_mb: int = 0
    local_gb: int = 0
    reported_vcpus_used: int = 0
    reported_memory_mb_used: int = 0
    reported_local_gb_used: int = 0
    reported_instances: frozenset[str] = frozenset()
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    cpu_arch: str = "x86_64"
    hypervisor_type: str = "QEMU"
    failed_builds: int = 0
    pending: tuple[tuple[str, Claim], ...] = ()  # placed here, not yet in a report
    instances: frozenset[str] = frozenset()  # every instance known to be here

    def _pending_sum(self, attr: str) -> int:
        return sum(getattr(c, attr) for _, c in self.pending)

    @cached_property
    def vcpus_used(self) -> int:
        return self.reported_vcpus_used + self._pending_sum("vcpus")

    @cached_property
    def memory_mb_used(self) -> int:
        return self.reported_memory_mb_used + self._pending_sum("memory_mb")

    @cached_property
    def local_gb_used(self) -> int:
        return self.reported_local_gb_used + self._pending_sum("disk_gb")

    @cached_property
    def free_ram_mb(self) -> float:
        return self.memory_mb * self.ram_allocation_ratio - self.memory_mb_used

    @cached_property
    def free_vcpus(self) -> float:
        return self.vcpus * self.cpu_allocation_ratio - self.vcpus_used

    @cached_property
    def free_disk_gb(self) -> float:
        return self.local_gb * self.disk_allocation_ratio - self.local_gb_used

    def is_up(self, now: datetime, down_time: timedelta = SERVICE_DOWN_TIME) -> bool:
        return self.last_heartbeat is not None and now - self.last_heartbeat <= down_time

    def place(self, instance: str, claim: Claim) -> HostState:
        """Account for an instance placed here before the host reports it."""
        if instance in self.instances:
            return self
        return replace(self, pending=(*self.pending, (instance, claim)),
                       instances=self.instances | {instance})

    def forget(self, instance: str) -> HostState:
        return replace(self, pending=tuple(p for p in self.pending if p[0] != instance),
                       instances=self.instances - {instance})


class Hosts(dict[str, HostState]):
    """The view's hosts by name, mirrored into a HostTable on every change, so the
    scheduler decides over columns that are always current."""

    def __init__(self, hosts: Mapping[str, HostState] | None = None) -> None:
        super().__init__()
        self.table = HostTable()
        for name, state in (hosts or {}).items():
            self[name] = state

    def __setitem__(self, name: str, state: HostState) -> None:
        super().__setitem__(name, state)
        self.table.upsert(state)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self.table.remove(name)

    def pop(self, name: str, *default: HostState | None) -> HostState | None:  # type: ignore[override]
        self.table.remove(name)
        return super().pop(name, *default)


@dataclass
class HostView:
    """Every host by name, plus where each instance went. Fed events in log order."""

    hosts: Hosts = field(default_factory=Hosts)  # also as columns: hosts.table
    placements: dict[str, str] = field(default_factory=dict)  # instance -> host
    groups: dict[str, set[str]] = field(default_factory=dict)  # server group -> instances
    group_policies: dict[str, str] = field(default_factory=dict)  # server group -> policy
    service_down_time: timedelta = SERVICE_DOWN_TIME
    # recently deleted instances: a placement decided after the delete was seen is ignored
    deleted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    removed: set[str] = field(default_factory=set)  # compute services an admin deleted
    _claims: dict[str, Claim] = field(default_factory=dict)
    _moving: dict[str, payloads.Migration] = field(default_factory=dict)  # by instance

    def apply(self, event: Event) -> None:
        handler = VIEW_HANDLERS.get(event.event_type)
        if handler is not None:
            handler(self, event)

    # -- host facts ----------------------------------------------------------------------
    def _host(self, name: str) -> HostState:
        return self.hosts.get(name) or HostState(host=name, node=name)

    def _on_ComputeServiceStarted(self, e: Event) -> None:
        p = payload_of(e, payloads.ComputeServiceStarted)
        self.removed.discard(p["host"])  # a deleted host that starts again is back
        h = self._host(p["host"])
        self.hosts[p["host"]] = replace(h, zone=p["zone"], node=p["hypervisor_hostname"],
                                        hypervisor_type=p["hypervisor_type"],
                                        last_heartbeat=e.occurred_at)

    def _on_ComputeResourcesReported(self, e: Event) -> None:
        p = payload_of(e, payloads.ComputeResourcesReported)
        if p["host"] in self.removed:
            return
        h = self._host(p["host"])
        reported = frozenset(p["instance_uuids"])
        self.hosts[p["host"]] = replace(
            h, node=p["node"], vcpus=p["vcpus"], memory_mb=p["memory_mb"],
            local_gb=p["local_gb"], reported_vcpus_used=p["vcpus_used"],
            reported_memory_mb_used=p["memory_mb_used"], reported_local_gb_used=p["local_gb_used"],
            reported_instances=reported,
            pending=tuple(x for x in h.pending if x[0] not in reported),
            instances=reported | {i for i, _ in h.pending if i not in reported},
            cpu_allocation_ratio=p["cpu_allocation_ratio"],
            ram_allocation_ratio=p["ram_allocation_ratio"],
            disk_allocation_ratio=p["disk_allocation_ratio"],
            cpu_arch=p["cpu_arch"], hypervisor_type=p["hypervisor_type"],
            last_heartbeat=max(filter(None, [h.last_heartbeat, e.occurred_at])),
        )

    def _on_ServiceHeartbeat(self, e: Event) -> None:
        p = payload_of(e, payloads.ServiceHeartbeat)
        if p["binary"] != COMPUTE_BINARY or p["host"] in self.removed:  # not (now) a host
            return
        h = self._host(p["host"])
        if h.last_heartbeat is None or e.occurred_at > h.last_heartbeat:
            self.hosts[p["host"]] = replace(h, last_heartbeat=e.occurred_at)

    def _on_ServiceDisabledOrEnabled(self, e: Event) -> None:
        if e.payload.get("binary") == COMPUTE_BINARY:  # ServiceDisabled / ServiceEnabled
            host = str(e.payload["host"])
            self.hosts[host] = replace(self._host(host),
                                       disabled=e.event_type == "ServiceDisabled")

    def _on_HostRemoved(self, e: Event) -> None:
        self.hosts.pop(payload_of(e, payloads.HostRemoved)["host"], None)

    def _on_ServiceDeleted(self, e: Event) -> None:
        p = payload_of(e, payloads.ServiceDeleted)
        if p["binary"] == COMPUTE_BINARY:  # gone until the host starts again
            self.hosts.pop(p["host"], None)
            self.removed.add(p["host"])

    # -- placements ----------------------------------------------------------------------
    def _on_InstanceBuildRequested(self, e: Event) -> None:
        p = payload_of(e, payloads.InstanceBuildRequested)
        self._claims[e.aggregate_id] = claim_of(p["flavor"])
        for group in p["scheduler_hints"].get("group", []):
            self.groups.setdefault(group, set()).add(e.aggregate_id)

    def _on_InstanceScheduled(self, e: Event) -> None:
        self.record_placement(e.aggregate_id, payload_of(e, payloads.InstanceScheduled)["host"])

    def record_placement(self, instance: str, host: str, claim: Claim | None = None,
                         keep: str | None = None) -> None:
        """Also called by the scheduler for its own decisions, before they come back.
        `keep`: a move's source, which keeps what it holds (its own reports count it)
        until the move is confirmed, reverted or given up."""
        if instance in self.deleted:  # a decision that lost the race with a delete
            return
        claim = claim or self._claims.get(instance)
        previous = self.placements.get(instance)
        if previous and previous not in (host, keep) and previous in self.hosts:
            self.hosts[previous] = self.hosts[previous].forget(instance)
        self.placements[instance] = host
        if claim is not None and host in self.hosts:
            self.hosts[host] = self.hosts[host].place(instance, claim)

    def _release(self, instance: str, failed_build: bool = False) -> None:
        host = self.placements.pop(instance, None)
        if host and host in self.hosts:
            h = self.hosts[host].forget(instance)
            self.hosts[host] = replace(h, failed_builds=h.failed_builds + failed_build)

    def _on_InstanceClaimRefused(self, e: Event) -> None:
        self._release(e.aggregate_id)

    def _on_InstanceBuildFailed(self, e: Event) -> None:
        self._release(e.aggregate_id, failed_build=True)

    def _on_InstanceErrored(self, e: Event) -> None:
        self._release(e.aggregate_id)
        self._claims.pop(e.aggregate_id, None)

    def _on_InstanceSpawned(self, e: Event) -> None:
        p = payload_of(e, payloads.InstanceSpawned)
        h = self.hosts.get(p["host"])
        if h is not None and h.failed_builds:  # Nova resets the count on a success
            self.hosts[p["host"]] = replace(h, failed_builds=0)
        self._claims.pop(e.aggregate_id, None)

    def _on_InstanceDeleted(self, e: Event) -> None:
        uuid = e.aggregate_id
        self._moving.pop(uuid, None)
        self._release(uuid)
        self._claims.pop(uuid, None)
        for members in self.groups.values():
            members.discard(uuid)
        self.deleted[uuid] = None
        while len(self.deleted) > DELETED_KEPT:
            self.deleted.popitem(last=False)

    def _on_InstanceMigrationScheduled(self, e: Event) -> None:
        p = payload_of(e, payloads.InstanceMigrationScheduled)
        m = self._moving.get(e.aggregate_id)
        if m is not None and m["migration_id"] == p["migration_id"]:
            self.record_placement(e.aggregate_id, p["host"], claim_of(m["new_flavor"]),
                                  keep=m["source_host"])

    def _on_InstanceMigrationStarted(self, e: Event) -> None:
        m = payload_of(e, payloads.InstanceMigrationStarted)["migration"]
        self._moving[e.aggregate_id] = m

    def _moved_back(self, instance: str, source: str, dest: str | None) -> None:
        """A move given up or reverted: the destination's share is forgotten (its next
        report says what it still holds), the instance is the source's again."""
        if instance in self.deleted:
            return
        if dest and dest in self.hosts and dest != source:
            self.hosts[dest] = self.hosts[dest].forget(instance)
        self.placements[instance] = source

    def _on_InstanceMigrationFailed(self, e: Event) -> None:
        p = payload_of(e, payloads.InstanceMigrationFailed)
        self._moving.pop(e.aggregate_id, None)
        self._moved_back(e.aggregate_id, p["source_host"], p["dest_host"])

    def _on_InstanceResizeReverted(self, e: Event) -> None:
        p = payload_of(e, payloads.InstanceResizeReverted)
        self._moving.pop(e.aggregate_id, None)
        self._moved_back(e.aggregate_id, p["host"], p["dest_host"])

    def _on_MoveEnded(self, e: Event) -> None:  # the instance stays on the destination
        self._moving.pop(e.aggregate_id, None)

    def _on_ServerGroupCreated(self, e: Event) -> None:
        p = payload_of(e, payloads.ServerGroupCreated)
        self.group_policies[p["group_id"]] = p["policy"]

    def _on_ServerGroupDeleted(self, e: Event) -> None:  # its members are free to go anywhere
        self.group_policies.pop(payload_of(e, payloads.ServerGroupDeleted)["group_id"], None)

    def group_hosts(self, group: str) -> frozenset[str]:
        return frozenset(self.placements[i] for i in self.groups.get(group, set())
                         if i in self.placements)


# What the view folds, by event type (of the hosts, instances and catalog topics).
VIEW_HANDLERS: dict[str, Callable[[HostView, Event], None]] = {
    "ComputeServiceStarted": HostView._on_ComputeServiceStarted,
    "ComputeResourcesReported": HostView._on_ComputeResourcesReported,
    "ServiceHeartbeat": HostView._on_ServiceHeartbeat,
    "ServiceDisabled": HostView._on_ServiceDisabledOrEnabled,
    "ServiceEnabled": HostView._on_ServiceDisabledOrEnabled,
    "HostRemoved": HostView._on_HostRemoved,
    "ServiceDeleted": HostView._on_ServiceDeleted,
    "InstanceBuildRequested": HostView._on_InstanceBuildRequested,
    "InstanceScheduled": HostView._on_InstanceScheduled,
    "InstanceClaimRefused": HostView._on_InstanceClaimRefused,
    "InstanceBuildFailed": HostView._on_InstanceBuildFailed,
    "InstanceErrored": HostView._on_InstanceErrored,
    "InstanceSpawned": HostView._on_InstanceSpawned,
    "InstanceDeleted": HostView._on_InstanceDeleted,
    "ServerGroupCreated": HostView._on_ServerGroupCreated,
    "ServerGroupDeleted": HostView._on_ServerGroupDeleted,
    "InstanceMigrationStarted": HostView._on_InstanceMigrationStarted,
    "InstanceMigrationScheduled": HostView._on_InstanceMigrationScheduled,
    "InstanceMigrationFailed": HostView._on_InstanceMigrationFailed,
    "InstanceResizeReverted": HostView._on_InstanceResizeReverted,
    "InstanceResizeConfirmed": HostView._on_MoveEnded,
    "InstanceLiveMigrated": HostView._on_MoveEnded,
    "InstanceEvacuated": HostView._on_MoveEnded,
}
