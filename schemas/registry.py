"""The fingerprint registry: every event's wire schema, current and historical.

Each `*.avsc` family file is a union (JSON array) of payload records; the wire
schema of an event is the envelope's fields plus a `payload` field holding that
record, with every named type it references inlined so each event schema
stands alone (its parsing canonical form, and so its fingerprint, depends on
nothing else).

`fingerprints.lock.json` pins every schema version that may exist on a topic:
the reader finds old writer schemas there, and a test fails when a schema
changes without its new version being locked (`python -m schemas lock`,
which refuses backward-incompatible changes).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
LOCK_FILE = SCHEMA_DIR / "fingerprints.lock.json"
ENVELOPE_FILE = SCHEMA_DIR / "envelope.avsc"
MAGIC = b"\xc3\x01"
EVENT_NAMESPACE = "novalog.events"

JsonSchema = Any  # an Avro schema as parsed JSON: str, list or dict


@dataclass(frozen=True)
class EventSchema:
    """One version of one event's wire schema."""

    event_type: str
    family: str
    schema: dict[str, Any]
    parsed: Any
    fingerprint_hex: str

    @property
    def fingerprint(self) -> int:
        """The spec's 64-bit CRC-64-AVRO value (little-endian on the wire)."""
        return int.from_bytes(self.header[2:], "little")

    @property
    def header(self) -> bytes:
        """Single-object encoding prefix: C3 01 + 8 fingerprint bytes."""
        return MAGIC + bytes.fromhex(self.fingerprint_hex)


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_named(schema: JsonSchema, namespace: str | None, out: dict[str, Any]) -> None:
    """Register every named type defined anywhere in `schema` under its full name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, namespace, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            full = _fullname(schema["name"], ns)
            if full in out:
                raise ValueError(f"named type {full} is defined twice")
            out[full] = schema
            for field in schema.get("fields", []):
                _collect_named(field["type"], ns, out)
        elif kind == "array":
            _collect_named(schema["items"], namespace, out)
        elif kind == "map":
            _collect_named(schema["values"], namespace, out)


def _inline(schema: JsonSchema, namespace: str | None, named: dict[str, Any],
            seen: set[str]) -> JsonSchema:
    """Copy `schema`, replacing the first reference to each named type by its definition."""
    if isinstance(schema, str):
        full = _fullname(schema, namespace)
        if full in named and full not in seen:
            return _inline(named[full], namespace, named, seen)
        return full if full in named else schema
    if isinstance(schema, list):
        return [_inline(b, namespace, named, seen) for b in schema]
    out = dict(schema)
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        ns = schema.get("namespace", namespace)
        full = _fullname(schema["name"], ns)
        if full in seen:
            return full
        seen.add(full)
        out.pop("namespace", None)
        out["name"] = full
        if kind == "record":
            out["fields"] = [
                {**f, "type": _inline(f["type"], ns, named, seen)} for f in schema["fields"]
            ]
    elif kind == "array":
        out["items"] = _inline(schema["items"], namespace, named, seen)
    elif kind == "map":
        out["values"] = _inline(schema["values"], namespace, named, seen)
    return out


def _family_files(directory: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for path in sorted(directory.glob("*.avsc")):
        if path.name == ENVELOPE_FILE.name:
            continue
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise ValueError(f"{path.name}: a family file is a JSON array of event records")
        yield path.stem, records


def make_event_schema(event_type: str, family: str, schema: dict[str, Any]) -> EventSchema:
    """Parse and fingerprint one composed wire schema."""
    canonical = to_parsing_canonical_form(schema)
    return EventSchema(
        event_type=event_type,
        family=family,
        schema=schema,
        # parsed once, marked parsed: fastavro re-parses an unmarked schema on every read
        # and write (three times the cost of the read or write itself)
        parsed=parse_schema(copy.deepcopy(schema)),
        fingerprint_hex=fingerprint(canonical, "CRC-64-AVRO"),
    )


def compose_current(directory: Path = SCHEMA_DIR) -> dict[str, EventSchema]:
    """Build the current wire schema of every event type from the .avsc files."""
    envelope = json.loads((directory / ENVELOPE_FILE.name).read_text())
    families = list(_family_files(directory))
    named: dict[str, Any] = {}
    for _, records in families:
        _collect_named(records, None, named)
    result: dict[str, EventSchema] = {}
    for family, records in families:
        for record in records:
            event_type = record["name"]
            if event_type in result:
                raise ValueError(f"event type {event_type} is defined twice")
            payload = _inline(record, record.get("namespace"), named, set())
            wire = {
                "type": "record",
                "name": f"{EVENT_NAMESPACE}.{event_type}",
                "doc": record.get("doc", ""),
                "fields": [*envelope["fields"], {"name": "payload", "type": payload}],
            }
            result[event_type] = make_event_schema(event_type, family, wire)
    return result


def read_lock(path: Path = LOCK_FILE) -> dict[str, list[dict[str, Any]]]:
    """{event_type: [{fingerprint, family, schema}, ... oldest first]}."""
    if not path.exists():
        return {}
    data: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    return data


@dataclass(frozen=True)
class Registry:
    """Current reader schemas by event type, every known writer schema by fingerprint."""

    current: dict[str, EventSchema]
    writers: dict[bytes, EventSchema]

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR, lock: Path = LOCK_FILE) -> Registry:
        current = compose_current(directory)
        writers = {s.header: s for s in current.values()}
        for event_type, versions in read_lock(lock).items():
            for version in versions:
                old = make_event_schema(event_type, version["family"], version["schema"])
                writers.setdefault(old.header, old)
        return cls(current=current, writers=writers)


@cache
def default_registry() -> Registry:
    """The registry of the schemas shipped in this package, loaded once per process."""
    return Registry.load()


def lock_current(directory: Path = SCHEMA_DIR, lock: Path = LOCK_FILE) -> list[str]:
    """Append every changed schema to the lock; refuse incompatible changes."""
    from schemas.compat import backward_problems

    current = compose_current(directory)
    pinned = read_lock(lock)
    changed: list[str] = []
    problems: list[str] = []
    for event_type, schema in sorted(current.items()):
        versions = pinned.setdefault(event_type, [])
        if versions and versions[-1]["fingerprint"] == schema.fingerprint_hex:
            continue
        for old in versions:
            problems += [f"{event_type}: {p}" for p in backward_problems(old["schema"],
                                                                           schema.schema)]
        versions.append({"fingerprint": schema.fingerprint_hex, "family": schema.family,
                         "schema": schema.schema})
        changed.append(event_type)
    if problems:
        raise ValueError("backward-incompatible schema change:\n  " + "\n  ".join(problems))
    lock.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    return changed
