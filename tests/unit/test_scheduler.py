"""The filter scheduler as pure functions: each filter, the weighers, the choice, the view."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from consumers.scheduler.filters import (
    DEFAULT_FILTERS,
)
from consumers.scheduler.filters.affinity_filter import (
    DifferentHostFilter,
    SameHostFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from consumers.scheduler.filters.availability_zone_filter import AvailabilityZoneFilter
from consumers.scheduler.filters.compute_filter import ComputeFilter
from consumers.scheduler.filters.forced_host_filter import ForcedHostFilter
from consumers.scheduler.filters.image_props_filter import ImagePropertiesFilter
from consumers.scheduler.filters.resource_filters import CoreFilter, DiskFilter, RamFilter
from consumers.scheduler.filters.retry_filter import RetryFilter
from consumers.scheduler.host_state import Hosts, HostState, HostView
from consumers.scheduler.host_table import HostTable
from consumers.scheduler.manager import NoValidHost, Selection, run_filters, select_destination
from consumers.scheduler.request_spec import RequestSpec
from consumers.scheduler.weighers import default_weighers, normalize, weigh_hosts
from consumers.scheduler.weighers.build_failure import BuildFailureWeigher
from novalog.domain.claims import Claim, claim_of
from novalog.domain.instance import filter_counts
from schemas import Event, payloads

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TINY = Claim(vcpus=1, memory_mb=512, disk_gb=1)


def host(name: str, **kw: Any) -> HostState:
    base = dict(host=name, node=name, vcpus=4, memory_mb=8192, local_gb=100,
                last_heartbeat=NOW - timedelta(seconds=5))
    return HostState(**{**base, **kw})


def spec(**kw: Any) -> RequestSpec:
    return RequestSpec(**{"instance_uuid": "i-1", "claim": TINY, "now": NOW, **kw})


@pytest.mark.parametrize(("flt", "passes", "fails", "request_kw"), [
    (ComputeFilter(), host("a"), host("a", disabled=True), {}),
    (ComputeFilter(), host("a"), host("a", last_heartbeat=NOW - timedelta(seconds=61)), {}),
    (AvailabilityZoneFilter(), host("a", zone="az1"), host("a", zone="az2"),
     {"availability_zone": "az1"}),
    (RamFilter(), host("a", memory_mb=512), host("a", memory_mb=511), {}),
    (RamFilter(), host("a", memory_mb=1024, ram_allocation_ratio=1.5,
                       reported_memory_mb_used=1000),
     host("a", memory_mb=1024, reported_memory_mb_used=1000), {}),
    # placement's max_unit: never larger than the host, whatever the ratio
    (RamFilter(), host("a", memory_mb=512), host("a", memory_mb=400, ram_allocation_ratio=4.0),
     {}),
    (CoreFilter(), host("a", vcpus=2, cpu_allocation_ratio=1.0),
     host("a", vcpus=1, cpu_allocation_ratio=16.0), {"claim": Claim(2, 512, 1)}),
    (DiskFilter(), host("a", local_gb=1), host("a", local_gb=0, disk_allocation_ratio=8.0), {}),
    (CoreFilter(), host("a", vcpus=1, cpu_allocation_ratio=1.0),
     host("a", vcpus=1, cpu_allocation_ratio=1.0, reported_vcpus_used=1), {}),
    (DiskFilter(), host("a", local_gb=1), host("a", local_gb=0), {}),
    (ImagePropertiesFilter(), host("a"), host("a", cpu_arch="aarch64"),
     {"image_properties": {"hw_architecture": "x86_64"}}),
    (ImagePropertiesFilter(), host("a"), host("a", hypervisor_type="xen"),
     {"image_properties": {"img_hv_type": "qemu"}}),
    (SameHostFilter(), host("a", instances=frozenset({"x"})), host("a"),
     {"same_host": frozenset({"x"})}),
    (DifferentHostFilter(), host("a"), host("a", instances=frozenset({"x"})),
     {"different_host": frozenset({"x"})}),
    (ServerGroupAffinityFilter(), host("a"), host("b"),
     {"group_policy": "affinity", "group_hosts": frozenset({"a"})}),
    (ServerGroupAntiAffinityFilter(), host("b"), host("a"),
     {"group_policy": "anti-affinity", "group_hosts": frozenset({"a"})}),
    (RetryFilter(), host("b"), host("a"), {"excluded_hosts": frozenset({"a"})}),
    (ForcedHostFilter(), host("a"), host("b"), {"forced_host": "a"}),
    (ForcedHostFilter(), host("a", node="n1"), host("a", node="n2"),
     {"forced_host": "a", "forced_node": "n1"}),
])
def test_each_filter_passes_and_refuses(flt, passes, fails, request_kw) -> None:
    s = spec(**request_kw)
    assert flt.host_passes(passes, s)
    assert not flt.host_passes(fails, s)


def test_filters_without_their_hint_let_everything_through() -> None:
    h = host("a", instances=frozenset({"x"}))
    for f in DEFAULT_FILTERS:
        assert f.host_passes(h, spec()), f.name


def test_normalize_is_novas() -> None:
    assert normalize([2.0, 4.0, 6.0]) == [0.0, 0.5, 1.0]
    assert normalize([3.0, 3.0]) == [0.0, 0.0]
    assert normalize([]) == []


def test_weighers_spread_by_default_and_failing_hosts_sink() -> None:
    busy, idle = host("busy", reported_memory_mb_used=6000), host("idle")
    ranked = weigh_hosts([busy, idle], spec(), default_weighers())
    assert [h.host for h, _ in ranked] == ["idle", "busy"]
    stack = weigh_hosts([busy, idle], spec(), default_weighers(ram=-1.0, cpu=0, disk=0))
    assert stack[0][0].host == "busy"
    failing = replace(idle, failed_builds=2)
    ranked = weigh_hosts([busy, failing], spec(), default_weighers())
    assert ranked[0][0].host == "busy"
    assert BuildFailureWeigher(1000000.0).weigh(failing, spec()) == -2.0


def test_select_destination_picks_the_best_and_spreads_with_the_view() -> None:
    view = HostView(hosts=Hosts({n: host(n) for n in ("cmp1", "cmp2", "cmp3")}))
    chosen = []
    for i in range(6):
        uuid = f"i-{i}"
        view._claims[uuid] = TINY
        result = select_destination(list(view.hosts.values()), spec(instance_uuid=uuid))
        assert isinstance(result, Selection)
        view.record_placement(uuid, result.host)
        chosen.append(result.host)
    assert sorted(chosen) == ["cmp1", "cmp1", "cmp2", "cmp2", "cmp3", "cmp3"]


def test_host_subset_size_chooses_randomly_among_the_best() -> None:
    hosts = [host(f"cmp{i}") for i in range(4)]
    picks = {select_destination(hosts, spec(), host_subset_size=3,  # type: ignore[union-attr]
                                rng=random.Random(seed)).host for seed in range(50)}
    assert picks == {"cmp0", "cmp1", "cmp2"}


def test_no_valid_host_says_which_filter_removed_how_many() -> None:
    hosts = [host("a"), host("b"), host("c", disabled=True)]
    result = select_destination(hosts, spec(claim=Claim(vcpus=1, memory_mb=99999, disk_gb=1)))
    assert isinstance(result, NoValidHost)
    assert result.reason == "There are not enough hosts available."  # what members see
    counts = {r.filter: (r.hosts_in, r.hosts_out) for r in result.filters}
    assert counts["ComputeFilter"] == (3, 2) and counts["RamFilter"] == (2, 0)
    assert "CoreFilter" not in counts  # filtering stops once no host is left
    empty = select_destination([], spec())
    assert isinstance(empty, NoValidHost)
    assert filter_counts(_payloads(empty)) == "no compute host is known"
    assert filter_counts(_payloads(result)) == \
        "ComputeFilter removed 1 of 3; RamFilter removed 2 of 2"  # the admin's details


def _payloads(result: NoValidHost) -> list[payloads.FilterResult]:
    return [{"filter": r.filter, "hosts_in": r.hosts_in, "hosts_out": r.hosts_out}
            for r in result.filters]


def test_a_forced_host_skips_the_filters_but_not_placement() -> None:
    """Nova's forced host: a disabled (or down) host an operator names takes the build;
    one too small for the flavor still gives NoValidHost."""
    off = host("a", disabled=True, last_heartbeat=NOW - timedelta(hours=1))
    chosen = select_destination([off, host("b")], spec(forced_host="a"))
    assert isinstance(chosen, Selection) and chosen.host == "a"
    small = select_destination([host("a", vcpus=1, cpu_allocation_ratio=16.0), host("b")],
                               spec(forced_host="a", claim=Claim(2, 512, 1)))
    assert isinstance(small, NoValidHost)
    assert filter_counts(_payloads(small)) == \
        "ForcedHostFilter removed 1 of 2; CoreFilter removed 1 of 1"
    unforced = select_destination([off], spec())
    assert isinstance(unforced, NoValidHost)  # without forcing, ComputeFilter applies


def test_ram_and_disk_weigh_what_is_physically_free_and_cpu_counts_the_ratio() -> None:
    """Nova's weighers: an overcommitted host's RAM weighs below zero, whatever its ratio."""
    from consumers.scheduler.weighers.resources import CPUWeigher, DiskWeigher, RAMWeigher
    over = host("a", memory_mb=1000, ram_allocation_ratio=1.5, reported_memory_mb_used=1200,
                local_gb=10, disk_allocation_ratio=2.0, reported_local_gb_used=15,
                vcpus=4, cpu_allocation_ratio=4.0, reported_vcpus_used=6)
    s = spec()
    assert RAMWeigher().weigh(over, s) == -200
    assert DiskWeigher().weigh(over, s) == -5
    assert CPUWeigher().weigh(over, s) == 10


def ev(kind: str, aggregate: str, at: datetime = NOW, **payload: Any) -> Event:
    return Event(kind, aggregate, payload, "req-1", "test@h", occurred_at=at)


def report(host_name: str, used_mb: int, uuids: list[str]) -> Event:
    return ev("ComputeResourcesReported", host_name, host=host_name, node=host_name, vcpus=4,
              memory_mb=8192, local_gb=100, vcpus_used=len(uuids), memory_mb_used=used_mb,
              local_gb_used=len(uuids), running_vms=len(uuids), cpu_allocation_ratio=4.0,
              ram_allocation_ratio=1.0, disk_allocation_ratio=1.0, cpu_arch="x86_64",
              hypervisor_type="QEMU", instance_uuids=uuids)


FLAVOR: payloads.Flavor = {"flavorid": "1", "name": "m1.tiny", "vcpus": 1, "memory_mb": 512,
                           "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0, "extra_specs": {}}


def request(uuid: str, group: str | None = None) -> Event:
    return ev("InstanceBuildRequested", uuid, flavor=FLAVOR,
              scheduler_hints={"group": [group]} if group else {})


def test_the_view_counts_pending_placements_until_a_report_includes_them() -> None:
    view = HostView()
    view.apply(ev("ComputeServiceStarted", "cmp1", host="cmp1", binary="nova-compute",
                  zone="nova", hypervisor_type="QEMU", hypervisor_hostname="cmp1",
                  host_ip="127.0.0.1", version="1"))
    view.apply(report("cmp1", 0, []))
    view.apply(request("i-1"))
    view.apply(ev("InstanceScheduled", "i-1", host="cmp1", node="cmp1", attempt=1,
                  weighed_hosts=[]))
    assert view.hosts["cmp1"].memory_mb_used == 512
    view.apply(report("cmp1", 512, ["i-1"]))  # the claim is now in the report: no double count
    assert view.hosts["cmp1"].memory_mb_used == 512
    assert view.hosts["cmp1"].instances == {"i-1"}
    view.apply(ev("InstanceBuildFailed", "i-1", host="cmp1", attempt=1, stage="spawning",
                  reason="x", retryable=True))
    assert view.hosts["cmp1"].failed_builds == 1
    view.apply(ev("ServiceDisabled", "cmp1", host="cmp1", binary="nova-compute", reason="m"))
    assert view.hosts["cmp1"].disabled
    view.apply(ev("HostRemoved", "cmp1", host="cmp1"))
    assert "cmp1" not in view.hosts


def test_the_view_knows_server_group_hosts() -> None:
    view = HostView(hosts=Hosts({"a": host("a"), "b": host("b")}))
    view.apply(ev("ServerGroupCreated", "g", group_id="g", name="web", policy="anti-affinity",
                  project_id="p"))
    view.apply(request("i-1", group="g"))
    view.apply(ev("InstanceScheduled", "i-1", host="a", node="a", attempt=1, weighed_hosts=[]))
    assert view.group_hosts("g") == {"a"}
    assert view.group_policies["g"] == "anti-affinity"
    view.apply(ev("ServerGroupDeleted", "g", group_id="g", project_id="p"))
    assert "g" not in view.group_policies  # its members are no longer constrained


def test_soft_group_policies_weigh_members_instead_of_filtering() -> None:
    """soft-affinity prefers where the members are, soft-anti-affinity where they are not;
    a host that holds them all is still a candidate (a weigher never refuses one)."""
    members = frozenset({"m1", "m2"})
    busy_crowded = host("crowded", instances=members, reported_memory_mb_used=4000)
    near = weigh_hosts([busy_crowded, host("empty")],  # RAM alone would pick "empty"
                       spec(group_policy="soft-affinity", group_members=members),
                       default_weighers(soft_affinity=2.0))
    assert [h.host for h, _ in near] == ["crowded", "empty"]
    crowded = host("crowded", instances=members)
    apart = weigh_hosts([crowded, host("empty", reported_memory_mb_used=4000)],
                        spec(group_policy="soft-anti-affinity", group_members=members),
                        default_weighers(soft_anti_affinity=2.0))  # RAM: "crowded"
    assert [h.host for h, _ in apart] == ["empty", "crowded"]
    plain = weigh_hosts([crowded, host("empty", reported_memory_mb_used=4000)],
                        spec(group_policy="anti-affinity", group_members=members),
                        default_weighers(soft_anti_affinity=2.0))
    assert plain[0][0].host == "crowded"  # a hard policy is the filters' business


def test_claim_of_counts_ephemeral_and_swap_as_disk() -> None:
    assert claim_of({**FLAVOR, "root_gb": 20, "ephemeral_gb": 5, "swap_mb": 1025}) == \
        Claim(vcpus=1, memory_mb=512, disk_gb=27)


def test_the_scheduler_bench_measures_real_decisions() -> None:
    from novalog.bench import scheduler_decisions

    times = scheduler_decisions(hosts=50, decisions=20)
    assert len(times) == 20 and all(t > 0 for t in times)


def test_ranking_breaks_ties_by_name_and_keeps_only_the_best() -> None:
    hosts = [host(f"cmp{i}") for i in (3, 1, 2, 0)]  # all equal, in no order
    ranked = weigh_hosts(hosts, spec(), default_weighers())
    assert [h.host for h, _ in ranked] == ["cmp0", "cmp1", "cmp2", "cmp3"]
    best = weigh_hosts([*hosts, host("big", memory_mb=65536)], spec(), default_weighers(),
                       top=2)
    assert [h.host for h, _ in best] == ["big", "cmp0"]
    many = [host(f"h{i:03}", reported_memory_mb_used=i) for i in range(50)]
    result = select_destination(list(reversed(many)), spec())
    assert isinstance(result, Selection)
    assert result.host == "h000" and result.weighed_hosts == [f"h{i:03}" for i in range(10)]


def test_the_column_view_follows_every_change_of_the_hosts() -> None:
    """The view's table is updated row by row (a removed host's row is refilled by the
    last one): after any sequence of changes it holds what a fresh table would."""
    rng = random.Random(3)
    hosts = Hosts()
    for step in range(400):
        name = f"cmp{rng.randrange(30)}"
        if rng.random() < 0.3:
            hosts.pop(name, None)
        else:
            hosts[name] = host(name, zone=rng.choice(["nova", "az2"]), disabled=step % 7 == 0,
                               reported_memory_mb_used=rng.randrange(8192),
                               failed_builds=rng.randrange(3))
    fresh = HostTable.of(hosts.values())
    live = hosts.table
    assert sorted(live.rows) == sorted(hosts) == sorted(fresh.rows)
    for name in hosts:
        a, b = live.rows[name], fresh.rows[name]
        assert live.states[a] is hosts[name]
        for column in ("memory_mb_used", "disabled", "failed_builds", "heartbeat"):
            assert live.column(column)[a] == fresh.column(column)[b], (name, column)
        assert live.states[a].zone == fresh.states[b].zone
    zone = AvailabilityZoneFilter().passes(live, spec(availability_zone="az2"))
    assert {live.states[r].host for r in np.flatnonzero(zone)} == \
        {n for n, h in hosts.items() if h.zone == "az2"}


def test_a_decision_over_the_table_is_the_one_host_by_host() -> None:
    """Vector filters and weighers agree with asking each host alone (one-row tables),
    ranking ties by name, over a random cloud."""
    rng = random.Random(11)
    cloud = [host(f"h{i:03}", zone=rng.choice(["nova", "az2"]), disabled=rng.random() < 0.1,
                  reported_memory_mb_used=rng.choice([0, 2048, 4096]),
                  reported_vcpus_used=rng.randrange(20), failed_builds=rng.choice([0, 0, 1]),
                  last_heartbeat=NOW - timedelta(seconds=rng.choice([1, 30, 90])))
             for i in range(200)]
    s = spec(availability_zone="nova", excluded_hosts=frozenset({"h001", "h002"}))
    one_by_one = [h for h in cloud if all(f.host_passes(h, s) for f in DEFAULT_FILTERS)]
    table, alive, _ = run_filters(cloud, s, DEFAULT_FILTERS)
    assert [table.states[r].host for r in np.flatnonzero(alive)] == [h.host for h in one_by_one]
    ranked = weigh_hosts(one_by_one, s, default_weighers())
    top = weigh_hosts(table, s, default_weighers(), top=10, candidates=alive)
    assert top == ranked[:10]
    assert ranked == sorted(ranked, key=lambda p: (-p[1], p[0].host))
