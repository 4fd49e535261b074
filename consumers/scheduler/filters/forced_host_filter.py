"""ForcedHostFilter: an admin's `AZ:host[:node]` keeps only that host.

As in Nova, a forced host skips every other filter (an operator may test a disabled
or a down node this way) but not placement's capacity checks (the resource filters):
a flavor that cannot fit gives NoValidHost at once, not a claim refused on the host.
"""

from __future__ import annotations

import numpy as np

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class ForcedHostFilter(BaseHostFilter):
    placement = True  # runs first, so that the forced host is all that is left

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.forced_host or spec.forced_node)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        mask = table.rows_of([spec.forced_host]) if spec.forced_host \
            else np.ones(len(table), dtype=bool)
        if spec.forced_node:
            mask &= table.where(s.node == spec.forced_node for s in table.states)
        return mask
