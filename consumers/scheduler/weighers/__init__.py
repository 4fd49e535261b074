"""Nova's weighers: each raw weight is normalised to 0..1 over the candidate hosts, then
multiplied by the weigher's multiplier, and the products are summed (nova.weights)."""

from __future__ import annotations

import numpy as np

from consumers.scheduler.host_state import HostState
from consumers.scheduler.host_table import Floats, HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers.affinity import (
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
)
from consumers.scheduler.weighers.base import BaseWeigher
from consumers.scheduler.weighers.build_failure import BuildFailureWeigher
from consumers.scheduler.weighers.resources import CPUWeigher, DiskWeigher, RAMWeigher


def default_weighers(ram: float = 1.0, cpu: float = 1.0, disk: float = 1.0,
                     build_failure: float = 1000000.0, soft_affinity: float = 1.0,
                     soft_anti_affinity: float = 1.0) -> list[BaseWeigher]:
    """Positive multipliers spread (Nova's default); negative ones stack."""
    return [RAMWeigher(ram), CPUWeigher(cpu), DiskWeigher(disk),
            BuildFailureWeigher(build_failure), ServerGroupSoftAffinityWeigher(soft_affinity),
            ServerGroupSoftAntiAffinityWeigher(soft_anti_affinity)]


def normalize(values: list[float]) -> list[float]:
    """Nova's weights.normalize: scale to 0..1; all equal values weigh 0."""
    return [float(v) for v in _normalized(np.array(values, dtype=np.float64))]


def weigh_hosts(hosts: HostTable | list[HostState], spec: RequestSpec,
                weighers: list[BaseWeigher], top: int | None = None,
                candidates: Mask | None = None) -> list[tuple[HostState, float]]:
    """The candidate hosts (all, or the rows of `candidates`) with their total weight,
    best first, ties by host name; with `top`, only the best `top`: a partial selection,
    no full sort of a large cloud per decision."""
    table = hosts if isinstance(hosts, HostTable) else HostTable.of(hosts)
    rows = np.arange(len(table)) if candidates is None else np.flatnonzero(candidates)
    totals = np.zeros(len(rows))
    for weigher in weighers:
        if weigher.multiplier != 0:
            totals += weigher.multiplier * _normalized(weigher.weights(table, spec)[rows])
    if top is not None and top < len(rows):
        # Everything at least as heavy as the top-th weight, so ties at the edge are
        # broken by name like the rest.
        edge = np.partition(totals, len(totals) - top)[len(totals) - top]
        keep = totals >= edge
        rows, totals = rows[keep], totals[keep]
    order = np.lexsort((table.name_rank[rows], -totals))[:top]
    return [(table.states[rows[i]], float(totals[i])) for i in order]


def _normalized(raw: Floats) -> Floats:
    if len(raw) == 0:
        return raw
    low, high = raw.min(), raw.max()
    return np.zeros(len(raw)) if high == low else (raw - low) / (high - low)


__all__ = ["BaseWeigher", "default_weighers", "normalize", "weigh_hosts"]
