"""Audit: a server's history straight from the topics, and a summary of requests.

`server_history` reads the instances topic itself (assign() on every partition,
from offset 0, to the end), keeps the server's events in log order, and folds
them as it goes. So each line shows the vm_state / task_state *after* that
event, computed by the same fold as the projection, but without trusting it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

from novalog.domain.instance import Instance, TransitionError, apply
from novalog.kafka import Topics, scan_topic
from novalog.settings import Settings
from novalog.views import AuditEntryView
from schemas import Event, SerializationError, decode, payloads
from schemas.typed import payload_of

Details = dict[str, object]  # a digest of the payload, or the payload's own fields


def _requested(event: Event) -> Details:
    p = payload_of(event, payloads.InstanceBuildRequested)
    return {"name": p["name"], "flavor": p["flavor"]["name"],
            "image": p["image"]["name"] if p["image"] else None, "project_id": p["project_id"],
            "user_id": p["user_id"], "reservation_id": p["reservation_id"],
            "networks": [n["network_id"] for n in p["networks"]],
            "availability_zone": p["availability_zone"], "forced_host": p["forced_host"]}


def _network_allocated(event: Event) -> Details:
    p = payload_of(event, payloads.InstanceNetworkAllocated)
    return {"host": p["host"], "attempt": p["attempt"],
            "ports": [f"{x['network_name']}={x['ip_address']} ({x['mac_address']})"
                      for x in p["ports"]]}


def _block_devices_mapped(event: Event) -> Details:
    p = payload_of(event, payloads.InstanceBlockDevicesMapped)
    return {"host": p["host"], "attempt": p["attempt"],
            "disks": [f"{d['device']}: {d['path']}" for d in p["disks"]]}


def _no_valid_host(event: Event) -> Details:
    p = payload_of(event, payloads.InstanceNoValidHost)
    return {"attempt": p["attempt"], "reason": p["reason"]}


def _spawned(event: Event) -> Details:
    p = payload_of(event, payloads.InstanceSpawned)
    return {"host": p["host"], "node": p["node"], "attempt": p["attempt"],
            "domain_name": p["domain_name"], "launched_at": p["launched_at"].isoformat()}


def _migration_started(event: Event) -> Details:
    m = payload_of(event, payloads.InstanceMigrationStarted)["migration"]
    return {"migration_id": m["migration_id"], "kind": m["kind"], "source_host": m["source_host"],
            "old_flavor": m["old_flavor"]["name"], "new_flavor": m["new_flavor"]["name"],
            "requested_host": m["requested_host"], "old_vm_state": m["old_vm_state"]}


def _arrived(event: Event) -> Details:
    """A move's end (InstanceResized, ...Reverted, ...Evacuated, LiveMigrated)."""
    disks = cast(list[payloads.Disk], event.payload["disks"])
    return {**event.payload, "disks": [f"{d['device']}: {d['path']}" for d in disks]}


# The events whose details are a digest, by type; any other shows its whole payload.
DIGESTS: dict[str, Callable[[Event], Details]] = {
    "InstanceBuildRequested": _requested,
    "InstanceNetworkAllocated": _network_allocated,
    "InstanceBlockDevicesMapped": _block_devices_mapped,
    "InstanceNoValidHost": _no_valid_host,
    "InstanceSpawned": _spawned,
    "InstanceMigrationStarted": _migration_started,
    **dict.fromkeys(("InstanceResized", "InstanceResizeReverted", "InstanceLiveMigrated",
                     "InstanceEvacuated"), _arrived),
}


def details_of(event: Event) -> Details:
    """What an operator wants to read of each event, without the bulk."""
    digest = DIGESTS.get(event.event_type)
    if digest is not None:
        return digest(event)
    return dict(event.payload)


def read_topic(settings: Settings, topic: str, keep: Any) -> list[tuple[int, int, Event]]:
    """(partition, offset, event) of every decodable record `keep` accepts, in log order."""
    found: list[tuple[int, int, Event]] = []
    for msg in scan_topic(settings, topic):
        try:
            event = decode(msg.value() or b"")
        except SerializationError:
            continue
        if keep(event):
            found.append((msg.partition() or 0, msg.offset() or 0, event))
    return found


def server_history(settings: Settings, server_id: str) -> list[AuditEntryView]:
    """Every event of the server, in log order, with the state after each."""
    topic = Topics(settings.topic_prefix).instances
    records = read_topic(settings, topic, lambda e: e.aggregate_id == server_id)
    entries: list[AuditEntryView] = []
    state: Instance | None = None
    seen: set[str] = set()
    for partition, offset, event in records:
        duplicate = event.event_id in seen
        seen.add(event.event_id)
        if not duplicate:
            with contextlib.suppress(TransitionError):  # shown; the state does not move
                state = apply(state, event)
        role, _, host = event.producer.partition("@")
        entries.append({
            "occurred_at": event.occurred_at.isoformat(),
            "event_type": event.event_type + (" (duplicate)" if duplicate else ""),
            "vm_state": state.vm_state if state else None,
            "task_state": state.task_state if state else None, "role": role, "host": host,
            "request_id": event.correlation_id, "event_id": event.event_id,
            "partition": partition, "offset": offset, "details": details_of(event)})
    return entries


def volume_history(settings: Settings,
                   volume_id: str) -> tuple[str | None, list[dict[str, object]]]:
    """The volume's project and every event of it on the volumes topic, in log order, with
    its status and attachments after each (the projection's fold, without trusting it)."""
    from novalog.domain import volume as fold

    topic = Topics(settings.topic_prefix).volumes
    state: fold.Volume | None = None
    seen: set[str] = set()
    entries: list[dict[str, object]] = []
    for partition, offset, event in read_topic(settings, topic,
                                               lambda e: e.aggregate_id == volume_id):
        duplicate = event.event_id in seen
        seen.add(event.event_id)
        if not duplicate and event.event_type in fold.FOLDED:
            with contextlib.suppress(TransitionError):  # shown; the state does not move
                state = fold.apply(state, event)
        role, _, host = event.producer.partition("@")
        entries.append({
            "occurred_at": event.occurred_at.isoformat(),
            "event_type": event.event_type + (" (duplicate)" if duplicate else ""),
            "status": state.status if state else None,
            "attachments": [f"{a.instance_uuid}:{a.attach_status}"
                            + (f":{a.device}" if a.device else "")
                            for a in state.attachments] if state else [],
            "role": role, "host": host, "request_id": event.correlation_id,
            "event_id": event.event_id, "partition": partition, "offset": offset})
    return (state.project_id if state else None), entries
