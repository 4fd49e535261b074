"""The scheduler's and the conductor's decisions on in-memory events (tests/fakes.py):
no broker, no Postgres, the real handlers and the real Publisher."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.conductor.manager import Conductor, max_retries_message
from consumers.scheduler.host_state import Hosts, HostState, HostView
from consumers.scheduler.role import Scheduler
from novalog.consume import TransientError
from novalog.kafka import Topics
from novalog.read_model import ServerState
from novalog.settings import Settings
from schemas import Event, payloads
from schemas.typed import payload_of
from tests.fakes import FakeProjection, FakeReplica, InMemorySink, feed, publisher

FLAVOR = {"flavorid": "1", "name": "m1.tiny", "vcpus": 1, "memory_mb": 512, "root_gb": 1,
          "ephemeral_gb": 0, "swap_mb": 0, "is_public": True, "extra_specs": {}}
IMAGE = {"id": "img-1", "name": "cirros", "min_disk": 0, "min_ram": 0, "properties": {}}


def requested(uid: str, **kw: Any) -> Event:
    return Event("InstanceBuildRequested", uid, {
        "name": "vm", "project_id": "p", "user_id": "u", "reservation_id": "r-1",
        "launch_index": 0, "flavor": FLAVOR, "image": IMAGE,
        "networks": [{"network_id": "net-1", "fixed_ip": None}], "block_device_mapping": [],
        "key_name": None, "metadata": {}, "user_data": None, "availability_zone": None,
        "forced_host": None, "forced_node": None, "scheduler_hints": {}, "is_admin": False,
        **kw}, f"req-{uuid.uuid4()}", "api@test")


def up(name: str, **kw: Any) -> HostState:
    return HostState(**{"host": name, "node": name, "vcpus": 4, "memory_mb": 8192,
                        "local_gb": 100, "last_heartbeat": datetime.now(UTC), **kw})


def scheduler(*hosts: HostState) -> tuple[Scheduler, InMemorySink, FakeProjection]:
    view, sink, projection = HostView(), InMemorySink(), FakeProjection()
    view.hosts = Hosts({h.host: h for h in hosts})
    return (Scheduler(Settings(topic_prefix="t"), view, FakeReplica(),  # type: ignore[arg-type]
                      publisher(sink, "scheduler"), projection), sink, projection)


def test_a_request_is_scheduled_once_and_a_reschedule_excludes_tried_hosts() -> None:
    sched, sink, _ = scheduler(up("cmp1", memory_mb=16384), up("cmp2"))
    first = requested("i-1")
    feed(sched.handle, [first])
    [decision] = sink.events("InstanceScheduled")
    assert decision.payload["host"] == "cmp1"  # the RAM weigher spreads onto the larger host
    assert decision.causation_id == first.event_id
    assert decision.correlation_id == first.correlation_id
    assert sink.topics_of("InstanceScheduled") == ["t.instances"]
    again = Event("InstanceRescheduled", "i-1", {"attempt": 2, "excluded_hosts": ["cmp1"],
                                                 "reason": "claim refused"},
                  first.correlation_id, "conductor@test")
    feed(sched.handle, [again])  # the request is remembered: no projection needed
    assert [e.payload["host"] for e in sink.events("InstanceScheduled")] == ["cmp1", "cmp2"]
    assert sink.events("InstanceScheduled")[1].payload["attempt"] == 2


def test_no_valid_host_says_which_filter_removed_the_hosts() -> None:
    sched, sink, _ = scheduler(up("cmp1", memory_mb=256))
    feed(sched.handle, [requested("i-2")])
    [refusal] = sink.events("InstanceNoValidHost")
    assert {"filter": "RamFilter", "hosts_in": 1, "hosts_out": 0} in payload_of(
        refusal, payloads.InstanceNoValidHost)["filters"]
    assert not sink.events("InstanceScheduled")


def test_after_a_restart_the_request_comes_from_the_projection_or_is_retried() -> None:
    sched, sink, projection = scheduler(up("cmp1"))
    again = Event("InstanceRescheduled", "i-3", {"attempt": 2, "excluded_hosts": [],
                                                 "reason": "x"}, "req-3", "conductor@test")
    with pytest.raises(TransientError, match="not projected yet"):
        feed(sched.handle, [again])
    projection.requests["i-3"] = payload_of(requested("i-3"), payloads.InstanceBuildRequested)
    feed(sched.handle, [again])
    assert [e.payload["host"] for e in sink.events("InstanceScheduled")] == ["cmp1"]


def conductor(**kw: Any) -> tuple[Conductor, InMemorySink, FakeProjection, list[str]]:
    sink, projection = InMemorySink(), FakeProjection()
    topics_made: list[str] = []
    c = Conductor(Topics("t"), publisher(sink, "conductor"), projection,
                  ensure_topic=topics_made.append, **kw)
    return c, sink, projection, topics_made


def scheduled(req: Event, host: str, attempt: int = 1) -> Event:
    return Event("InstanceScheduled", req.aggregate_id, {
        "host": host, "node": host, "attempt": attempt, "weighed_hosts": [host]},
        req.correlation_id, "scheduler@test")


def test_a_scheduled_build_is_dispatched_to_the_hosts_topic_with_what_compute_needs() -> None:
    c, sink, projection, made = conductor()
    projection.images["img-1"] = {"id": "img-1", "name": "cirros", "disk_format": "qcow2",
                                  "checksum": "c", "size": 1, "location": "/i",
                                  "properties": {}}
    projection.networks["net-1"] = {"network_id": "net-1", "name": "private",
                                    "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
                                    "allocation_start": "10.0.0.2",
                                    "allocation_end": "10.0.0.254", "fixed_ip": None}
    req = requested("i-4")
    feed(c.handle, [req, scheduled(req, "cmp2")])
    [build] = sink.events("BuildAndRunInstance")
    assert sink.topics_of("BuildAndRunInstance") == ["t.compute.cmp2"] and made == [
        "t.compute.cmp2"]
    command = payload_of(build, payloads.BuildAndRunInstance)
    assert command["image"] is not None and command["image"]["location"] == "/i"
    assert command["networks"][0]["cidr"] == "10.0.0.0/24"
    assert [e.event_type for e in sink.events()] == ["InstanceBuildDispatched",
                                                     "BuildAndRunInstance"]


def test_a_catalog_entry_not_projected_yet_is_a_retry_not_a_failure() -> None:
    c, sink, _, _ = conductor()
    req = requested("i-5")
    with pytest.raises(TransientError, match="image img-1 is not in the catalog"):
        feed(c.handle, [req, scheduled(req, "cmp1")])
    assert sink.events() == []


def test_retryable_failures_reschedule_until_max_attempts_then_error() -> None:
    c, sink, _, _ = conductor(max_attempts=2)
    req = requested("i-6")
    c.requests.remember("i-6", payload_of(req, payloads.InstanceBuildRequested))
    c.tried["i-6"] = ["cmp1"]
    refused = Event("InstanceClaimRefused", "i-6", {"host": "cmp1", "node": "cmp1",
                                                    "attempt": 1, "reason": "full"},
                    req.correlation_id, "compute@cmp1")
    feed(c.handle, [refused])
    [resched] = sink.events("InstanceRescheduled")
    assert resched.payload == {"attempt": 2, "excluded_hosts": ["cmp1"],
                               "reason": "claim refused on cmp1: full"}
    last = Event("InstanceClaimRefused", "i-6", {"host": "cmp2", "node": "cmp2",
                                                 "attempt": 2, "reason": "full"},
                 req.correlation_id, "compute@cmp2")
    feed(c.handle, [last])
    [errored] = sink.events("InstanceErrored")
    assert errored.payload["message"] == max_retries_message("i-6")


def test_a_stuck_build_times_out_once_with_a_derived_event_id() -> None:
    c, sink, projection, _ = conductor(build_timeout_s=60, sweep_interval_s=0)
    projection.stuck = [("i-7", 1, "spawning", "req-7")]
    c.sweep()
    c.sweep()
    errors = sink.events("InstanceErrored")
    assert len(errors) == 2 and errors[0].event_id == errors[1].event_id  # de-duplicated
    assert "timed out after 60 seconds" in payload_of(errors[0], payloads.InstanceErrored)[
        "message"]
    assert errors[0].occurred_at > datetime.now(UTC) - timedelta(minutes=1)


def delete_requested(uid: str) -> Event:
    return Event("InstanceDeleteRequested", uid, payloads.InstanceDeleteRequested(
        project_id="p", user_id="u", host=None), "req-delete", "api@pytest")


def test_a_delete_goes_to_the_host_the_projection_knows_or_is_local() -> None:
    c, sink, projection, made = conductor()
    projection.servers["i-on-host"] = ServerState("active", "deleting", "cmp2", 1)
    projection.servers["i-no-host"] = ServerState("error", "deleting", None, 3)
    projection.servers["i-gone"] = ServerState("deleted", None, None, 1)
    feed(c.handle, [delete_requested("i-on-host"), delete_requested("i-no-host"),
                    delete_requested("i-gone")])
    [terminate] = sink.events("TerminateInstance")
    assert sink.topics_of("TerminateInstance") == ["t.compute.cmp2"] and made == [
        "t.compute.cmp2"]
    assert payload_of(terminate, payloads.TerminateInstance) == {
        "instance_uuid": "i-on-host", "host": "cmp2", "attempt": 1}
    [local] = sink.events("InstanceDeleted")
    assert local.aggregate_id == "i-no-host" and local.correlation_id == "req-delete"
    assert payload_of(local, payloads.InstanceDeleted)["local"] is True


def test_a_placement_after_a_delete_is_never_dispatched() -> None:
    c, sink, projection, _ = conductor()
    req = requested("i-raced")
    projection.deletes["i-raced"] = "req-the-delete"
    feed(c.handle, [req, scheduled(req, "cmp1")])
    assert sink.events("BuildAndRunInstance") == []
    [local] = sink.events("InstanceDeleted")
    assert local.correlation_id == "req-the-delete"  # the delete action's request id


def test_a_delete_waits_for_the_projection_to_fold_it() -> None:
    _c, sink, projection, _ = conductor()
    projection.folded_ids = set()
    with pytest.raises(TransientError, match="has not folded InstanceDeleteRequested"):
        projection.wait_folded(delete_requested("i-lagging"), timeout_s=0.05)
    assert sink.events() == []
