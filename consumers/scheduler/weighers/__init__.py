"""Nova's weighers: each raw weight is normalised to 0..1 over the candidate hosts, then
multiplied by the weigher's multiplier, and the products are summed (nova.weights)."""

from __future__ import annotations

import heapq

from consumers.scheduler.host_state import HostState
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
    low, high = min(values, default=0.0), max(values, default=0.0)
    if high == low:
        return [0.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


def weigh_hosts(hosts: list[HostState], spec: RequestSpec, weighers: list[BaseWeigher],
                top: int | None = None) -> list[tuple[HostState, float]]:
    """Hosts with their total weight, best first, ties by host name; with `top`, only
    the best `top` (a partial selection: no full sort of a large cloud per decision)."""
    totals = [0.0] * len(hosts)
    for weigher in weighers:
        if weigher.multiplier == 0:
            continue
        raw = [weigher.weigh(h, spec) for h in hosts]
        for i, w in enumerate(normalize(raw)):
            totals[i] += weigher.multiplier * w
    pairs = zip(hosts, totals, strict=True)
    if top is not None and top < len(hosts):
        return heapq.nsmallest(top, pairs, key=_rank)
    return sorted(pairs, key=_rank)


def _rank(pair: tuple[HostState, float]) -> tuple[float, str]:
    return -pair[1], pair[0].host


__all__ = ["BaseWeigher", "default_weighers", "normalize", "weigh_hosts"]
