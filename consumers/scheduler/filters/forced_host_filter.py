"""ForcedHostFilter: an admin's `AZ:host[:node]` keeps only that host.

As in Nova, a forced host skips every other filter (an operator may test a disabled
or a down node this way) but not placement's capacity checks (the resource filters):
a flavor that cannot fit gives NoValidHost at once, not a claim refused on the host.
"""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class ForcedHostFilter(BaseHostFilter):
    placement = True  # runs first, so that the forced host is all that is left

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.forced_host or spec.forced_node)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        if spec.forced_host and host.host != spec.forced_host:
            return False
        return not (spec.forced_node and host.node != spec.forced_node)
