"""RAMWeigher, CPUWeigher, DiskWeigher: more free resource weighs more (spread).

As Nova's: RAM and disk weigh what is physically free (total - used, below zero
when overcommitted), only the CPU weigher counts the allocation ratio.
"""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


class RAMWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.memory_mb - host.memory_mb_used


class CPUWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_vcpus


class DiskWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.local_gb - host.local_gb_used
