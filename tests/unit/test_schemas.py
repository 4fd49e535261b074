"""The event contract: round trips, clear errors, pinned fingerprints, compatibility."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Event, SerializationError, decode, encode
from schemas.codec import event_type_of
from schemas.compat import backward_problems
from schemas.registry import (
    LOCK_FILE,
    SCHEMA_DIR,
    Registry,
    compose_current,
    default_registry,
    lock_current,
    read_lock,
)

REGISTRY = default_registry()
EVENT_TYPES = sorted(REGISTRY.current)

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
MILLIS = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def strategy(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for an (inlined) Avro schema."""
    if isinstance(schema, list):
        return st.one_of([strategy(b, named) for b in schema])
    if isinstance(schema, str):
        simple = {
            "null": st.none(), "boolean": st.booleans(), "int": INT32, "long": INT64,
            "double": st.floats(allow_nan=False), "string": st.text(max_size=20),
            "bytes": st.binary(max_size=20),
        }
        return simple[schema] if schema in simple else strategy(named[schema], named)
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return MILLIS
    if kind == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries(
            {f["name"]: strategy(f["type"], named) for f in schema["fields"]})
    if kind == "array":
        return st.lists(strategy(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), strategy(schema["values"], named),
                               max_size=3)
    return strategy(kind, named)


def event_strategy(event_type: str) -> st.SearchStrategy[Event]:
    schema = REGISTRY.current[event_type].schema
    payload_schema = next(f["type"] for f in schema["fields"] if f["name"] == "payload")
    return st.builds(
        Event,
        event_type=st.just(event_type),
        aggregate_id=st.uuids().map(str),
        payload=strategy(payload_schema, {}),
        correlation_id=st.uuids().map(lambda u: f"req-{u}"),
        producer=st.just("test@host"),
        causation_id=st.none() | st.uuids().map(str),
        event_id=st.uuids().map(str),
        occurred_at=MILLIS,
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_type_round_trips(event_type: str, data: st.DataObject) -> None:
    event = data.draw(event_strategy(event_type))
    assert decode(encode(event)) == event


def test_the_boot_path_and_host_catalog_network_facts_all_have_schemas() -> None:
    expected = {
        "InstanceBuildRequested", "InstanceScheduled", "InstanceNoValidHost",
        "InstanceBuildDispatched", "InstanceClaimAccepted", "InstanceClaimRefused",
        "InstanceNetworkingStarted", "InstanceNetworkAllocated",
        "InstanceBlockDeviceMappingStarted", "InstanceBlockDevicesMapped",
        "InstanceSpawningStarted", "InstanceSpawned", "InstanceBuildFailed",
        "InstanceRescheduled", "InstanceErrored", "BuildAndRunInstance",
        "ComputeServiceStarted", "ComputeResourcesReported", "ServiceHeartbeat",
        "ServiceDisabled", "ServiceEnabled", "HostRemoved",
        "FlavorCreated", "ImageRegistered", "NetworkCreated", "ProjectCreated",
        "UserCreated", "RoleAssigned", "QuotaSet", "IpAllocated", "IpReleased",
    }
    assert expected <= set(EVENT_TYPES)


def test_wire_format_is_single_object_encoding() -> None:
    event = Event("HostRemoved", "cmp1", {"host": "cmp1"}, "req-1", "test@h")
    data = encode(event)
    schema = REGISTRY.current["HostRemoved"]
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint.to_bytes(8, "little")
    body = schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)
    assert isinstance(body, dict)
    assert body["payload"] == {"host": "cmp1"}


def test_fingerprint_is_the_avro_spec_crc64() -> None:
    # the Avro spec's test vector: the "null" schema fingerprints to 7195948357588979594
    from fastavro.schema import fingerprint

    from schemas.registry import make_event_schema

    null_fp = bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO"))
    assert int.from_bytes(null_fp, "little") == 7195948357588979594
    s = make_event_schema("X", "f", {"type": "record", "name": "X", "fields": []})
    assert s.header == b"\xc3\x01" + bytes.fromhex(s.fingerprint_hex)


GOOD = encode(Event("ServiceHeartbeat", "cmp1", {"host": "cmp1", "binary": "nova-compute"},
                    "req-1", "test@h"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (GOOD[:9], "truncated"),
        (b"\x00\x01" + GOOD[2:], "not Avro single-object encoding"),
        (GOOD[:2] + b"\xde\xad\xbe\xef\x00\x00\x00\x00" + GOOD[10:], "unknown schema fingerprint"),
        (GOOD[:-3], "corrupt ServiceHeartbeat body"),
        (GOOD + b"\x00\x00", "trailing bytes"),
        (GOOD[:10] + b"\xff" * 20, "corrupt ServiceHeartbeat body"),
        ("not bytes", "expected bytes"),
    ],
)
def test_corrupt_bytes_raise_one_clear_error(data: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_exception(data: bytes) -> None:
    with contextlib.suppress(SerializationError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=10, max_value=len(GOOD) - 1), st.integers(0, 255))
def test_flipped_body_bytes_decode_or_fail_clearly(pos: int, value: int) -> None:
    mutated = bytearray(GOOD)
    mutated[pos] = value
    with contextlib.suppress(SerializationError):
        decode(bytes(mutated))


def test_encoding_a_payload_that_does_not_fit_names_the_field() -> None:
    bad = Event("InstanceScheduled", "u", {"host": "h", "node": "n", "attempt": "one"},
                "req-1", "t@h")
    with pytest.raises(SerializationError, match="attempt"):
        encode(bad)
    with pytest.raises(SerializationError, match="unknown event type"):
        encode(Event("NoSuchThing", "u", {}, "req-1", "t@h"))


