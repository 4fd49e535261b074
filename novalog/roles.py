"""The roles novalog runs, each as its own OS process (`novalog run ROLE`).

A role's entry point is named as "module:function" and imported only by the
process that runs it, so the API's web stack never loads in a consumer role.
Issue by issue this table grows (scheduler, conductor, compute, network,
projector); `novalog up` starts whatever is in it.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from novalog import faults
from novalog.request_ids import configure_logging
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
        Role("api", "novalog.http:serve",
             "nova-api + keystone: POST/GET servers, tokens (OpenAPI at /openapi.json)",
             listens=lambda s: f"{s.api_host}:{s.api_port}"),
        Role("projector", "projections.projector:serve",
             "folds the log into Postgres (servers, actions, nodes, services, catalog)"),
        Role("scheduler", "consumers.scheduler.role:serve",
             "nova-scheduler: filters and weighers over a host view from the log"),
        Role("conductor", "consumers.conductor.role:serve",
             "nova-conductor: dispatches builds, reschedules, times out stuck builds"),
        Role("network", "consumers.network.role:serve",
             "IP and MAC allocation per network"),
        Role("volume", "consumers.volume.role:serve",
             "cinder-volume: volumes as files ($NOVALOG_HOME/volumes), made and removed"),
        Role("compute", "consumers.compute.role:serve",
             "nova-compute for a host, or a fleet of simulated ones (NOVALOG_COMPUTE_HOST): "
             "claims, disks, libvirt"),
    ]
}
REPLICATED = ("scheduler", "conductor", "projector")  # one consumer group each


@dataclass(frozen=True)
class RoleInstance:
    """One process `novalog up` starts: a role, its display name, its own environment."""

    name: str
    role: str
    address: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    phase: int = 0  # 1 = started after the catalog is bootstrapped (the API)


def fleets(hosts: int, processes: int) -> list[list[str]]:
    """Simulated hosts cmp1..cmpN spread over `processes` agents in contiguous runs
    (0: one agent each, as real hosts have)."""
    names = [f"cmp{i}" for i in range(1, hosts + 1)]
    if processes <= 0 or hosts == 0:
        return [[n] for n in names]
    k = min(processes, hosts)
    size, extra = divmod(hosts, k)
    out, start = [], 0
    for f in range(k):
        end = start + size + (1 if f < extra else 0)
        out.append(names[start:end])
        start = end
    return out


def plan(settings: Settings, hosts: int = 4, replicas: int = 1, qemu_hosts: int = 0,
         qemu_uris: tuple[str, ...] = ("qemu:///system",)) -> list[RoleInstance]:
    """The processes of a stack: every role, `hosts` simulated compute hosts (cmp1..; one
    agent each, or NOVALOG_COMPUTE_FLEETS agents sharing them), `qemu_hosts` real ones
    (qemu1.., the i-th on the i-th URI, the last one repeated), `replicas` of the
    replicated roles."""
    out: list[RoleInstance] = []
    for role in ("projector", "network", "volume", "scheduler", "conductor"):
        count = replicas if role in REPLICATED else 1
        for i in range(1, count + 1):
            # replicas on one machine are distinct services, as on distinct hosts in Nova
            env = () if count == 1 else (("NOVALOG_HOST", f"{settings.hostname}-{i}"),)
            out.append(RoleInstance(role if count == 1 else f"{role}-{i}", role, env=env))
    groups = fleets(hosts, settings.compute_fleets)
    for i, members in enumerate(groups, 1):
        name = f"compute-{members[0]}" if len(members) == 1 else f"compute-fleet{i}"
        out.append(RoleInstance(name, "compute",
                                env=(("NOVALOG_COMPUTE_HOST", ",".join(members)),)))
    uris = qemu_uris or ("qemu:///system",)
    for i in range(1, qemu_hosts + 1):
        uri = uris[min(i, len(uris)) - 1]
        sharing = sum(1 for j in range(1, qemu_hosts + 1) if uris[min(j, len(uris)) - 1] == uri)
        out.append(RoleInstance(f"compute-qemu{i}", "compute", env=(
            ("NOVALOG_COMPUTE_HOST", f"qemu{i}"), ("NOVALOG_LIBVIRT_URI", uri),
            ("NOVALOG_COMPUTE_SHARES", str(sharing)))))
    out.append(RoleInstance("api", "api", ROLES["api"].listens(settings), phase=1))
    return out


def run_role(name: str, settings: Settings) -> None:
    """Run one role until SIGTERM / SIGINT asks it to stop."""
    if name not in ROLES:
        raise KeyError(f"unknown role {name!r}; roles: {', '.join(sorted(ROLES))}")
    configure_logging()
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("%s: signal %d, stopping", name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    os.environ["NOVALOG_ROLE"] = name  # crash points are armed per role
    faults._ROLE = name
    prepare_infrastructure(settings)
    ROLES[name].load()(settings, stop)


def prepare_infrastructure(settings: Settings) -> None:
    """Idempotent: core topics and the schema exist, whoever started this role (compose, CI)."""
    from novalog.kafka import Topics, ensure_topics
    from novalog.migrations import migrate

    ensure_topics(settings, Topics(settings.topic_prefix).core())
    migrate(settings)
