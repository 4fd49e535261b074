"""Backward compatibility: can a reader with the new schema read what the old one wrote?

A static check of Avro's resolution rules (new fields need defaults, types may
only widen), which names the field at fault; the codec tests also round-trip
generated data through both versions with fastavro's own resolution.
"""

from __future__ import annotations

from typing import Any

PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        if isinstance(kind, (dict, list)):
            return _kind(kind)
        return "named" if kind in ("record", "enum", "fixed") else str(kind)
    return str(schema)


def _name(schema: Any) -> str | None:
    if isinstance(schema, dict) and "name" in schema:
        return str(schema["name"]).rsplit(".", 1)[-1]
    if isinstance(schema, str) and schema not in PROMOTIONS and schema not in (
        "null", "boolean", "double"
    ):
        return schema.rsplit(".", 1)[-1]
    return None


def _readable(old: Any, new: Any, path: str, problems: list[str]) -> bool:
    """True when data written with `old` resolves against `new`; appends why not."""
    ok, nk = _kind(old), _kind(new)
    if ok == "union":
        for branch in old:
            _readable(branch, new, path, problems)
        return True
    if nk == "union":
        trial: list[str] = []
        if any(_readable(old, b, path, trial) for b in new):
            return True
        problems.append(f"{path}: old type {_describe(old)} is in none of the new union's branches")
        return False
    if ok in PROMOTIONS and nk in PROMOTIONS.get(ok, set()):
        return True
    if ok != nk:
        problems.append(f"{path}: type changed from {_describe(old)} to {_describe(new)}")
        return False
    if ok == "array":
        return _readable(old["items"], new["items"], f"{path}[]", problems)
    if ok == "map":
        return _readable(old["values"], new["values"], f"{path}{{}}", problems)
    if ok == "named" and isinstance(old, dict) and isinstance(new, dict):
        return _record_readable(old, new, path, problems)
    return True


def _record_readable(old: dict[str, Any], new: dict[str, Any], path: str,
                     problems: list[str]) -> bool:
    if _name(old) != _name(new):
        problems.append(f"{path}: record renamed from {_name(old)} to {_name(new)}")
        return False
    if old["type"] != "record":
        return True
    before = len(problems)
    old_fields = {f["name"]: f for f in old["fields"]}
    for field in new["fields"]:
        where = f"{path}.{field['name']}" if path else field["name"]
        if field["name"] in old_fields:
            _readable(old_fields[field["name"]]["type"], field["type"], where, problems)
        elif "default" not in field:
            problems.append(f"{where}: new field has no default")
    return len(problems) == before


def _describe(schema: Any) -> str:
    return _name(schema) or _kind(schema)


def backward_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every reason `new` cannot read data written with `old` (empty when compatible)."""
    problems: list[str] = []
    _record_readable(old, new, "", problems)
    return problems
