"""ImagePropertiesFilter: the image's architecture and hypervisor type match the host's."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class ImagePropertiesFilter(BaseHostFilter):
    def applies(self, spec: RequestSpec) -> bool:
        p = spec.image_properties
        return any(k in p for k in ("hw_architecture", "architecture", "img_hv_type",
                                    "hypervisor_type"))

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        props = spec.image_properties
        arch = props.get("hw_architecture") or props.get("architecture")
        hv_type = props.get("img_hv_type") or props.get("hypervisor_type")
        if arch and arch.lower() != host.cpu_arch.lower():
            return False
        return not (hv_type and hv_type.lower() != host.hypervisor_type.lower())
