"""RAMWeigher, CPUWeigher, DiskWeigher: more free resource weighs more (spread).

As Nova's: RAM and disk weigh what is physically free (total - used, below zero
when overcommitted), only the CPU weigher counts the allocation ratio.
"""

from __future__ import annotations

from consumers.scheduler.host_table import Floats, HostTable
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


class RAMWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return table.column("memory_mb") - table.column("memory_mb_used")


class CPUWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return (table.column("vcpus") * table.column("cpu_allocation_ratio")
                - table.column("vcpus_used"))


class DiskWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return table.column("local_gb") - table.column("local_gb_used")
