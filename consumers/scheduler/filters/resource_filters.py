"""RamFilter, CoreFilter, DiskFilter: room for the flavor after overcommit.

A host fits when what is free after the allocation ratio (total x ratio - used)
holds the flavor, and the flavor is no larger than the host itself: placement's
max_unit, which Nova's libvirt driver sets to the physical total (a 16-vCPU flavor
never lands on an 8-CPU host, whatever the ratio). These run for a forced host too.
"""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


def fits(table: HostTable, total: str, used: str, ratio: str, need: int) -> Mask:
    size = table.column(total)
    free = size * table.column(ratio) - table.column(used)
    return (free >= need) & (need <= size)


class RamFilter(BaseHostFilter):
    placement = True

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return fits(table, "memory_mb", "memory_mb_used", "ram_allocation_ratio",
                    spec.claim.memory_mb)


class CoreFilter(BaseHostFilter):
    placement = True

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return fits(table, "vcpus", "vcpus_used", "cpu_allocation_ratio", spec.claim.vcpus)


class DiskFilter(BaseHostFilter):
    placement = True

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return fits(table, "local_gb", "local_gb_used", "disk_allocation_ratio",
                    spec.claim.disk_gb)
