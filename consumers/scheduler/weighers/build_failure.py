"""BuildFailureWeigher: hosts whose recent builds failed sink (Nova multiplies by -1e6)."""

from __future__ import annotations

from consumers.scheduler.host_table import Floats, HostTable
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


class BuildFailureWeigher(BaseWeigher):
    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        return -table.column("failed_builds")
