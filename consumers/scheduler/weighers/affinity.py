"""Nova's soft server-group policies: weighers, not filters, so a full host is still used.

soft-affinity prefers the hosts with more of the group's members, soft-anti-affinity
the hosts with fewer (nova.scheduler.weights.affinity); other policies weigh 0.
"""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


def _members_on(host: HostState, spec: RequestSpec) -> float:
    return float(len(spec.group_members & host.instances))


class ServerGroupSoftAffinityWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return _members_on(host, spec) if spec.group_policy == "soft-affinity" else 0.0


class ServerGroupSoftAntiAffinityWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return -_members_on(host, spec) if spec.group_policy == "soft-anti-affinity" else 0.0
