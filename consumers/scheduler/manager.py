"""select_destination: filter, weigh, pick at random among the best host_subset_size.

Pure: the caller passes the hosts (the view's HostTable, or a list of states), the
spec and the random generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from consumers.scheduler.filters import DEFAULT_FILTERS, BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers import BaseWeigher, default_weighers, weigh_hosts
from novalog.domain.instance import NOT_ENOUGH_HOSTS

WEIGHED_HOSTS_KEPT = 10  # the best hosts a Selection lists (InstanceScheduled carries them)


@dataclass(frozen=True)
class FilterResult:
    filter: str
    hosts_in: int
    hosts_out: int


@dataclass(frozen=True)
class Selection:
    host: str
    node: str
    weighed_hosts: list[str]  # the best WEIGHED_HOSTS_KEPT (or host_subset_size), best first
    filters: list[FilterResult]


@dataclass(frozen=True)
class NoValidHost:
    reason: str
    filters: list[FilterResult]


def run_filters(hosts: HostTable | list[HostState], spec: RequestSpec,
                filters: list[BaseHostFilter]) -> tuple[HostTable, Mask, list[FilterResult]]:
    """The table and the mask of the hosts every filter kept, and what each removed."""
    table = hosts if isinstance(hosts, HostTable) else HostTable.of(hosts)
    alive: Mask = np.ones(len(table), dtype=bool)
    results = []
    forced = bool(spec.forced_host or spec.forced_node)
    before = len(table)
    for f in filters:
        if f.applies(spec) and (f.placement or not forced):
            alive &= f.passes(table, spec)
            after = int(alive.sum())
        else:
            after = before
        results.append(FilterResult(f.name, before, after))
        if not after:
            break
        before = after
    return table, alive, results


def select_destination(hosts: HostTable | list[HostState], spec: RequestSpec, *,
                       filters: list[BaseHostFilter] | None = None,
                       weighers: list[BaseWeigher] | None = None,
                       host_subset_size: int = 1,
                       rng: random.Random | None = None) -> Selection | NoValidHost:
    """One host for `spec`, or why none fits (which filter removed how many hosts)."""
    table, alive, results = run_filters(hosts, spec,
                                        DEFAULT_FILTERS if filters is None else filters)
    if not alive.any():
        return NoValidHost(NOT_ENOUGH_HOSTS, results)
    ranked = weigh_hosts(table, spec, default_weighers() if weighers is None else weighers,
                         top=max(WEIGHED_HOSTS_KEPT, host_subset_size), candidates=alive)
    best = ranked[: max(1, host_subset_size)]
    chosen = (rng or random).choice(best)[0]
    return Selection(chosen.host, chosen.node, [h.host for h, _ in ranked], results)
