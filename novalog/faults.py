"""Faults a test can inject, listed in one place: behaviour faults and crash points.

Behaviour faults: NOVALOG_TEST_FAULTS="refuse_claim@cmp1,fail_spawn@cmp2" makes the
compute agent of cmp1 refuse every claim and the one of cmp2 fail every spawn.

Crash points: NOVALOG_CRASH_AT="ROLE:POINT[@N]" makes the process of ROLE kill itself
with SIGKILL (no clean-up, no flush, no commit) the N-th time it reaches POINT
(counted from the process start), or without @N the next time. Tests that arm
crashes one after another on a running cloud set NOVALOG_CRASH_PLAN to a file
holding such lines instead; it is read at every check. Each crash fires once per
deployment (a marker in $NOVALOG_HOME/crashes), so the restarted process goes on.
Production never sets either.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

FAULTS = {
    "refuse_claim": "the compute agent refuses every claim, as if the host were full",
    "fail_spawn": "the compute agent's spawn step fails (retryable), after disks are made",
}

CRASH_POINTS = {
    # every consume-loop role (scheduler, conductor, compute):
    "consume.after_flush": "follow-up events acknowledged by the broker; input not yet "
                           "recorded in the inbox nor committed",
    "consume.after_inbox": "input recorded in the inbox; its offset not yet committed",
    # api:
    "api.after_commit": "request accepted and its events in the outbox; not yet published",
    "api.after_publish": "events published; outbox not yet cleared, client not answered",
    # projector:
    "projector.before_commit": "a batch's rows written; the transaction not committed",
    # compute:
    "compute.after_claim": "claim row committed; no event emitted yet",
    "compute.after_disks": "overlay and disks made; InstanceBlockDevicesMapped not emitted",
    "compute.after_define": "libvirt domain defined and started; InstanceSpawned not emitted",
    "compute.after_destroy": "a deleted instance's domain destroyed and undefined; its disks, "
                             "ports and claim not yet released",
    "compute.after_release": "disks removed, ReleasePorts queued; InstanceDeleted not "
                             "emitted, the claim not yet dropped",
    "compute.migration.after_claim": "a move's destination claim committed; "
                                     "InstanceMigrationClaimed not emitted",
    "compute.resize.after_power_off": "a resize's source guest powered off, stage outgoing; "
                                      "disks not copied",
    "compute.migration.after_copy": "the disks copied to the destination; FinishMigration "
                                    "not sent",
    "compute.migration.after_spawn": "the guest defined and started on the destination; "
                                     "its stage and the move's final event not written",
    "compute.migration.after_cleanup": "the old host's domain and disks gone; the claim not "
                                       "dropped, its event not emitted",
    "compute.resize.after_revert_dest": "a revert's destination guest gone; "
                                        "FinishRevertMigration not sent",
    "compute.volume.after_attach": "the volume plugged into the domain; the claim row and "
                                   "VolumeAttached not written",
    "compute.volume.after_detach": "the volume unplugged; the claim row and VolumeDetached "
                                   "not written",
    # volume:
    "volume.after_create": "the volume's file made; VolumeCreated not emitted",
    "volume.after_delete": "the volume's file removed; VolumeDeleted not emitted",
    # network:
    "network.after_allocation": "IpAllocated and PortsAllocated acknowledged; command "
                                "offset not committed",
}

_ROLE = os.environ.get("NOVALOG_ROLE", "")
_seen: Counter[str] = Counter()


def active(fault: str, host: str, env: Mapping[str, str] | None = None) -> bool:
    """True when behaviour `fault` is injected for `host`."""
    if fault not in FAULTS:
        raise KeyError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    spec = (os.environ if env is None else env).get("NOVALOG_TEST_FAULTS", "")
    return f"{fault}@{host}" in {item.strip() for item in spec.split(",")}


def _armed() -> list[str]:
    lines = os.environ.get("NOVALOG_CRASH_AT", "")
    plan = os.environ.get("NOVALOG_CRASH_PLAN")
    if plan:
        with contextlib.suppress(OSError):
            lines += "\n" + Path(plan).read_text()
    return [x.strip() for x in lines.replace(",", "\n").splitlines() if x.strip()]


def crash_point(point: str, role: str | None = None) -> None:
    """Die here, abruptly, if a crash is armed for this role and point (see module doc)."""
    if point not in CRASH_POINTS:
        raise KeyError(f"unknown crash point {point!r}")
    if "NOVALOG_CRASH_AT" not in os.environ and "NOVALOG_CRASH_PLAN" not in os.environ:
        return
    me = role or _ROLE
    _seen[point] += 1
    for spec in _armed():
        target, _, nth = spec.partition("@")
        if target != f"{me}:{point}" or (nth and _seen[point] != int(nth)):
            continue
        marker = Path(os.environ.get("NOVALOG_HOME", ".")) / "crashes" / target.replace(":", "-")
        if marker.exists():
            continue
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
