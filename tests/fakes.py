"""In-memory stand-ins for the log and the projection, for fast unit tests of handlers.

The real Publisher is used on top of `InMemorySink`, so event ids, causation and
correlation are the ones production derives. The real-broker and real-Postgres
tests stay; these only make a handler's decisions cheap to check.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from novalog.consume import Record
from novalog.domain.instance import Instance
from novalog.publish import Publisher
from novalog.read_model import LiveProjection, ServerState, VolumeRecord
from schemas import Event, encode, payloads


class InMemorySink:
    """The EventProducer's publishing side, keeping what was published by topic."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []

    def publish(self, topic: str, event: Event, headers: Any = None) -> None:
        encode(event)  # what could not go on the wire fails here too
        self.published.append((topic, event))

    def events(self, event_type: str | None = None) -> list[Event]:
        return [e for _, e in self.published if event_type in (None, e.event_type)]

    def topics_of(self, event_type: str) -> list[str]:
        return [t for t, e in self.published if e.event_type == event_type]


def publisher(sink: InMemorySink, role: str = "test") -> Publisher:
    return Publisher(sink, role, "pytest")  # type: ignore[arg-type]


def record_of(event: Event, topic: str = "t", offset: int = 0) -> Record:
    """An event as the consume loop hands it to a handler."""
    return Record(topic=topic, partition=0, offset=offset, key=event.aggregate_id.encode(),
                  value=encode(event), headers=[])


def feed(handler: Any, events: list[Event]) -> None:
    """The event source: each event handed to `handler(event, record)` in order."""
    for offset, event in enumerate(events):
        handler(event, record_of(event, offset=offset))


class FakeProjection(LiveProjection):
    """The live projection as dictionaries."""

    def __init__(self) -> None:
        self.requests: dict[str, payloads.InstanceBuildRequested] = {}
        self.images: dict[str, payloads.ImageToBoot] = {}
        self.networks: dict[str, payloads.NetworkToAttach] = {}
        self.tried: dict[str, list[str]] = {}
        self.stuck: list[tuple[str, int, str, str]] = []
        self.servers: dict[str, ServerState] = {}
        self.instances: dict[str, Instance] = {}  # the whole fold, where a test needs it
        self.deletes: dict[str, str] = {}  # instance -> the DELETE's request id
        self.folded_ids: set[str] | None = None  # None: every event is folded at once
        self.volumes: dict[str, VolumeRecord] = {}
        self.attached: dict[str, list[payloads.BlockDeviceMapping]] = {}  # by instance

    def volume_folded(self, event_id: str) -> bool:
        return self.folded(event_id)

    def volume(self, volume_id: str) -> VolumeRecord | None:
        return self.volumes.get(volume_id)

    def attached_volumes(self, instance: str) -> list[payloads.BlockDeviceMapping]:
        return self.attached.get(instance, [])

    def folded(self, event_id: str) -> bool:
        return self.folded_ids is None or event_id in self.folded_ids

    def server(self, instance: str) -> ServerState | None:
        return self.servers.get(instance)

    def delete_request(self, instance: str) -> str | None:
        return self.deletes.get(instance)

    def instance(self, instance: str) -> Instance | None:
        return self.instances.get(instance)

    def build_request(self, instance: str) -> payloads.InstanceBuildRequested | None:
        return self.requests.get(instance)

    def image(self, image_id: str) -> payloads.ImageToBoot | None:
        return self.images.get(image_id)

    def network(self, network_id: str | None,
                fixed_ip: str | None) -> payloads.NetworkToAttach | None:
        network = self.networks.get(network_id or "")
        return {**network, "fixed_ip": fixed_ip} if network else None

    def tried_hosts(self, instance: str) -> list[str]:
        return self.tried.get(instance, [])

    def stuck_builds(self, vm_state: str, before: datetime,
                     limit: int = 100) -> list[tuple[str, int, str, str]]:
        return self.stuck[:limit]


class FakeReplica:
    """What the scheduler needs of its LogReplica: the lock around the view."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
