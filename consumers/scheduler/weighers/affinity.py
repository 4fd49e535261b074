"""Nova's soft server-group policies: weighers, not filters, so a full host is still used.

soft-affinity prefers the hosts with more of the group's members, soft-anti-affinity
the hosts with fewer (nova.scheduler.weights.affinity); other policies weigh 0.
"""

from __future__ import annotations

import numpy as np

from consumers.scheduler.host_table import Floats, HostTable
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


def _members_on(table: HostTable, spec: RequestSpec, policy: str) -> Floats:
    if spec.group_policy != policy or not spec.group_members:
        return np.zeros(len(table))
    return np.fromiter((len(spec.group_members & s.instances) for s in table.states),
                       dtype=np.float64, count=len(table))


class ServerGroupSoftAffinityWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return _members_on(table, spec, "soft-affinity")


class ServerGroupSoftAntiAffinityWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return -_members_on(table, spec, "soft-anti-affinity")