def test_every_current_schema_is_pinned_in_the_lock() -> None:
    """Fails when a .avsc changes without `python -m schemas lock`."""
    pinned = read_lock()
    for event_type, schema in compose_current().items():
        versions = pinned.get(event_type)
        assert versions, f"{event_type} is not in {LOCK_FILE.name}: run python -m schemas lock"
        assert versions[-1]["fingerprint"] == schema.fingerprint_hex, (
            f"{event_type} changed: run python -m schemas lock")


def test_every_locked_version_is_readable_by_the_current_schema() -> None:
    for event_type, versions in read_lock().items():
        new = REGISTRY.current[event_type]
        for old in versions:
            assert backward_problems(old["schema"], new.schema) == [], event_type
            writer = parse_schema(copy.deepcopy(old["schema"]))
            for record in generate_many(writer, 5):
                buf = io.BytesIO()
                schemaless_writer(buf, writer, record)
                buf.seek(0)
                schemaless_reader(buf, writer, new.parsed)


def _evolve(tmp_path: Path, field: dict[str, Any]) -> Path:
    """A copy of schemas/ with one field appended to ServiceHeartbeat, plus the lock."""
    work = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, work, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    host = json.loads((work / "host.avsc").read_text())
    next(r for r in host if r["name"] == "ServiceHeartbeat")["fields"].append(field)
    (work / "host.avsc").write_text(json.dumps(host))
    return work


def test_a_new_field_with_a_default_is_locked_and_old_events_stay_readable(
        tmp_path: Path) -> None:
    work = _evolve(tmp_path, {"name": "zone", "type": "string", "default": "nova"})
    versions = len(read_lock(work / LOCK_FILE.name)["ServiceHeartbeat"])
    assert lock_current(work, work / LOCK_FILE.name) == ["ServiceHeartbeat"]
    evolved = Registry.load(work, work / LOCK_FILE.name)
    old_bytes = GOOD  # written by today's schema
    event = decode(old_bytes, evolved)
    assert event.payload == {"host": "cmp1", "binary": "nova-compute", "zone": "nova"}
    assert len(read_lock(work / LOCK_FILE.name)["ServiceHeartbeat"]) == versions + 1


def test_a_new_field_without_default_is_refused_by_the_lock(tmp_path: Path) -> None:
    work = _evolve(tmp_path, {"name": "zone", "type": "string"})
    before = (work / LOCK_FILE.name).read_text()
    problem = r"ServiceHeartbeat: payload.zone: new field has no default"
    with pytest.raises(ValueError, match=problem):
        lock_current(work, work / LOCK_FILE.name)
    assert (work / LOCK_FILE.name).read_text() == before


def test_compat_check_catches_narrowed_and_changed_types() -> None:
    old = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"]},
        {"name": "c", "type": "int"}]}
    new = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "int"}, {"name": "b", "type": "string"},
        {"name": "c", "type": "double"}]}
    problems = backward_problems(old, new)
    assert any(p.startswith("a: type changed from long to int") for p in problems)
    assert any(p.startswith("b:") for p in problems)
    assert not any(p.startswith("c:") for p in problems)  # int widens to double


def test_occurred_at_keeps_what_the_wire_carries_and_must_be_aware() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    event = Event("HostRemoved", "h", {"host": "h"}, "req-1", "t@h", occurred_at=at)
    assert event.occurred_at == at.replace(microsecond=678000)
    assert decode(encode(event)) == event
    with pytest.raises(SerializationError, match="timezone-aware"):
        Event("HostRemoved", "h", {"host": "h"}, "req-1", "t@h",
              occurred_at=datetime(2026, 1, 2))


def test_the_event_type_is_read_from_the_header_alone() -> None:
    data = encode(Event("HostRemoved", "cmp1", {"host": "cmp1"}, "req-1", "test@h"))
    assert event_type_of(data) == "HostRemoved"
    assert event_type_of(data[:10] + b"\xff" * 3) == "HostRemoved"  # body never read
    assert event_type_of(b"\xc3\x01" + b"\x00" * 8) is None  # unknown fingerprint
    assert event_type_of(b"not avro") is None and event_type_of(None) is None


def test_typed_payloads_are_generated_from_the_current_schemas() -> None:
    """`python -m schemas typed` after every .avsc change: payloads.py must match."""
    from schemas import payloads
    from schemas.registry import compose_current
    from schemas.typed import PAYLOADS_FILE, generate

    assert PAYLOADS_FILE.read_text() == generate(), "run `python -m schemas typed`"
    for name, s in compose_current().items():
        typed = getattr(payloads, name)
        record = next(f["type"] for f in s.schema["fields"] if f["name"] == "payload")
        assert list(typed.__annotations__) == [f["name"] for f in record["fields"]], name


def test_payload_of_checks_the_event_type() -> None:
    from schemas import payloads
    from schemas.typed import payload_of

    event = Event("InstanceRescheduled", "i-1", {"attempt": 2, "excluded_hosts": [],
                                                "reason": "r"}, "req-1", "t@x")
    assert payload_of(event, payloads.InstanceRescheduled)["attempt"] == 2
    with pytest.raises(TypeError, match="a InstanceRescheduled is not a InstanceScheduled"):
        payload_of(event, payloads.InstanceScheduled)
