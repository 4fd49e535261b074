"""RAMWeigher, CPUWeigher, DiskWeigher: more free resource weighs more (spread)."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


class RAMWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_ram_mb


class CPUWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_vcpus


class DiskWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_disk_gb
