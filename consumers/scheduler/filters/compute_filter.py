"""ComputeFilter: the host's compute service is enabled and up (heartbeat age)."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class ComputeFilter(BaseHostFilter):
    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not host.disabled and host.is_up(spec.now or datetime.now(UTC),
                                                spec.service_down_time)
