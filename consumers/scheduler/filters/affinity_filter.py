"""Affinity filters: same / different host hints and server-group (anti-)affinity."""

from __future__ import annotations

from consumers.scheduler.filters.base import BaseHostFilter
from consumers.scheduler.host_state import HostState
from consumers.scheduler.request_spec import RequestSpec


class SameHostFilter(BaseHostFilter):
    """Hint `same_host`: on a host running one of these instances."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.same_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.same_host or bool(spec.same_host & host.instances)


class DifferentHostFilter(BaseHostFilter):
    """Hint `different_host`: on a host running none of these instances."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.different_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not (spec.different_host & host.instances)


class ServerGroupAffinityFilter(BaseHostFilter):
    """An affinity group's members go where its first member went."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "affinity" and bool(spec.group_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        if spec.group_policy != "affinity" or not spec.group_hosts:
            return True
        return host.host in spec.group_hosts


class ServerGroupAntiAffinityFilter(BaseHostFilter):
    """An anti-affinity group's members each get a host of their own."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "anti-affinity" and bool(spec.group_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.group_policy != "anti-affinity" or host.host not in spec.group_hosts
