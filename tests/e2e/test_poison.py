"""Poison on every topic: dead-lettered with a reason (or ignored by rule), roles go on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from novalog.kafka import EventProducer
from projections.versions import PROJECTION_VERSION
from schemas import Event, encode
from tests.conftest import Infra
from tests.e2e.conftest import Cloud, running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GARBAGE = b"this is not an Avro event at all"


@pytest.fixture(scope="module")
def cloud(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(infra, tmp_path_factory.mktemp("poison") / "home", hosts=2) as c:
        assert c.cli("boot", "healthy", "--flavor", "m1.tiny", "--image", "cirros",
                     "--wait").returncode == 0
        yield c


def ev(kind: str, key: str, **payload: object) -> Event:
    return Event(kind, key, dict(payload), f"req-{uuid.uuid4()}", "intruder@x")


def flavor(flavorid: str, **fields: object) -> Event:
    return ev("FlavorCreated", flavorid, **{
        "flavorid": flavorid, "name": f"poison-{flavorid}", "vcpus": 1, "memory_mb": 64,
        "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0, "is_public": True, "extra_specs": {},
        **fields})


def test_poison_on_every_topic_is_dead_lettered_or_ignored_and_the_cloud_goes_on(
        cloud: Cloud) -> None:
    prefix = cloud.settings.topic_prefix
    healthy = cloud.client().find("server", "healthy")
    unknown_fp = b"\xc3\x01" + b"\x13" * 8 + b"\x00" * 20
    ghost = str(uuid.uuid4())
    poison = {
        "instances": [GARBAGE, unknown_fp,
                      encode(ev("InstanceSpawned", ghost, host="cmp1", node="cmp1", attempt=1,
                                domain_name="x", power_state=1,
                                launched_at=Event("X", "x", {}, "r", "p").occurred_at)),
                      encode(ev("InstanceScheduled", healthy["id"], host="cmp2", node="cmp2",
                                attempt=1, weighed_hosts=[]))],  # out of order: it is ACTIVE
        "hosts": [GARBAGE, unknown_fp,
                  encode(ev("ServiceHeartbeat", "nowhere", host="nowhere",
                            binary="nova-compute"))],
        "catalog": [GARBAGE, unknown_fp,  # then facts Postgres cannot store, then a good one
                    encode(flavor("nul", name="bad\x00name")),
                    encode(flavor("huge", swap_mb=2**40)),
                    encode(flavor("fine"))],
        "network": [GARBAGE, unknown_fp,
                    encode(ev("ReleasePorts", "nonet", instance_uuid=ghost,
                              network_id="nonet", reason="x", attempt=0))],
        "compute.cmp1": [GARBAGE, unknown_fp,
                         encode(ev("BuildAndRunInstance", ghost, instance_uuid=ghost,
                                   host="cmp2", node="cmp2", attempt=1, name="x",
                                   project_id="p", flavor={"flavorid": "1", "name": "t",
                                                           "vcpus": 1, "memory_mb": 1,
                                                           "root_gb": 1}, image=None)),
                         encode(ev("PortsAllocated", ghost, instance_uuid=ghost, host="cmp1",
                                   attempt=1, ports=[]))],
    }
    producer = EventProducer(cloud.settings)
    for topic, values in poison.items():
        for value in values:
            producer.produce(f"{prefix}.{topic}", b"poison", value)
    producer.flush()
    projector = f"projector-v{PROJECTION_VERSION}"  # the projector's group names its version
    expected = {  # (topic, what) -> consumers that must dead-letter it
        ("instances", GARBAGE): {projector, "scheduler", "conductor"},
        ("instances", unknown_fp): {projector, "scheduler", "conductor"},
        ("hosts", GARBAGE): {projector}, ("hosts", unknown_fp): {projector},
        ("catalog", GARBAGE): {projector}, ("catalog", unknown_fp): {projector},
        ("network", GARBAGE): {"network"}, ("network", unknown_fp): {"network"},
        ("compute.cmp1", GARBAGE): {"compute-cmp1"},
        ("compute.cmp1", unknown_fp): {"compute-cmp1"},
    }
    deadline = time.monotonic() + 60
    while True:
        letters = json.loads(cloud.cli("dead-letters", "--json").stdout)
        got: dict[str, set[str]] = {}
        for d in letters:
            got.setdefault(d["topic"].removeprefix(prefix + "."), set()).add(
                d["consumer"].removeprefix(prefix + "."))
        done = all(consumers <= got.get(topic, set())
                   for (topic, _), consumers in expected.items())
        reasons = " | ".join(d["error"] for d in letters)
        if done and reasons.count("cannot be stored") >= 2 \
                and "refused by the fold: InstanceSpawned for unknown instance" in reasons \
                and "refused by the fold: InstanceScheduled for instance" in reasons \
                and "BuildAndRunInstance for host cmp2 reached cmp1" in reasons:
            break
        assert time.monotonic() < deadline, (got, reasons)
        time.sleep(0.5)
    assert "undecodable: not Avro single-object encoding" in reasons
    assert "undecodable: unknown schema fingerprint" in reasons
    assert "NUL" in reasons and "out of range" in reasons  # one record each, not the batch
    flavors = {f["name"] for f in cloud.client().get("/compute/v2.1/flavors")["flavors"]}
    assert "poison-fine" in flavors and not {"poison-huge", "bad"} & flavors
    # nothing else changed, and every role is still working
    services = cloud.client().get("/compute/v2.1/os-services")["services"]
    assert sorted(s["host"] for s in services
                  if s["binary"] == "nova-compute") == ["cmp1", "cmp2"]  # the unknown: ignored
    assert cloud.client().find("server", "healthy")["status"] == "ACTIVE"
    assert cloud.cli("boot", "after-poison", "--flavor", "m1.tiny", "--image", "cirros",
                     "--wait").returncode == 0
    human = cloud.cli("dead-letters")
    assert human.returncode == 0 and "dead letters" in human.stdout
