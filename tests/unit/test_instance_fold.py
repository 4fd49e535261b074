"""The fold of an instance's events: Nova's task-state walk, reschedules, errors, bad order."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from novalog.domain import states as s
from novalog.domain.instance import Instance, TransitionError, apply, evolve, fold
from schemas import Event

UUID = str(uuid.uuid4())
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FLAVOR = {"flavorid": "1", "name": "m1.tiny", "vcpus": 1, "memory_mb": 512, "root_gb": 1,
          "ephemeral_gb": 0, "swap_mb": 0, "extra_specs": {}}


class Clock:
    def __init__(self) -> None:
        self.n = 0

    def ev(self, kind: str, **payload: Any) -> Event:
        self.n += 1
        return Event(kind, UUID, payload, "req-1", "test@h",
                     occurred_at=T0 + timedelta(seconds=self.n))


def requested(c: Clock) -> Event:
    return c.ev("InstanceBuildRequested", name="vm1", project_id="p", user_id="u",
                reservation_id="r-1", launch_index=0, flavor=FLAVOR,
                image={"id": "img", "name": "cirros", "min_disk": 0, "min_ram": 0,
                       "properties": {}},
                networks=[], block_device_mapping=[], key_name=None, metadata={},
                user_data=None, availability_zone=None, forced_host=None, forced_node=None,
                scheduler_hints={}, is_admin=False)


def attempt(c: Clock, host: str, n: int = 1) -> list[Event]:
    return [
        c.ev("InstanceScheduled", host=host, node=host, attempt=n, weighed_hosts=[host]),
        c.ev("InstanceBuildDispatched", host=host, node=host, attempt=n),
        c.ev("InstanceClaimAccepted", host=host, node=host, attempt=n, vcpus=1,
             memory_mb=512, disk_gb=1),
    ]


def build(c: Clock, host: str, n: int = 1) -> list[Event]:
    port = {"port_id": "p1", "network_id": "net", "network_name": "private",
            "ip_address": "10.0.0.5", "mac_address": "fa:16:3e:00:00:01"}
    return [
        c.ev("InstanceNetworkingStarted", host=host, attempt=n),
        c.ev("InstanceNetworkAllocated", host=host, attempt=n, ports=[port]),
        c.ev("InstanceBlockDeviceMappingStarted", host=host, attempt=n),
        c.ev("InstanceBlockDevicesMapped", host=host, attempt=n, disks=[]),
        c.ev("InstanceSpawningStarted", host=host, attempt=n),
        c.ev("InstanceSpawned", host=host, node=host, attempt=n, domain_name=f"instance-{UUID}",
             power_state=s.RUNNING, launched_at=T0),
    ]


def task_states(events: list[Event]) -> list[str | None]:
    seen: list[str | None] = []
    state: Instance | None = None
    for event in events:
        state = apply(state, event)
        if not seen or seen[-1] != state.task_state:
            seen.append(state.task_state)
    return seen


def test_a_boot_walks_novas_task_states_and_ends_active() -> None:
    c = Clock()
    events = [requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")]
    assert task_states(events) == [s.SCHEDULING, s.NETWORKING, s.BLOCK_DEVICE_MAPPING,
                                   s.SPAWNING, None]
    final = fold(events)
    assert final is not None
    assert (final.vm_state, final.power_state, final.status) == (s.ACTIVE, s.RUNNING, "ACTIVE")
    assert (final.host, final.node, final.launched_at) == ("cmp1", "cmp1", T0)
    assert final.ports[0]["ip_address"] == "10.0.0.5"
    assert final.created_at == T0 + timedelta(seconds=1)
    assert final.events_applied == len(events)


def test_a_refused_claim_reschedules_and_late_facts_of_the_old_attempt_change_nothing() -> None:
    c = Clock()
    first = [c.ev("InstanceScheduled", host="cmp1", node="cmp1", attempt=1, weighed_hosts=[]),
             c.ev("InstanceClaimRefused", host="cmp1", node="cmp1", attempt=1,
                  reason="RAM: 512 MB needed, 0 free")]
    again = c.ev("InstanceRescheduled", attempt=2, excluded_hosts=["cmp1"],
                 reason="claim refused")
    state = fold([requested(c), *first, again])
    assert state is not None
    assert (state.attempt, state.host, state.task_state) == (2, None, s.SCHEDULING)
    late = c.ev("InstanceClaimRefused", host="cmp1", node="cmp1", attempt=1, reason="dup")
    assert apply(state, late).task_state == s.SCHEDULING
    assert apply(state, late).attempt == 2
    final = fold([requested(Clock()), *first, again, late, *attempt(c, "cmp2", 2),
                  *build(c, "cmp2", 2)])
    assert final is not None and final.status == "ACTIVE" and final.host == "cmp2"
    assert final.tried_hosts == ("cmp1", "cmp2")


def test_no_valid_host_is_an_error_with_novas_fault_message() -> None:
    c = Clock()
    state = fold([requested(c), c.ev(
        "InstanceNoValidHost", attempt=1, reason="There are not enough hosts available.",
        filters=[{"filter": "ComputeFilter", "hosts_in": 4, "hosts_out": 4},
                 {"filter": "RamFilter", "hosts_in": 4, "hosts_out": 0}])])
    assert state is not None
    assert (state.vm_state, state.task_state, state.status) == (s.ERROR, None, "ERROR")
    assert state.fault is not None
    assert state.fault["code"] == 500
    assert state.fault["message"] == \
        "No valid host was found. There are not enough hosts available."
    assert state.fault["details"] == "RamFilter removed 4 of 4"  # shown to admins only


def test_a_build_failure_releases_ports_and_an_error_ends_the_build() -> None:
    c = Clock()
    events = [requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")[:2],
              c.ev("InstanceBuildFailed", host="cmp1", attempt=1, stage="spawning",
                   reason="libvirt said no", retryable=False),
              c.ev("InstanceErrored", code=500, message="Build of instance failed",
                   details="libvirt said no")]
    state = fold(events[:-1])
    assert state is not None and state.ports == ()
    final = fold(events)
    assert final is not None and final.status == "ERROR"
    assert final.fault == {"code": 500, "message": "Build of instance failed",
                           "details": "libvirt said no", "created": final.updated_at}


@pytest.mark.parametrize("bad", ["before_request", "twice", "after_error", "not_instance"])
def test_events_that_cannot_happen_now_raise(bad: str) -> None:
    c = Clock()
    request = requested(c)
    spawned = build(c, "cmp1")[-1]
    error = c.ev("InstanceErrored", code=500, message="x", details=None)
    with pytest.raises(TransitionError):
        if bad == "before_request":
            apply(None, spawned)
        elif bad == "twice":
            fold([request, request])
        elif bad == "after_error":
            fold([request, error, spawned])
        else:
            apply(fold([request]), c.ev("ServiceHeartbeat", host="h", binary="b"))


# Nova's _STATE_MAP (nova/api/openstack/common.py), every pair it names, written out
NOVA_STATE_MAP: dict[str, dict[str | None, str]] = {
    "active": {None: "ACTIVE", "rebooting": "REBOOT", "reboot_pending": "REBOOT",
               "reboot_started": "REBOOT", "rebooting_hard": "HARD_REBOOT",
               "reboot_pending_hard": "HARD_REBOOT", "reboot_started_hard": "HARD_REBOOT",
               "updating_password": "PASSWORD", "rebuilding": "REBUILD",
               "rebuild_block_device_mapping": "REBUILD", "rebuild_spawning": "REBUILD",
               "migrating": "MIGRATING", "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
               "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
               "deleting": "ACTIVE", "powering-off": "ACTIVE"},
    "building": {None: "BUILD", "spawning": "BUILD", "scheduling": "BUILD"},
    "stopped": {None: "SHUTOFF", "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
                "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
                "rebuilding": "REBUILD", "rebuild_block_device_mapping": "REBUILD",
                "rebuild_spawning": "REBUILD", "rebooting_hard": "SHUTOFF",
                "powering-on": "SHUTOFF"},
    "resized": {None: "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE",
                "resize_confirming": "VERIFY_RESIZE"},
    "paused": {None: "PAUSED", "migrating": "MIGRATING"},
    "suspended": {None: "SUSPENDED"}, "rescued": {None: "RESCUE"},
    "error": {None: "ERROR", "rebuilding": "REBUILD", "rebuild_block_device_mapping": "REBUILD",
              "rebuild_spawning": "REBUILD", "deleting": "ERROR"},
    "deleted": {None: "DELETED"}, "soft-delete": {None: "SOFT_DELETED"},
    "shelved": {None: "SHELVED"}, "shelved_offloaded": {None: "SHELVED_OFFLOADED"},
    "no-such-state": {None: "UNKNOWN", "rebooting": "UNKNOWN"},
}


@pytest.mark.parametrize(("vm", "task", "status"), [
    (vm, task, status) for vm, tasks in NOVA_STATE_MAP.items() for task, status in tasks.items()])
def test_api_status_follows_novas_state_map(vm: str, task: str | None, status: str) -> None:
    assert s.api_status(vm, task) == status


def test_state_survives_its_json_form() -> None:
    from novalog.domain.instance import from_json, state_json

    c = Clock()
    for events in ([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")],
                   [requested(c), c.ev("InstanceNoValidHost", attempt=1, reason="r",
                                       filters=[])]):
        state = fold(events)
        assert state is not None
        assert from_json(json.loads(state_json(state))) == state


# -- delete ------------------------------------------------------------------------------
def delete_requested(c: Clock) -> Event:
    return c.ev("InstanceDeleteRequested", project_id="p", user_id="u", host=None)


def deleted(c: Clock, host: str | None = "cmp1") -> Event:
    return c.ev("InstanceDeleted", host=host, local=host is None, terminated_at=T0)


def test_delete_of_an_active_server_walks_deleting_to_deleted() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None and active.status == "ACTIVE"
    deleting = apply(active, delete_requested(c))
    assert (deleting.vm_state, deleting.task_state, deleting.status) == \
        (s.ACTIVE, s.DELETING, "ACTIVE")  # Nova shows ACTIVE while deleting
    started = apply(deleting, c.ev("InstanceTerminateStarted", host="cmp1", attempt=1))
    gone = apply(started, deleted(c))
    assert (gone.vm_state, gone.task_state, gone.power_state, gone.status) == \
        (s.DELETED, None, s.NOSTATE, "DELETED")
    assert gone.ports == () and gone.terminated_at == T0


def test_a_build_going_on_during_a_delete_keeps_the_task_state_deleting() -> None:
    c = Clock()
    state = fold([requested(c), *attempt(c, "cmp1"), delete_requested(c), *build(c, "cmp1")])
    assert state is not None
    assert (state.vm_state, state.task_state) == (s.ACTIVE, s.DELETING)


def test_a_deleted_instance_absorbs_late_events_but_nothing_before_its_request() -> None:
    c = Clock()
    gone = fold([requested(c), delete_requested(c), deleted(c, None)])
    assert gone is not None and gone.vm_state == s.DELETED
    late = [*attempt(c, "cmp2"), *build(c, "cmp2"), deleted(c, "cmp2")]
    after = fold([requested(Clock()), delete_requested(c), deleted(c, None), *late])
    assert after is not None
    assert (after.vm_state, after.host, after.events_applied) == \
        (s.DELETED, None, 3 + len(late))
    with pytest.raises(TransitionError, match="for unknown instance"):
        apply(None, delete_requested(Clock()))


# -- reboot, stop, start -------------------------------------------------------------------
def test_power_actions_follow_novas_rules_and_a_refused_request_changes_nothing() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    soft = apply(active, c.ev("InstanceRebootRequested", type="SOFT"))
    assert (soft.task_state, soft.status, soft.action_request_id) == \
        (s.REBOOTING, "REBOOT", "req-1")
    again = apply(soft, c.ev("InstanceRebootRequested", type="SOFT"))  # raced the API
    assert again.task_state == s.REBOOTING and again.events_applied == soft.events_applied + 1
    for kind in ("InstanceRebootPending", "InstanceRebootStarted"):
        soft = apply(soft, c.ev(kind, host="cmp1", hard=False))
    assert soft.task_state == s.REBOOT_STARTED
    done = apply(soft, c.ev("InstanceRebooted", host="cmp1", hard=False,
                            power_state=s.RUNNING))
    assert (done.vm_state, done.task_state, done.action_request_id) == (s.ACTIVE, None, None)
    stopped = apply(apply(done, c.ev("InstanceStopRequested")),
                    c.ev("InstanceStopped", host="cmp1", power_state=s.SHUTDOWN))
    assert (stopped.vm_state, stopped.status, stopped.power_state) == \
        (s.STOPPED, "SHUTOFF", s.SHUTDOWN)
    refused = apply(stopped, c.ev("InstanceRebootRequested", type="SOFT"))
    assert refused.task_state is None and refused.action_request_id is None
    hard = apply(stopped, c.ev("InstanceRebootRequested", type="HARD"))
    assert hard.task_state == s.REBOOTING_HARD  # HARD is allowed from SHUTOFF
    building = fold([requested(Clock())])
    assert building is not None
    assert apply(building, c.ev("InstanceStopRequested")).task_state == s.SCHEDULING


# -- moves: resize, confirm / revert, live migration, evacuation; rescue -------------------
BIGGER = {**FLAVOR, "flavorid": "2", "name": "m1.small", "vcpus": 2, "memory_mb": 1024,
          "root_gb": 2}
DISK = {"device": "vda", "path": "/x/disk", "format": "qcow2", "size_gb": 2,
        "backing_file": None}


def migration(kind: str, new: dict[str, Any], old_vm_state: str = s.ACTIVE,
              status: str = "pre-migrating") -> dict[str, Any]:
    return {"migration_id": "m-1", "kind": kind, "source_host": "cmp1", "source_node": "cmp1",
            "dest_host": None, "dest_node": None, "old_flavor": FLAVOR, "new_flavor": new,
            "requested_host": None, "old_vm_state": old_vm_state, "status": status}


def moved_to(c: Clock, state: Instance, kind: str, new: dict[str, Any]) -> Instance:
    """Request accepted, migration opened, destination cmp2 chosen and claimed."""
    state = apply(state, c.ev("InstanceMigrationStarted", migration=migration(
        kind, new, state.vm_state, "accepted" if kind != "resize" else "pre-migrating")))
    state = apply(state, c.ev("InstanceMigrationScheduled", migration_id="m-1", host="cmp2",
                              node="cmp2"))
    return apply(state, c.ev("InstanceMigrationClaimed", migration_id="m-1", host="cmp2",
                             node="cmp2", instances_path="/y"))


def test_a_resize_walks_novas_task_states_to_verify_resize_and_confirm_ends_it() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    asked = apply(active, c.ev("InstanceResizeRequested", flavor=BIGGER, migrate=False,
                               host=None))
    assert (asked.task_state, asked.status) == (s.RESIZE_PREP, "RESIZE")
    state = moved_to(c, asked, "resize", BIGGER)
    assert state.migration is not None and state.migration["dest_host"] == "cmp2"
    seen = [state.task_state]
    for kind in ("InstanceResizeMigrating", "InstanceResizeMigrated", "InstanceResizeFinishing"):
        state = apply(state, c.ev(kind, migration_id="m-1", host="cmp1"))
        seen.append(state.task_state)
        assert state.host == "cmp1" and state.flavor == FLAVOR
    assert seen == [s.RESIZE_PREP, s.RESIZE_MIGRATING, s.RESIZE_MIGRATED, s.RESIZE_FINISH]
    resized = apply(state, c.ev("InstanceResized", migration_id="m-1", host="cmp2",
                                node="cmp2", power_state=s.RUNNING, disks=[DISK]))
    assert (resized.vm_state, resized.task_state, resized.status, resized.host) == \
        (s.RESIZED, None, "VERIFY_RESIZE", "cmp2")
    assert resized.flavor == BIGGER and resized.migration is not None
    assert resized.migration["status"] == "finished"
    assert apply(resized, c.ev("InstanceResizeRequested", flavor=FLAVOR, migrate=False,
                               host=None)).task_state is None  # refused: resized
    confirming = apply(resized, c.ev("InstanceResizeConfirmRequested", automatic=False))
    assert confirming.migration is not None and confirming.migration["status"] == "confirming"
    twice = apply(confirming, c.ev("InstanceResizeRevertRequested"))
    assert twice.task_state is None  # no longer waiting: the revert is refused
    done = apply(confirming, c.ev("InstanceResizeConfirmed", migration_id="m-1", host="cmp1"))
    assert (done.vm_state, done.status, done.host, done.flavor) == \
        (s.ACTIVE, "ACTIVE", "cmp2", BIGGER)
    assert done.migration is not None and done.migration["status"] == "confirmed"


def test_a_revert_brings_back_the_old_flavor_and_host_and_a_stopped_guest_stays_off() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    stopped = apply(apply(active, c.ev("InstanceStopRequested")),
                    c.ev("InstanceStopped", host="cmp1", power_state=s.SHUTDOWN))
    asked = apply(stopped, c.ev("InstanceResizeRequested", flavor=BIGGER, migrate=False,
                                host=None))
    assert asked.status == "RESIZE"
    state = moved_to(c, asked, "resize", BIGGER)
    state = apply(state, c.ev("InstanceResized", migration_id="m-1", host="cmp2", node="cmp2",
                              power_state=s.SHUTDOWN, disks=[DISK]))
    reverting = apply(state, c.ev("InstanceResizeRevertRequested"))
    assert (reverting.task_state, reverting.status) == (s.RESIZE_REVERTING, "REVERT_RESIZE")
    back = apply(reverting, c.ev("InstanceResizeReverted", migration_id="m-1", host="cmp1",
                                 node="cmp1", power_state=s.SHUTDOWN, disks=[DISK],
                                 dest_host="cmp2"))
    assert (back.vm_state, back.task_state, back.host, back.flavor) == \
        (s.STOPPED, None, "cmp1", FLAVOR)
    assert back.migration is not None and back.migration["status"] == "reverted"


def test_a_failed_move_rolls_back_with_a_fault_and_an_evacuation_failure_is_an_error() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    live = apply(active, c.ev("InstanceLiveMigrationRequested", host=None,
                              block_migration=True))
    assert (live.vm_state, live.task_state, live.status) == (s.ACTIVE, s.MIGRATING, "MIGRATING")
    state = moved_to(c, live, "live-migration", FLAVOR)
    failed = apply(state, c.ev("InstanceMigrationFailed", migration_id="m-1", stage="finish",
                               reason="spawn failed", source_host="cmp1", dest_host="cmp2",
                               rolled_back=True))
    assert (failed.vm_state, failed.task_state, failed.host, failed.status) == \
        (s.ACTIVE, None, "cmp1", "ACTIVE")
    assert failed.fault is not None and "spawn failed" in failed.fault["message"]
    assert failed.migration is not None and failed.migration["status"] == "failed"
    late = apply(failed, c.ev("InstanceLiveMigrated", migration_id="m-1", host="cmp2",
                              node="cmp2", power_state=s.RUNNING, disks=[],
                              source_host="cmp1"))
    assert late.host == "cmp1"  # a step of a closed migration is history only
    evac = apply(active, c.ev("InstanceEvacuateRequested", host=None, on_shared_storage=False))
    assert (evac.task_state, evac.status) == (s.REBUILDING, "REBUILD")
    evac = moved_to(c, evac, "evacuation", FLAVOR)
    lost = apply(evac, c.ev("InstanceMigrationFailed", migration_id="m-1", stage="finish",
                            reason="no disk", source_host="cmp1", dest_host="cmp2",
                            rolled_back=False))
    assert (lost.vm_state, lost.status, lost.host, lost.ports) == \
        (s.ERROR, "ERROR", "cmp1", active.ports)


def test_live_migration_and_evacuation_move_the_host_and_keep_the_addresses() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    state = moved_to(c, apply(active, c.ev("InstanceLiveMigrationRequested", host="cmp2",
                                           block_migration=True)), "live-migration", FLAVOR)
    state = apply(state, c.ev("InstanceLiveMigrationStarted", migration_id="m-1", host="cmp1"))
    assert state.migration is not None and state.migration["status"] == "running"
    moved = apply(state, c.ev("InstanceLiveMigrated", migration_id="m-1", host="cmp2",
                              node="cmp2", power_state=s.RUNNING, disks=[DISK],
                              source_host="cmp1"))
    assert (moved.vm_state, moved.task_state, moved.host, moved.ports) == \
        (s.ACTIVE, None, "cmp2", active.ports)
    stopped = apply(apply(active, c.ev("InstanceStopRequested")),
                    c.ev("InstanceStopped", host="cmp1", power_state=s.SHUTDOWN))
    evac = moved_to(c, apply(stopped, c.ev("InstanceEvacuateRequested", host=None,
                                           on_shared_storage=False)), "evacuation", FLAVOR)
    seen = []
    for kind in ("InstanceRebuildBlockDeviceMapping", "InstanceRebuildSpawning"):
        evac = apply(evac, c.ev(kind, migration_id="m-1", host="cmp2"))
        seen.append(evac.task_state)
    assert seen == [s.REBUILD_BLOCK_DEVICE_MAPPING, s.REBUILD_SPAWNING]
    done = apply(evac, c.ev("InstanceEvacuated", migration_id="m-1", host="cmp2", node="cmp2",
                            power_state=s.SHUTDOWN, disks=[DISK]))
    assert (done.vm_state, done.host, done.ports) == (s.STOPPED, "cmp2", active.ports)
    assert done.migration is not None and done.migration["status"] == "done"
    cleaned = apply(done, c.ev("InstanceMigrationSourceCleaned", migration_id="m-1",
                               host="cmp1"))
    assert cleaned.migration is not None and cleaned.migration["status"] == "completed"


def test_rescue_and_unrescue() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    rescuing = apply(active, c.ev("InstanceRescueRequested", rescue_image_ref=None))
    assert rescuing.task_state == s.RESCUING
    rescued = apply(rescuing, c.ev("InstanceRescued", host="cmp1", power_state=s.RUNNING))
    assert (rescued.vm_state, rescued.task_state, rescued.status) == (s.RESCUED, None, "RESCUE")
    assert apply(rescued, c.ev("InstanceStopRequested")).task_state is None  # refused
    back = apply(apply(rescued, c.ev("InstanceUnrescueRequested")),
                 c.ev("InstanceUnrescued", host="cmp1", power_state=s.RUNNING))
    assert (back.vm_state, back.status) == (s.ACTIVE, "ACTIVE")


def test_a_pending_delete_wins_over_an_evacuation_and_a_move_is_never_replaced() -> None:
    c = Clock()
    active = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert active is not None
    deleting = apply(active, delete_requested(c))
    evac = apply(deleting, c.ev("InstanceEvacuateRequested", host=None, on_shared_storage=False))
    assert (evac.task_state, evac.action_request_id) == (s.DELETING, None)
    live = moved_to(c, apply(active, c.ev("InstanceLiveMigrationRequested", host=None,
                                          block_migration=True)), "live-migration", FLAVOR)
    other = {**migration("evacuation", FLAVOR), "migration_id": "m-2"}
    again = apply(live, c.ev("InstanceMigrationStarted", migration=other))
    assert again.migration == live.migration  # the open move stays the one in the state


def test_a_late_dispatch_record_after_the_build_ended_changes_nothing() -> None:
    """The conductor's record of its cast and the host's answers come from two producers:
    a leader failover between them lets the answers reach the log first (seen in the
    3-broker leader-kill test). Other late build facts are still refused."""
    c = Clock()
    scheduled, dispatched, claimed = attempt(c, "cmp1")
    active = fold([requested(c), scheduled, claimed, *build(c, "cmp1")])
    assert active is not None and active.vm_state == s.ACTIVE
    after = apply(active, dispatched)
    assert after == replace(active, events_applied=active.events_applied + 1)
    errored = fold([requested(c), scheduled,
                    c.ev("InstanceErrored", code=500, message="x", details=None)])
    assert errored is not None and apply(errored, dispatched).vm_state == errored.vm_state
    with pytest.raises(TransitionError, match="in vm_state active"):
        apply(active, c.ev("InstanceNetworkAllocated", host="cmp1", attempt=1, ports=[]))


def test_evolve_is_dataclasses_replace_for_the_fold() -> None:
    state = fold([requested(Clock())])
    assert state is not None
    changed = evolve(state, vm_state=s.ACTIVE, task_state=None)
    assert changed == replace(state, vm_state=s.ACTIVE, task_state=None)
    assert (state.vm_state, state.task_state) == (s.BUILDING, s.SCHEDULING)  # untouched
    with pytest.raises(TypeError, match="no field colour"):
        evolve(state, colour="red")
