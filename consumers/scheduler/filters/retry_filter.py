"""RetryFilter: never a host this instance already failed on."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class RetryFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.excluded_hosts)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return ~table.rows_of(spec.excluded_hosts)
