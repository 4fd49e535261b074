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
_TASK_STATUS = {  # task states that override the vm_state's status, as Nova's API does
    (ACTIVE, REBOOTING): "REBOOT",
    (ACTIVE, REBOOT_PENDING): "REBOOT",
    (ACTIVE, REBOOT_STARTED): "REBOOT",
    (ACTIVE, REBOOTING_HARD): "HARD_REBOOT",
    (ACTIVE, REBOOT_PENDING_HARD): "HARD_REBOOT",
    (ACTIVE, REBOOT_STARTED_HARD): "HARD_REBOOT",
    (STOPPED, REBOOTING_HARD): "HARD_REBOOT",
    (ACTIVE, REBUILDING): "REBUILD",
    (ACTIVE, REBUILD_BLOCK_DEVICE_MAPPING): "REBUILD",
    (ACTIVE, REBUILD_SPAWNING): "REBUILD",
    (STOPPED, REBUILDING): "REBUILD",
    (STOPPED, REBUILD_BLOCK_DEVICE_MAPPING): "REBUILD",
    (STOPPED, REBUILD_SPAWNING): "REBUILD",
    (ERROR, REBUILDING): "REBUILD",
    (ERROR, REBUILD_BLOCK_DEVICE_MAPPING): "REBUILD",
    (ERROR, REBUILD_SPAWNING): "REBUILD",
    (ACTIVE, MIGRATING): "MIGRATING",
    (ACTIVE, RESIZE_PREP): "RESIZE",
    (ACTIVE, RESIZE_MIGRATING): "RESIZE",
    (ACTIVE, RESIZE_MIGRATED): "RESIZE",
    (ACTIVE, RESIZE_FINISH): "RESIZE",
    (STOPPED, RESIZE_PREP): "RESIZE",
    (STOPPED, RESIZE_MIGRATING): "RESIZE",
    (STOPPED, RESIZE_MIGRATED): "RESIZE",
    (STOPPED, RESIZE_FINISH): "RESIZE",
    (RESIZED, RESIZE_REVERTING): "REVERT_RESIZE",
    (ACTIVE, "updating_password"): "PASSWORD",
}


def api_status(vm_state: str, task_state: str | None) -> str:
    """The `status` field of GET /servers/{id} for a (vm_state, task_state) pair."""
    if task_state is not None and (vm_state, task_state) in _TASK_STATUS:
        return _TASK_STATUS[(vm_state, task_state)]
    return _VM_STATUS.get(vm_state, "UNKNOWN")
