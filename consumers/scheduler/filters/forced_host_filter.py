"""ForcedHostFilter: an admin's `AZ:host[:node]` keeps only that host.

Nova skips every other filter for a forced host; novalog still runs them, so a
forced host that cannot fit the flavor gives NoValidHost at once instead of a
claim refusal on the host.
"""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class ForcedHostFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.forced_host or spec.forced_node)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        if spec.forced_host and host.host != spec.forced_host:
            return False
        return not (spec.forced_node and host.node != spec.forced_node)
