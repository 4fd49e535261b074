"""The weigher interface."""

from __future__ import annotations

from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class BaseWeigher:
    """Raw weight of one host; the multiplier decides direction and importance."""

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        raise NotImplementedError
