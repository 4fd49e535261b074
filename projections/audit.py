"""Audit: a server's history straight from the topics, and a summary of requests.

`server_history` reads the instances topic itself (assign() on every partition,
from offset 0, to the end), keeps the server's events in log order, and folds
them as it goes. So each line shows the vm_state / task_state *after* that
event, computed by the same fold as the projection, but without trusting it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from novalog.domain.instance import TransitionError, apply
from novalog.kafka import Topics, scan_topic
from novalog.settings import Settings
from schemas import Event, SerializationError, decode


@dataclass(frozen=True)
class AuditEntry:
    occurred_at: datetime
    event_type: str
    vm_state: str | None
    task_state: str | None
    role: str
    host: str
    request_id: str
    event_id: str
    partition: int
    offset: int
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "occurred_at": self.occurred_at.isoformat()}


def details_of(event: Event) -> dict[str, Any]:
    """What an operator wants to read of each event, without the bulk."""
    p = event.payload
    if event.event_type == "InstanceBuildRequested":
        return {"name": p["name"], "flavor": p["flavor"]["name"],
                "image": (p["image"] or {}).get("name"), "project_id": p["project_id"],
                "user_id": p["user_id"], "reservation_id": p["reservation_id"],
                "networks": [n["network_id"] for n in p["networks"]],
                "availability_zone": p["availability_zone"], "forced_host": p["forced_host"]}
    if event.event_type == "InstanceNetworkAllocated":
        return {"host": p["host"], "attempt": p["attempt"],
                "ports": [f"{x['network_name']}={x['ip_address']} ({x['mac_address']})"
                          for x in p["ports"]]}
    if event.event_type == "InstanceBlockDevicesMapped":
        return {"host": p["host"], "attempt": p["attempt"],
                "disks": [f"{d['device']}: {d['path']}" for d in p["disks"]]}
    if event.event_type == "InstanceNoValidHost":
        return {"attempt": p["attempt"], "reason": p["reason"]}
    if event.event_type == "InstanceSpawned":
        return {**{k: p[k] for k in ("host", "node", "attempt", "domain_name")},
                "launched_at": p["launched_at"].isoformat()}
    return dict(p)


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


def server_history(settings: Settings, server_id: str) -> list[AuditEntry]:
    """Every event of the server, in log order, with the state after each."""
    topic = Topics(settings.topic_prefix).instances
    records = read_topic(settings, topic, lambda e: e.aggregate_id == server_id)
    entries, state = [], None
    seen: set[str] = set()
    for partition, offset, event in records:
        duplicate = event.event_id in seen
        seen.add(event.event_id)
        if not duplicate:
            with contextlib.suppress(TransitionError):  # shown; the state does not move
                state = apply(state, event)
        role, _, host = event.producer.partition("@")
        entries.append(AuditEntry(
            event.occurred_at, event.event_type + (" (duplicate)" if duplicate else ""),
            state.vm_state if state else None, state.task_state if state else None, role, host,
            event.correlation_id, event.event_id, partition, offset, details_of(event)))
    return entries
