"""ComputeFilter: the host's compute service is enabled and up (heartbeat age)."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class ComputeFilter(BaseHostFilter):
    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        now = (spec.now or datetime.now(UTC)).timestamp()
        age = now - table.column("heartbeat")  # NaN (never beat) compares False: down
        up: Mask = age <= spec.service_down_time.total_seconds()
        enabled: Mask = table.column("disabled") == 0
        return up & enabled
