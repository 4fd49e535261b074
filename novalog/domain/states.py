"""Nova's vm_state, task_state and power_state values, and the API status they show as."""

from __future__ import annotations

# vm_states (nova/compute/vm_states.py)
ACTIVE = "active"
BUILDING = "building"
STOPPED = "stopped"
ERROR = "error"
DELETED = "deleted"
RESIZED = "resized"
RESCUED = "rescued"
PAUSED_VM = "paused"

# task_states of the boot (nova/compute/task_states.py)
SCHEDULING = "scheduling"
NETWORKING = "networking"
BLOCK_DEVICE_MAPPING = "block_device_mapping"
SPAWNING = "spawning"
DELETING = "deleting"
REBOOTING = "rebooting"
REBOOTING_HARD = "rebooting_hard"
POWERING_OFF = "powering-off"
POWERING_ON = "powering-on"
REBOOT_PENDING = "reboot_pending"
REBOOT_STARTED = "reboot_started"
REBOOT_PENDING_HARD = "reboot_pending_hard"
REBOOT_STARTED_HARD = "reboot_started_hard"
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_MIGRATED = "resize_migrated"
RESIZE_FINISH = "resize_finish"
RESIZE_REVERTING = "resize_reverting"
MIGRATING = "migrating"
REBUILDING = "rebuilding"
REBUILD_BLOCK_DEVICE_MAPPING = "rebuild_block_device_mapping"
REBUILD_SPAWNING = "rebuild_spawning"
RESCUING = "rescuing"
UNRESCUING = "unrescuing"

# power_state codes (nova/compute/power_state.py), shown as integers by the API
NOSTATE = 0
RUNNING = 1
PAUSED = 3
SHUTDOWN = 4
CRASHED = 6
SUSPENDED = 7

_VM_STATUS = {
    ACTIVE: "ACTIVE", BUILDING: "BUILD", STOPPED: "SHUTOFF", ERROR: "ERROR",
    DELETED: "DELETED", "paused": "PAUSED", "suspended": "SUSPENDED", "rescued": "RESCUE",
    "resized": "VERIFY_RESIZE", "soft-delete": "SOFT_DELETED", "shelved": "SHELVED",
    "shelved_offloaded": "SHELVED_OFFLOADED",
}
_REBOOT = {REBOOTING: "REBOOT", REBOOT_PENDING: "REBOOT", REBOOT_STARTED: "REBOOT",
           REBOOTING_HARD: "HARD_REBOOT", REBOOT_PENDING_HARD: "HARD_REBOOT",
           REBOOT_STARTED_HARD: "HARD_REBOOT"}
_REBUILD = {REBUILDING: "REBUILD", REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
            REBUILD_SPAWNING: "REBUILD"}
_RESIZE = {RESIZE_PREP: "RESIZE", RESIZE_MIGRATING: "RESIZE", RESIZE_MIGRATED: "RESIZE",
           RESIZE_FINISH: "RESIZE"}
# Task states that override the vm_state's status: Nova's _STATE_MAP
# (nova/api/openstack/common.py), pair for pair. A hard reboot of a stopped server shows
# SHUTOFF there, so it does here.
_TASK_STATUS: dict[str, dict[str, str]] = {
    ACTIVE: {**_REBOOT, **_REBUILD, **_RESIZE, "updating_password": "PASSWORD",
             MIGRATING: "MIGRATING"},
    STOPPED: {**_RESIZE, **_REBUILD},
    RESIZED: {RESIZE_REVERTING: "REVERT_RESIZE"},
    PAUSED_VM: {MIGRATING: "MIGRATING"},
    ERROR: dict(_REBUILD),
}


def api_status(vm_state: str, task_state: str | None) -> str:
    """The `status` field of GET /servers/{id} for a (vm_state, task_state) pair."""
    by_task = _TASK_STATUS.get(vm_state, {})
    if task_state is not None and task_state in by_task:
        return by_task[task_state]
    return _VM_STATUS.get(vm_state, "UNKNOWN")


PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")
"""The statuses whose server view carries `progress` (Nova's _progress_statuses)."""
