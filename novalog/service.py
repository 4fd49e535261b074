"""A role's service record, as Nova's servicegroup keeps one per (host, binary).

Every role announces itself once (`ServiceStarted`; a compute host sends its own
`ComputeServiceStarted`) and then beats (`ServiceHeartbeat`) every
`report_interval_s`, from its runner's own thread: a role whose runner, or a
replica its decisions need, has stopped stops beating, and turns down after
`service_down_time_s` in `GET /os-services` and `/healthz`, while the supervisor
restarts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from novalog.idempotency import stable_number
from novalog.kafka import EventProducer, Topics
from novalog.publish import Publisher
from novalog.settings import Settings

BINARIES = {
    "scheduler": "nova-scheduler",
    "conductor": "nova-conductor",
    "network": "nova-network",
    "projector": "novalog-projector",
    "compute": "nova-compute",
    "volume": "cinder-volume",
}
CONTROL_PLANE = ("nova-scheduler", "nova-conductor", "nova-network", "novalog-projector",
                 "cinder-volume")


class ServiceReporter:
    """Start once, then `beat()` after every poll; it emits only when a beat is due."""

    def __init__(self, settings: Settings, producer: EventProducer, role: str, *,
                 host: str | None = None, checks: tuple[Callable[[], None], ...] = ()) -> None:
        """`checks` run before each beat and raise when the role must not report itself up
        (a dead replica): the exception stops the role."""
        self.topics = Topics(settings.topic_prefix)
        self.host = host or settings.hostname
        self.binary = BINARIES[role]
        self.interval_s = settings.report_interval_s
        self.checks = checks
        self.pub = Publisher(producer, role, self.host)
        self.correlation_id = f"req-{self.host}-{self.binary}-start-{int(time.time())}"
        self._last = 0.0

    def start(self) -> None:
        self.pub.emit(self.topics.hosts, "ServiceStarted", self.host, {
            "host": self.host, "binary": self.binary, "zone": "internal",
            "version": "novalog"}, correlation_id=self.correlation_id)
        self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        for check in self.checks:
            check()
        now = time.monotonic()
        if force or now - self._last >= self.interval_s:
            self._last = now
            self.pub.emit(self.topics.hosts, "ServiceHeartbeat", self.host,
                          {"host": self.host, "binary": self.binary},
                          correlation_id=self.correlation_id)


def service_id(host: str, binary: str) -> int:
    """A service's id in `os-services`: stable for (host, binary), so the same in every
    replay of the log (Nova's are database sequence numbers; a replay could reorder those)."""
    return stable_number(host, binary)
