"""What `novalog up` wrote down about the stack it runs (`$NOVALOG_HOME/stack.json`),
so CLI verbs in a plain shell find its broker and database."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from novalog.settings import Settings


def state_path(settings: Settings) -> Path:
    return settings.home / "stack.json"


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def with_running_stack(settings: Settings) -> Settings:
    """Fill in the broker and database of the stack `novalog up` runs, when the
    environment does not name them (so CLI verbs work in a plain shell)."""
    state = read_state(settings) or {}
    bootstrap = settings.kafka_bootstrap_servers or state.get("kafka_bootstrap_servers")
    database = settings.database_url or state.get("database_url")
    if not bootstrap or not database:
        return settings
    found = settings.with_infrastructure(bootstrap, database)
    kind = state.get("broker")
    if settings.broker is None and kind in ("kafka", "tansu"):  # Tansu's watermarks are wrong
        found = replace(found, broker=kind)
    return found
