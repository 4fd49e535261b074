"""IP allocation: unique, deterministic, idempotent, rebuilt by replaying facts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.network.ipam import Pool, PoolExhausted, Port
from schemas import payloads

NET: payloads.NetworkToAttach = {
    "network_id": "net-1", "name": "private", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
    "allocation_start": "10.0.0.2", "allocation_end": "10.0.0.254", "fixed_ip": None}


def fact_of(port: Port, instance: str) -> payloads.IpAllocated:
    """The IpAllocated fact of `port` (which also reads as its IpReleased)."""
    return payloads.IpAllocated(network_id=port.network_id, instance_uuid=instance,
                                port_id=port.port_id, ip_address=port.ip_address,
                                mac_address=port.mac_address, host=port.host,
                                attempt=port.attempt, slot=port.slot)


def allocated(pool: Pool, instance: str) -> payloads.IpAllocated:
    fact = fact_of(pool.allocate(instance), instance)
    pool.apply_allocated(fact)
    return fact


def test_lowest_free_address_with_an_openstack_mac() -> None:
    pool = Pool.from_network(NET)
    a, b = allocated(pool, "i-a"), allocated(pool, "i-b")
    assert (a["ip_address"], b["ip_address"]) == ("10.0.0.2", "10.0.0.3")
    assert a["mac_address"].startswith("fa:16:3e:") and a["mac_address"] != b["mac_address"]


def test_allocating_again_for_the_same_instance_returns_the_same_port() -> None:
    pool = Pool.from_network(NET)
    first = allocated(pool, "i-a")
    assert fact_of(pool.allocate("i-a"), "i-a") == first
    assert len(pool.ports) == 1


def test_a_re_handled_command_yields_the_identical_port() -> None:
    """Crash after producing the fact, before committing: the same port comes out."""
    a, b = Pool.from_network(NET), Pool.from_network(NET)
    allocated(a, "i-x")
    allocated(b, "i-x")
    assert a.ports == b.ports


def test_release_frees_the_address_for_the_next_instance() -> None:
    pool = Pool.from_network(NET)
    fact = allocated(pool, "i-a")
    pool.apply_released(fact)
    pool.apply_released(fact)  # twice: no harm
    assert allocated(pool, "i-b")["ip_address"] == "10.0.0.2"


def test_exhaustion_and_bad_fixed_ips_are_refused() -> None:
    pool = Pool.from_network({**NET, "allocation_start": "10.0.0.2",
                              "allocation_end": "10.0.0.3"})
    allocated(pool, "i-a")
    allocated(pool, "i-b")
    with pytest.raises(PoolExhausted, match="no free IP address on network private"):
        pool.allocate("i-c")
    with pytest.raises(PoolExhausted, match="already in use"):
        pool.allocate("i-d", fixed_ip="10.0.0.2")
    with pytest.raises(PoolExhausted, match="not usable"):
        pool.allocate("i-d", fixed_ip="192.168.0.9")
    with pytest.raises(ValueError, match="not within"):
        Pool.from_network({**NET, "allocation_end": "10.0.1.9"})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "release"]), st.integers(0, 30)),
                max_size=80))
def test_no_address_or_mac_is_ever_held_twice_and_replay_rebuilds_the_pool(ops) -> None:
    pool, facts = Pool.from_network(NET), []
    for op, n in ops:
        instance = f"i-{n}"
        if op == "alloc":
            fact = allocated(pool, instance)
            facts.append(("alloc", fact))
        else:
            for port in pool.ports_of(instance):
                fact = fact_of(port, instance)
                pool.apply_released(fact)
                facts.append(("release", fact))
        ips = [p.ip_address for p in pool.ports.values()]
        macs = [p.mac_address for p in pool.ports.values()]
        owners = [p.instance_uuid for p in pool.ports.values()]
        assert len(set(ips)) == len(ips) and len(set(macs)) == len(macs)
        assert len(set(owners)) == len(owners)  # one port per instance per network
    replayed = Pool.from_network(NET)
    for kind, fact in facts:
        (replayed.apply_allocated if kind == "alloc" else replayed.apply_released)(fact)
    assert replayed.ports == pool.ports


def test_a_late_release_of_a_failed_attempt_never_frees_the_port_a_later_attempt_rebound() -> None:
    pool = Pool.from_network(NET)
    first = pool.allocate("i-a", attempt=1, host="cmp1")
    pool.apply_allocated(fact_of(first, "i-a"))
    rebound = pool.allocate("i-a", attempt=2, host="cmp2")  # the next host asked first
    assert rebound.ip_address == first.ip_address and rebound.attempt == 2
    pool.apply_allocated(fact_of(rebound, "i-a"))
    assert pool.ports_of("i-a", attempt=1) == []  # the late ReleasePorts(attempt=1) finds none
    assert [p.ip_address for p in pool.ports_of("i-a", attempt=2)] == [first.ip_address]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40))
def test_the_indexes_agree_with_a_scan_of_every_port(steps: list[tuple[bool, int]]) -> None:
    """Allocations and releases in any order: each answer is what scanning every port
    (the pool before it kept indexes) would give."""
    pool = Pool.from_network({**NET, "allocation_end": "10.0.0.9"})
    facts: dict[str, payloads.IpAllocated] = {}
    for allocate, n in steps:
        instance = f"i-{n}"
        if allocate:
            try:
                port = pool.allocate(instance)
            except PoolExhausted:
                assert len(pool.ports) == 8
                continue
            held = [p for p in pool.ports.values() if p.instance_uuid == instance]
            free = [f"10.0.0.{i}" for i in range(2, 10) if f"10.0.0.{i}" not in pool.ports]
            assert port.ip_address == (held[0].ip_address if held else free[0])
            assert port.mac_address not in {p.mac_address for p in pool.ports.values()
                                            if p.instance_uuid != instance}
            facts[instance] = fact_of(port, instance)
            pool.apply_allocated(facts[instance])
        elif instance in facts:
            pool.apply_released(facts.pop(instance))
        assert {i: [p.ip_address for p in pool.ports_of(i)] for i in facts} == {
            i: [f["ip_address"]] for i, f in facts.items()}


def test_two_entries_for_one_network_are_two_ports_each_re_handled_to_itself() -> None:
    """Nova allows a network twice in one request: one port per entry (slot), and a
    re-handled allocation of either gives back that same port, never a third."""
    pool = Pool.from_network(NET)
    first = pool.allocate("i-1", attempt=1, host="cmp1")
    pool.apply_allocated(fact_of(first, "i-1"))
    second = pool.allocate("i-1", attempt=1, host="cmp1", slot=1)
    pool.apply_allocated(fact_of(second, "i-1"))
    assert first.ip_address != second.ip_address and second.slot == 1
    assert pool.allocate("i-1", attempt=1, host="cmp1", slot=1) == second
    assert pool.allocate("i-1", attempt=2, host="cmp2") == \
        replace(first, attempt=2, host="cmp2")
    rebuilt = Pool.from_network(NET)  # the pool folded again from the facts
    for port in (first, second):
        rebuilt.apply_allocated(fact_of(port, "i-1"))
    assert sorted(p.slot for p in rebuilt.ports_of("i-1")) == [0, 1]
