"""Volumes without a broker: the fold of Cinder's statuses, and cinder-volume's decisions
(a file backend in a temporary directory, the projection as dictionaries)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.volume.driver import FileDriver
from consumers.volume.manager import VolumeManager
from novalog.domain import volume as v
from novalog.domain.instance import TransitionError
from novalog.kafka import Topics
from novalog.read_model import VolumeRecord
from schemas import Event, payloads
from schemas.typed import payload_of
from tests.fakes import FakeProjection, InMemorySink, publisher, record_of

VID, SERVER = str(uuid.uuid4()), str(uuid.uuid4())
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.n = 0

    def ev(self, kind: str, **payload: Any) -> Event:
        self.n += 1
        return Event(kind, VID, {"volume_id": VID, **payload}, "req-1", "test@h",
                     occurred_at=T0 + timedelta(seconds=self.n))


def requested(c: Clock, **kw: Any) -> Event:
    return c.ev("VolumeRequested", project_id="p", user_id="u", name="v1", description=None,
                size_gb=1, volume_type="__DEFAULT__", availability_zone="nova",
                image_id=None, metadata={}, for_build=kw.get("for_build"))


CONNECTION = {"driver_volume_type": "file", "path": "/v/volume-x", "format": "qcow2"}


def test_a_volume_walks_cinders_statuses_through_attach_and_detach() -> None:
    c = Clock()
    att = {"attachment_id": "a1", "instance_uuid": SERVER}
    events = [requested(c),
              c.ev("VolumeCreated", size_gb=1, bootable=False, connection=CONNECTION,
                   backend="file"),
              c.ev("VolumeReserved", **att),
              c.ev("VolumeAttaching", **att, host="cmp1"),
              c.ev("VolumeAttached", **att, host="cmp1", device="vdb"),
              c.ev("VolumeDetaching", **att),
              c.ev("VolumeDetached", **att, host="cmp1"),
              c.ev("VolumeDeleteRequested"),
              c.ev("VolumeDeleted")]
    statuses, state = [], None
    for event in events:
        state = v.apply(state, event)
        statuses.append(state.status)
    assert statuses == ["creating", "available", "reserved", "attaching", "in-use",
                        "detaching", "available", "deleting", "deleted"]
    in_use = v.fold(events[:5])
    assert in_use is not None and in_use.attachments[0].device == "vdb"
    assert v.fold(events, until=T0 + timedelta(seconds=5.5)) == in_use  # time travel


def test_an_attached_volume_cannot_be_deleted_and_repeats_change_nothing() -> None:
    c = Clock()
    att = {"attachment_id": "a1", "instance_uuid": SERVER}
    created = c.ev("VolumeCreated", size_gb=1, bootable=False, connection=CONNECTION,
                   backend="file")
    state = v.fold([requested(c), created, c.ev("VolumeAttaching", **att, host="cmp1"),
                    c.ev("VolumeAttached", **att, host="cmp1", device="vda")])
    assert state is not None and state.status == "in-use"
    with pytest.raises(TransitionError, match="in status in-use"):
        v.apply(state, c.ev("VolumeDeleteRequested"))
    with pytest.raises(TransitionError):  # the API reserves only an available volume
        v.apply(state, c.ev("VolumeReserved", attachment_id="a2", instance_uuid="other"))
    assert v.apply(state, requested(c)) == state  # a rescheduled build asking again
    assert v.apply(state, created) == state  # the backend answering a repeated request
    detach = c.ev("VolumeDetached", **att, host="cmp1")
    after = v.apply(state, detach)
    assert after.status == "available" and after.attachments == ()
    assert v.apply(after, detach) == after  # a repeated detach


def test_a_move_updates_the_attachments_host_and_keeps_its_device() -> None:
    c = Clock()
    att = {"attachment_id": "a1", "instance_uuid": SERVER}
    state = v.fold([requested(c), c.ev("VolumeCreated", size_gb=1, bootable=True,
                                        connection=CONNECTION, backend="file"),
                    c.ev("VolumeAttached", **att, host="cmp1", device="vda")])
    assert state is not None
    moved = v.apply(state, c.ev("VolumeAttached", **att, host="cmp2", device="vda"))
    assert moved.status == "in-use" and moved.attachments[0].host == "cmp2"
    assert moved.attachments[0].attached_at == state.attachments[0].attached_at


def manager(tmp_path: Path) -> tuple[VolumeManager, InMemorySink, FakeProjection]:
    sink, projection = InMemorySink(), FakeProjection()
    return (VolumeManager(FileDriver(tmp_path), publisher(sink, "volume"), Topics("t"),
                          projection), sink, projection)


def test_cinder_volume_makes_a_file_once_and_answers_the_build(tmp_path: Path) -> None:
    m, sink, projection = manager(tmp_path)
    build = {"instance_uuid": SERVER, "host": "cmp1", "attempt": 1}
    request = requested(Clock(), for_build=build)
    projection.volumes[VID] = VolumeRecord(VID, "creating", 1, None, None)
    m.handle(request, record_of(request))
    path = tmp_path / f"volume-{VID}"
    assert path.is_file()
    [created] = sink.events("VolumeCreated")
    connection = payload_of(created, payloads.VolumeCreated)["connection"]
    assert connection["path"] == str(path)
    [ready] = sink.events("BuildVolumeReady")
    assert sink.topics_of("BuildVolumeReady") == ["t.compute.cmp1"]
    assert ready.payload["connection"] == created.payload["connection"]
    m.handle(request, record_of(request))  # re-delivered before the projection moved on
    assert [e.event_id for e in sink.events("VolumeCreated")] == [created.event_id] * 2
    projection.volumes[VID] = VolumeRecord(VID, "available", 1, None, connection)
    m.handle(request, record_of(request))  # asked again: no second create, an answer
    assert len(sink.events("VolumeCreated")) == 2 and len(sink.events("BuildVolumeReady")) == 3


def test_a_deleted_volume_is_never_made_again(tmp_path: Path) -> None:
    m, sink, _projection = manager(tmp_path)  # no row: deleted meanwhile
    request = requested(Clock(), for_build={"instance_uuid": SERVER, "host": "cmp1",
                                            "attempt": 1})
    m.handle(request, record_of(request))
    assert list(tmp_path.iterdir()) == []
    assert sink.events("VolumeCreated") == []
    [failed] = sink.events("BuildVolumeFailed")
    assert "gone" in payload_of(failed, payloads.BuildVolumeFailed)["reason"]


def test_delete_removes_the_file_only_when_the_volume_is_deleting(tmp_path: Path) -> None:
    m, sink, projection = manager(tmp_path)
    FileDriver(tmp_path).create(VID, 1)
    delete = Clock().ev("VolumeDeleteRequested")
    projection.volumes[VID] = VolumeRecord(VID, "in-use", 1, None, None)
    m.handle(delete, record_of(delete))
    assert (tmp_path / f"volume-{VID}").exists() and sink.events("VolumeDeleted") == []
    projection.volumes[VID] = VolumeRecord(VID, "deleting", 1, None, None)
    m.handle(delete, record_of(delete))
    assert not (tmp_path / f"volume-{VID}").exists()
    assert len(sink.events("VolumeDeleted")) == 1
