"""The roles novalog runs, each as its own OS process (`novalog run ROLE`).

A role's entry point is named as "module:function" and imported only by the
process that runs it, so the API's web stack never loads in a consumer role.
Issue by issue this table grows (scheduler, conductor, compute, network,
projector); `novalog up` starts whatever is in it.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from novalog.settings import Settings

RoleMain = Callable[[Settings, threading.Event], None]


@dataclass(frozen=True)
class Role:
    name: str
    entry_point: str  # "module:function" taking (settings, stop)
    description: str
    listens: Callable[[Settings], str | None] = lambda _s: None

    def load(self) -> RoleMain:
        module, _, func = self.entry_point.partition(":")
        main: RoleMain = getattr(importlib.import_module(module), func)
        return main


ROLES: dict[str, Role] = {
    role.name: role
    for role in [
        Role(
            name="api",
            entry_point="novalog.http:serve",
            description="nova-api: HTTP endpoints (OpenAPI at /openapi.json), health at /healthz",
            listens=lambda s: f"{s.api_host}:{s.api_port}",
        ),
    ]
}


def configure_logging(role: str, level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s",
    )


def run_role(name: str, settings: Settings) -> None:
    """Run one role until SIGTERM / SIGINT asks it to stop."""
    if name not in ROLES:
        raise KeyError(f"unknown role {name!r}; roles: {', '.join(sorted(ROLES))}")
    configure_logging(name)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("%s: signal %d, stopping", name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    prepare_infrastructure(settings)
    ROLES[name].load()(settings, stop)


def prepare_infrastructure(settings: Settings) -> None:
    """Idempotent: core topics and the schema exist, whoever started this role (compose, CI)."""
    from novalog.db import ensure_schema
    from novalog.kafka import Topics, ensure_topics

    ensure_topics(settings, Topics(settings.topic_prefix).core())
    ensure_schema(settings)
