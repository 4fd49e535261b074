"""The filter interface."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class BaseHostFilter:
    """A host either passes or not; the class name is what NoValidHost reports.

    `placement` marks the checks Nova leaves to the placement service (capacity and
    max_unit): they hold even for an admin's forced host, which skips the others.
    A filter answers for every host of the table at once (`passes`); `host_passes`
    asks about one host through a one-row table, so there is one rule, not two."""

    placement = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def applies(self, spec: RequestSpec) -> bool:
        """False when this request gives the filter nothing to remove (no hint, no zone…);
        the scheduler then skips it instead of testing every host."""
        return True

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        """True on the rows of the hosts that pass (only called when `applies`)."""
        raise NotImplementedError

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not self.applies(spec) or bool(self.passes(HostTable.of([host]), spec)[0])
