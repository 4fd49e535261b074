"""The filter interface."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class BaseHostFilter:
    """A host either passes or not; the class name is what NoValidHost reports.

    `placement` marks the checks Nova leaves to the placement service (capacity and
    max_unit): they hold even for an admin's forced host, which skips the others."""

    placement = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def applies(self, spec: RequestSpec) -> bool:
        """False when this request gives the filter nothing to remove (no hint, no zone…);
        the scheduler then skips it instead of calling host_passes on every host."""
        return True

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        raise NotImplementedError
