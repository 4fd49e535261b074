"""AvailabilityZoneFilter: the host is in the requested zone (any zone when none is asked)."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class AvailabilityZoneFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        return spec.availability_zone is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.availability_zone is None or host.zone == spec.availability_zone
