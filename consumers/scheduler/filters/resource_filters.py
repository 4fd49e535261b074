"""RamFilter, CoreFilter, DiskFilter: placement's allocation candidates, per resource.

A host fits when what is free after the allocation ratio (total x ratio - used)
holds the flavor, and the flavor is no larger than the host itself: placement's
max_unit, which Nova's libvirt driver sets to the physical total (a 16-vCPU flavor
never lands on an 8-CPU host, whatever the ratio). These run for a forced host too.
"""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class RamFilter(BaseHostFilter):
    placement = True

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        need = spec.claim.memory_mb
        return host.free_ram_mb >= need and need <= host.memory_mb


class CoreFilter(BaseHostFilter):
    placement = True

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        need = spec.claim.vcpus
        return host.free_vcpus >= need and need <= host.vcpus


class DiskFilter(BaseHostFilter):
    placement = True

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        need = spec.claim.disk_gb
        return host.free_disk_gb >= need and need <= host.local_gb
