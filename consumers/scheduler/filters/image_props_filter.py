"""ImagePropertiesFilter: the image's architecture and hypervisor type match the host's."""

from __future__ import annotations

import numpy as np

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class ImagePropertiesFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        p = spec.image_properties
        return any(k in p for k in ("hw_architecture", "architecture", "img_hv_type",
                                    "hypervisor_type"))

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        props = spec.image_properties
        mask: Mask = np.ones(len(table), dtype=bool)
        for column, wanted in (
                ("cpu_arch", props.get("hw_architecture") or props.get("architecture")),
                ("hypervisor_type", props.get("img_hv_type") or props.get("hypervisor_type"))):
            if wanted:  # compared case-insensitively, as the table codes them
                mask &= table.column(column) == table.code(column, wanted)
        return mask
