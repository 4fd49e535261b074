"""`novalog dead-letters`: what the consumers could not process, and why.

Dead letters keep the original record verbatim (key, value, headers); the
`novalog.dlq.*` headers say where it came from, which consumer gave up, why,
and when (novalog/consume.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from novalog.consume import DLQ_HEADER
from novalog.kafka import Topics, scan_topic
from novalog.running import with_running_stack
from novalog.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    failed_at: str
    topic: str
    partition: int
    offset: int
    consumer: str
    error: str
    key: str | None
    value_head: str  # first bytes, hex


def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    out = []
    for msg in scan_topic(settings, Topics(settings.topic_prefix).dead_letters):
        raw = msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        h = {k.removeprefix(DLQ_HEADER): (v.decode(errors="replace") if isinstance(v, bytes)
                                          else str(v)) for k, v in pairs
             if k.startswith(DLQ_HEADER)}
        key = msg.key()
        out.append(DeadLetter(h.get("failed_at", ""), h.get("topic", "?"),
                              int(h.get("partition", -1)), int(h.get("offset", -1)),
                              h.get("consumer", "?"), h.get("error", ""),
                              key.decode(errors="replace") if key else None,
                              (msg.value() or b"")[:16].hex()))
    return sorted(out, key=lambda d: d.failed_at)


def dead_letters_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Records the consumers could not process: source, consumer, reason."""
    import json


    letters = read_dead_letters(with_running_stack(Settings.from_env()))
    console = Console()
    if as_json:
        console.print_json(json.dumps([asdict(d) for d in letters]))
        return
    table = Table(title=f"{len(letters)} dead letters")
    for col in ("failed at", "source", "consumer", "reason", "key"):
        table.add_column(col)
    for d in letters:
        table.add_row(d.failed_at[11:23], f"{d.topic}[{d.partition}]@{d.offset}", d.consumer,
                      d.error, d.key or "")
    console.print(table)
