"""RetryFilter: never a host this instance already failed on."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class RetryFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.excluded_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host not in spec.excluded_hosts
