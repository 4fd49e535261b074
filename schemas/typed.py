"""Typed payloads: one TypedDict per Avro record of the event families, generated from
the `.avsc` files into `schemas/payloads.py` (`python -m schemas typed`).

Handlers read a payload through `payload_of(event, payloads.X)`, so a field renamed
in a schema and not in the code fails in mypy; a unit test fails when payloads.py is
older than the schemas.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, TypeVar, cast

from schemas.codec import Event

SCHEMA_DIR = Path(__file__).resolve().parent
PAYLOADS_FILE = SCHEMA_DIR / "payloads.py"
PRIMITIVES = {"string": "str", "int": "int", "long": "int", "boolean": "bool",
              "float": "float", "double": "float", "bytes": "bytes", "null": "None"}
T = TypeVar("T")


def payload_of(event: Event, kind: type[T]) -> T:
    """The event's payload as the TypedDict of its type (checked by name)."""
    if event.event_type != kind.__name__:
        raise TypeError(f"a {event.event_type} is not a {kind.__name__}")
    return cast(T, event.payload)


class _Generator:
    def __init__(self) -> None:
        self.classes: dict[str, str] = {}  # class name -> source
        self.order: list[str] = []

    def type_of(self, schema: Any) -> str:
        if isinstance(schema, str):
            return PRIMITIVES.get(schema, schema.rsplit(".", 1)[-1])
        if isinstance(schema, list):
            names = [self.type_of(s) for s in schema]
            return " | ".join(sorted(names, key=lambda n: n == "None"))  # None last
        kind = schema["type"]
        if schema.get("logicalType") == "timestamp-millis":
            return "datetime"
        if kind == "record":
            return self.record(schema)
        if kind == "enum":
            return "str"
        if kind == "map":
            return f"dict[str, {self.type_of(schema['values'])}]"
        if kind == "array":
            return f"list[{self.type_of(schema['items'])}]"
        return self.type_of(kind)

    def record(self, schema: dict[str, Any]) -> str:
        name: str = schema["name"]
        lines = [f"# {line}" for line in textwrap.wrap(schema.get("doc", ""), 90)]
        lines.append(f"class {name}(TypedDict):")
        for field in schema["fields"]:
            lines.append(f"    {field['name']}: {self.type_of(field['type'])}")
        if not schema["fields"]:
            lines.append("    pass")
        source = "\n".join(lines)
        if self.classes.get(name, source) != source:
            raise ValueError(f"two different records are named {name}: rename one")
        if name not in self.classes:
            self.classes[name] = source
            self.order.append(name)
        return name


def generate(directory: Path = SCHEMA_DIR) -> str:
    """The text of payloads.py for the family files in `directory`."""
    gen = _Generator()
    for path in sorted(directory.glob("*.avsc")):
        if path.name == "envelope.avsc":
            continue
        records = json.loads(path.read_text())
        for record in records if isinstance(records, list) else [records]:
            gen.record(record)
    body = "\n\n\n".join(gen.classes[n] for n in gen.order)
    return ('"""Generated from schemas/*.avsc by `python -m schemas typed`: do not edit."""\n\n'
            "from __future__ import annotations\n\nfrom datetime import datetime\n"
            "from typing import TypedDict\n\n\n" + body + "\n")


def write() -> bool:
    """Regenerate payloads.py; True when it changed."""
    text = generate()
    if PAYLOADS_FILE.exists() and PAYLOADS_FILE.read_text() == text:
        return False
    PAYLOADS_FILE.write_text(text)
    return True
