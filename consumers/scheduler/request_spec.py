"""What one scheduling attempt asks for (Nova's RequestSpec), built from the build request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consumers.scheduler.host_state import SERVICE_DOWN_TIME, HostView
from novalog.domain.claims import Claim, claim_of
from schemas import payloads


@dataclass(frozen=True)
class RequestSpec:
    instance_uuid: str
    claim: Claim
    attempt: int = 1
    availability_zone: str | None = None
    forced_host: str | None = None
    forced_node: str | None = None
    image_properties: dict[str, str] = field(default_factory=dict)
    excluded_hosts: frozenset[str] = frozenset()
    same_host: frozenset[str] = frozenset()  # hint: instance uuids
    different_host: frozenset[str] = frozenset()
    group_policy: str | None = None
    group_hosts: frozenset[str] = frozenset()
    group_members: frozenset[str] = frozenset()  # the group's other instances
    now: datetime | None = None
    service_down_time: timedelta = SERVICE_DOWN_TIME


def build_spec(instance_uuid: str, request: payloads.InstanceBuildRequested, view: HostView,
               *, attempt: int, excluded_hosts: frozenset[str], now: datetime) -> RequestSpec:
    """The spec for `request` (an InstanceBuildRequested payload) as of this attempt."""
    hints = request["scheduler_hints"]
    group = next(iter(hints.get("group", [])), None)
    image = request["image"]
    return RequestSpec(
        instance_uuid=instance_uuid,
        claim=claim_of(request["flavor"]),
        attempt=attempt,
        availability_zone=request["availability_zone"],
        forced_host=request["forced_host"],
        forced_node=request["forced_node"],
        image_properties=dict(image["properties"]) if image else {},
        excluded_hosts=excluded_hosts,
        same_host=frozenset(hints.get("same_host", [])),
        different_host=frozenset(hints.get("different_host", [])),
        group_policy=view.group_policies.get(group) if group else None,
        group_hosts=view.group_hosts(group) - {view.placements.get(instance_uuid, "")}
        if group else frozenset(),
        group_members=frozenset(view.groups.get(group, set())) - {instance_uuid}
        if group else frozenset(),
        now=now,
        service_down_time=view.service_down_time,
    )
