"""Affinity filters: same / different host hints and server-group (anti-)affinity."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_table import HostTable, Mask
from consumers.scheduler.request_spec import RequestSpec


class SameHostFilter(BaseHostFilter):
    """Hint `same_host`: on a host running one of these instances."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.same_host)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return table.where(bool(spec.same_host & s.instances) for s in table.states)


class DifferentHostFilter(BaseHostFilter):
    """Hint `different_host`: on a host running none of these instances."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.different_host)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return table.where(not (spec.different_host & s.instances) for s in table.states)


class ServerGroupAffinityFilter(BaseHostFilter):
    """An affinity group's members go where its first member went."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "affinity" and bool(spec.group_hosts)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return table.rows_of(spec.group_hosts)


class ServerGroupAntiAffinityFilter(BaseHostFilter):
    """An anti-affinity group's members each get a host of their own."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "anti-affinity" and bool(spec.group_hosts)

    def passes(self, table: HostTable, spec: RequestSpec) -> Mask:
        return ~table.rows_of(spec.group_hosts)
