"""Nova's filters, in the order they run. Each is a pure `passes(table, spec)`: a mask
over every host of the column-oriented view at once (host_table.py).

A filter is a class so it has a name for NoValidHost reports, like Nova's
`nova.scheduler.filters.*Filter`.
"""

from __future__ import annotations

from consumers.scheduler.filters.affinity_filter import (
    DifferentHostFilter,
    SameHostFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from consumers.scheduler.filters.availability_zone_filter import AvailabilityZoneFilter
from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.filters.compute_filter import ComputeFilter
from consumers.scheduler.filters.forced_host_filter import ForcedHostFilter
from consumers.scheduler.filters.image_props_filter import ImagePropertiesFilter
from consumers.scheduler.filters.resource_filters import CoreFilter, DiskFilter, RamFilter
from consumers.scheduler.filters.retry_filter import RetryFilter

DEFAULT_FILTERS: list[BaseHostFilter] = [
    ForcedHostFilter(),
    RetryFilter(),
    ComputeFilter(),
    AvailabilityZoneFilter(),
    RamFilter(),
    CoreFilter(),
    DiskFilter(),
    ImagePropertiesFilter(),
    SameHostFilter(),
    DifferentHostFilter(),
    ServerGroupAffinityFilter(),
    ServerGroupAntiAffinityFilter(),
]

__all__ = ["DEFAULT_FILTERS", "BaseHostFilter"]
