"""The filter interface."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class BaseHostFilter:
    """A host either passes or not; the class name is what NoValidHost reports."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        raise NotImplementedError
