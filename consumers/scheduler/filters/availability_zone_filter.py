"""AvailabilityZoneFilter: the host is in the requested zone (any zone when none is asked)."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class AvailabilityZoneFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        return spec.availability_zone is not None

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        assert spec.availability_zone is not None
        same: Mask = table.column("zone") == table.code("zone", spec.availability_zone)
        return same
