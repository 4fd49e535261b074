"""The weigher interface."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.host_table import Floats, HostTable
from consumers.scheduler.request_spec import RequestSpec


class BaseWeigher:
    """Raw weight of every host (one vector over the table); the multiplier decides
    direction and importance. `weigh` asks about one host through a one-row table."""

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def weights(self, table: HostTable, spec: RequestSpec) -> Floats:
        raise NotImplementedError

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return float(self.weights(HostTable.of([host]), spec)[0])
