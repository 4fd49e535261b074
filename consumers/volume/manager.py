"""cinder-volume: makes and removes volumes as their facts ask, and answers builds.

It reacts to two facts of the volumes topic: VolumeRequested (status creating)
and VolumeDeleteRequested (status deleting). Before acting it waits until the
projection has folded the fact, then acts on what the projection says the volume
is now, so a repeated or stale request (a re-delivery, a rescheduled build asking
again) never makes a second file or brings a deleted volume back. Every fact it
emits has an id derived from its cause, so a repeat is the same fact again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import ClassVar

from consumers.volume.driver import VolumeDriver
from novalog.consume import Record
from novalog.domain import volume as states
from novalog.faults import crash_point
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)
READY = frozenset({states.AVAILABLE, states.RESERVED, states.ATTACHING, states.IN_USE})


class VolumeManager:
    WANTS: ClassVar[frozenset[str]]  # = the keys of HANDLERS, below

    def __init__(self, driver: VolumeDriver, publisher: Publisher, topics: Topics,
                 projection: LiveProjection) -> None:
        self.driver = driver
        self.pub = publisher
        self.topics = topics
        self.projection = projection

    def handle(self, event: Event, _record: Record) -> None:
        handler = HANDLERS.get(event.event_type)
        if handler is not None:
            handler(self, event)

    def _fact(self, kind: str, volume_id: str, payload: Mapping[str, object],
              cause: Event) -> None:
        self.pub.emit(self.topics.volumes, kind, volume_id, payload, cause=cause)

    def create_volume(self, event: Event) -> None:
        p = payload_of(event, payloads.VolumeRequested)
        volume_id, build = p["volume_id"], p["for_build"]
        self.projection.wait_folded(event)
        volume = self.projection.volume(volume_id)
        if volume is None or volume.status == states.ERROR:
            self._answer_build(event, build, volume_id, None, 0,
                               "the volume is gone" if volume is None else "the volume is in "
                               "error")
            return
        if volume.status in READY:  # made already: a build asking again
            self._answer_build(event, build, volume_id, volume.connection, volume.size_gb, "")
            return
        if volume.status != states.CREATING:
            self._answer_build(event, build, volume_id, None, 0,
                               f"volume {volume_id} is {volume.status}")
            return
        try:
            if p["image_id"]:
                image = self.projection.image(p["image_id"])
                if image is None:
                    raise ValueError(f"image {p['image_id']} is not in the catalog")
                connection = self.driver.create_from_image(volume_id, p["size_gb"], image)
            else:
                connection = self.driver.create(volume_id, p["size_gb"])
        except Exception as exc:
            log.warning("volume %s could not be made: %s", volume_id, exc)
            self._fact("VolumeCreateFailed", volume_id, payloads.VolumeCreateFailed(
                volume_id=volume_id, reason=str(exc)), event)
            self._answer_build(event, build, volume_id, None, 0, str(exc))
            return
        crash_point("volume.after_create")
        self._fact("VolumeCreated", volume_id, payloads.VolumeCreated(
            volume_id=volume_id, size_gb=p["size_gb"], bootable=bool(p["image_id"]),
            connection=connection, backend=self.driver.backend), event)
        self._answer_build(event, build, volume_id, connection, p["size_gb"], "")

    def _answer_build(self, cause: Event, build: payloads.BuildRef | None, volume_id: str,
                      connection: payloads.VolumeConnection | None, size_gb: int,
                      reason: str) -> None:
        """Tell the build that asked (if one did) on its host's topic."""
        if build is None:
            return
        topic, uuid = self.topics.compute(build["host"]), build["instance_uuid"]
        if connection is None:
            self.pub.emit(topic, "BuildVolumeFailed", uuid, payloads.BuildVolumeFailed(
                instance_uuid=uuid, host=build["host"], attempt=build["attempt"],
                volume_id=volume_id, reason=reason or "the volume has no connection"),
                cause=cause)
            return
        self.pub.emit(topic, "BuildVolumeReady", uuid, payloads.BuildVolumeReady(
            instance_uuid=uuid, host=build["host"], attempt=build["attempt"],
            volume_id=volume_id, connection=connection, size_gb=size_gb), cause=cause)

    def delete_volume(self, event: Event) -> None:
        volume_id = payload_of(event, payloads.VolumeDeleteRequested)["volume_id"]
        self.projection.wait_folded(event)
        volume = self.projection.volume(volume_id)
        if volume is None or volume.status != states.DELETING:
            log.info("delete of %s: nothing to do (%s)", volume_id,
                     volume.status if volume else "gone")
            return
        try:
            self.driver.delete(volume_id)
        except OSError as exc:
            self._fact("VolumeDeleteFailed", volume_id, payloads.VolumeDeleteFailed(
                volume_id=volume_id, reason=str(exc)), event)
            return
        crash_point("volume.after_delete")
        self._fact("VolumeDeleted", volume_id, payloads.VolumeDeleted(volume_id=volume_id),
                   event)


# The facts cinder-volume acts on; its subscription (WANTS) is derived from this table.
HANDLERS: dict[str, Callable[[VolumeManager, Event], None]] = {
    "VolumeRequested": VolumeManager.create_volume,
    "VolumeDeleteRequested": VolumeManager.delete_volume,
}
VolumeManager.WANTS = frozenset(HANDLERS)
