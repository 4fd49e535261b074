"""Which server actions Nova allows from which states (nova/compute/api.py's
`check_instance_state` decorators), and its 409 message otherwise.

The API refuses with these rules before publishing anything; the instance fold applies
the same rules to the request event, so a request the API let through on a stale view
(two at once) is refused there too, and no role acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from novalog.domain import states as s

ANY = None


@dataclass(frozen=True)
class Allowed:
    vm_states: frozenset[str] | None  # None: any
    task_states: frozenset[str | None] | None  # None: any
    must_have_launched: bool = True


# task states from which a HARD reboot may start (Nova's task_states.ALLOW_REBOOT)
ALLOW_REBOOT = frozenset({None, s.REBOOTING, s.REBOOT_PENDING, s.REBOOT_STARTED, "resuming",
                          s.REBOOTING_HARD, "unpausing", "pausing", "suspending"})
RULES = {
    "reboot": Allowed(frozenset({s.ACTIVE}), frozenset({None})),  # SOFT
    "reboot_hard": Allowed(frozenset({s.ACTIVE, s.STOPPED, "paused", "suspended", s.ERROR}),
                           ALLOW_REBOOT),
    "stop": Allowed(frozenset({s.ACTIVE, s.ERROR}), frozenset({None})),
    "start": Allowed(frozenset({s.STOPPED}), frozenset({None})),
    "resize": Allowed(frozenset({s.ACTIVE, s.STOPPED}), frozenset({None})),
    "migrate": Allowed(frozenset({s.ACTIVE, s.STOPPED}), frozenset({None})),
    "confirmResize": Allowed(frozenset({s.RESIZED}), frozenset({None})),
    "revertResize": Allowed(frozenset({s.RESIZED}), frozenset({None})),
    "os-migrateLive": Allowed(frozenset({s.ACTIVE, s.PAUSED_VM}), frozenset({None})),
    # a lost host leaves its instances in whatever task they had: Nova checks none
    "evacuate": Allowed(frozenset({s.ACTIVE, s.STOPPED, s.ERROR}), ANY),
    "rescue": Allowed(frozenset({s.ACTIVE, s.STOPPED, s.ERROR}), frozenset({None})),
    "unrescue": Allowed(frozenset({s.RESCUED}), frozenset({None})),
}
# confirmResize / revertResize also need the migration in this status (else Nova's
# MigrationNotFound: 400 "Instance has not been resized.")
RESIZE_FINISHED = "finished"
NOT_RESIZED = "Instance has not been resized."


def refusal(action: str, server_id: str, vm_state: str, task_state: str | None,
            launched: bool) -> str | None:
    """Nova's conflict message when `action` is not allowed now, else None. `action` is a
    key of RULES; the message names Nova's action (`reboot` for both kinds)."""
    rule = RULES[action]
    name = action.removesuffix("_hard")
    if rule.vm_states is not None and vm_state not in rule.vm_states:
        return f"Cannot '{name}' instance {server_id} while it is in vm_state {vm_state}"
    if (rule.task_states is None and task_state == s.DELETING) or (
            rule.task_states is not None and task_state not in rule.task_states):
        return f"Cannot '{name}' instance {server_id} while it is in task_state {task_state}"
    if rule.must_have_launched and not launched:
        return f"Cannot '{name}' instance {server_id} while it is in launched_at None"
    return None
