"""Avro single-object encoding of novalog events.

Wire format (Avro spec, "Single object encoding"): `C3 01`, the writer schema's
8-byte little-endian CRC-64-AVRO fingerprint, then the Avro binary body. The
reader looks the fingerprint up among every locked schema version and resolves
it against the current schema of the same event type, so events written by an
older release stay readable.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas.registry import MAGIC, Registry, default_registry

HEADER_LEN = len(MAGIC) + 8


class SerializationError(ValueError):
    """Bytes that are not a novalog event, or an event that does not fit its schema."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class EventRecord(TypedDict):
    """The Avro record of an event (envelope.avsc): envelope fields and the payload."""

    event_id: str
    event_type: str
    occurred_at: datetime
    aggregate_id: str
    causation_id: str | None
    correlation_id: str
    producer: str
    global_request_id: str | None
    payload: Mapping[str, object]


@dataclass(frozen=True)
class Event:
    """One fact or command: the envelope of DESIGN.md §3 plus a typed payload.

    `payload` holds the fields of the event type's record; read it as that record's
    TypedDict with `schemas.typed.payload_of(event, payloads.X)`.
    """

    event_type: str
    aggregate_id: str
    payload: Mapping[str, object]
    correlation_id: str
    producer: str
    causation_id: str | None = None
    event_id: str = field(default_factory=_new_id)
    occurred_at: datetime = field(default_factory=_now)
    global_request_id: str | None = None

    def __post_init__(self) -> None:
        """occurred_at travels as timestamp-millis: keep exactly what the wire can carry."""
        if self.occurred_at.tzinfo is None:
            raise SerializationError("occurred_at must be timezone-aware (UTC)")
        ms = self.occurred_at.microsecond // 1000 * 1000
        if ms != self.occurred_at.microsecond:
            object.__setattr__(self, "occurred_at", self.occurred_at.replace(microsecond=ms))

    def to_record(self) -> EventRecord:
        """The Avro record: envelope fields and `payload`."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at,
            "aggregate_id": self.aggregate_id,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "producer": self.producer,
            "global_request_id": self.global_request_id,
            "payload": self.payload,
        }


def encode(event: Event, registry: Registry | None = None) -> bytes:
    """Serialize with the current schema of the event's type."""
    reg = registry or default_registry()
    schema = reg.current.get(event.event_type)
    if schema is None:
        raise SerializationError(f"unknown event type {event.event_type!r}")
    record = event.to_record()
    buf = io.BytesIO()
    buf.write(schema.header)
    try:
        schemaless_writer(buf, schema.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise SerializationError(_explain_invalid(event.event_type, schema.parsed, record,
                                                  exc)) from exc
    return buf.getvalue()


def _explain_invalid(event_type: str, parsed: Any, record: EventRecord,
                     exc: Exception) -> str:
    """fastavro's writer errors are terse; its validator names the offending field."""
    try:
        validate(record, parsed, raise_errors=True)
    except ValidationError as verr:
        return f"{event_type} does not match its schema: {verr}"
    except Exception:  # the validator can trip on the same value; say what the writer said
        pass
    return f"{event_type} does not match its schema: {type(exc).__name__}: {exc}"


def event_type_of(data: bytes | None, registry: Registry | None = None) -> str | None:
    """The event type named by the header's fingerprint, without decoding the body (a
    consumer skips what it does not act on this way); None when it is not an event."""
    if not data or len(data) < HEADER_LEN:
        return None
    writer = (registry or default_registry()).writers.get(bytes(data[:HEADER_LEN]))
    return writer.event_type if writer is not None else None


def decode(data: bytes, registry: Registry | None = None) -> Event:
    """Parse single-object-encoded bytes; SerializationError says what is wrong."""
    reg = registry or default_registry()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise SerializationError(f"truncated: {len(data)} bytes, the header alone is "
                                 f"{HEADER_LEN}")
    if data[:2] != MAGIC:
        raise SerializationError(f"not Avro single-object encoding: starts with "
                                 f"{data[:2].hex()} instead of c301")
    writer = reg.writers.get(data[:HEADER_LEN])
    if writer is None:
        raise SerializationError(f"unknown schema fingerprint {data[2:HEADER_LEN].hex()}")
    reader = reg.current.get(writer.event_type, writer)
    body = io.BytesIO(data[HEADER_LEN:])
    try:
        record = schemaless_reader(body, writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises many types on corrupt bodies
        raise SerializationError(f"corrupt {writer.event_type} body: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if body.tell() != len(data) - HEADER_LEN:
        raise SerializationError(f"corrupt {writer.event_type} body: "
                                 f"{len(data) - HEADER_LEN - body.tell()} trailing bytes")
    if not isinstance(record, dict) or record.get("event_type") != writer.event_type:
        raise SerializationError(f"corrupt {writer.event_type} body: envelope names "
                                 f"{record.get('event_type') if isinstance(record, dict) else '?'}")
    return Event(
        event_type=record["event_type"],
        aggregate_id=record["aggregate_id"],
        payload=record["payload"],
        correlation_id=record["correlation_id"],
        producer=record["producer"],
        causation_id=record["causation_id"],
        event_id=record["event_id"],
        occurred_at=record["occurred_at"],
        global_request_id=record.get("global_request_id"),
    )
