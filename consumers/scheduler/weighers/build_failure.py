"""BuildFailureWeigher: hosts whose recent builds failed sink (Nova multiplies by -1e6)."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.base import BaseWeigher


class BuildFailureWeigher(BaseWeigher):
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return -float(host.failed_builds)
