"""A volume's state, folded from its events: Cinder's statuses and attachments.

creating → available → reserved → attaching → in-use → detaching → available, and
deleting → (gone), with error (create failed) and error_deleting. The projection,
audit and time travel all fold with `apply`, so they cannot disagree. Events that
may legitimately come twice (a build asking again for its volume after a
reschedule, a backend answering a repeated request) change nothing the second
time; an event that cannot happen in the current status raises TransitionError,
and the projector dead-letters it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from novalog.domain.instance import TransitionError
from schemas import Event, payloads
from schemas.typed import payload_of

CREATING, AVAILABLE, RESERVED, ATTACHING = "creating", "available", "reserved", "attaching"
IN_USE, DETACHING, DELETING, DELETED = "in-use", "detaching", "deleting", "deleted"
ERROR, ERROR_DELETING = "error", "error_deleting"
DELETABLE = frozenset({AVAILABLE, ERROR, ERROR_DELETING})  # Cinder's delete precondition
ATTACHED_STATUSES = frozenset({RESERVED, ATTACHING, IN_USE, DETACHING})


@dataclass(frozen=True)
class Attachment:
    attachment_id: str
    instance_uuid: str
    attach_status: str  # reserved, attaching, attached, detaching (Cinder's attach_status)
    host: str | None = None
    device: str | None = None
    attached_at: str | None = None  # ISO 8601


@dataclass(frozen=True)
class Volume:
    volume_id: str
    project_id: str
    user_id: str
    name: str | None
    description: str | None
    size_gb: int
    volume_type: str
    availability_zone: str
    image_id: str | None
    metadata: dict[str, str]
    status: str
    created_at: str
    updated_at: str
    bootable: bool = False
    connection: dict[str, str] | None = None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    reason: str | None = None  # why it is in error / error_deleting

    def attachment(self, attachment_id: str) -> Attachment | None:
        return next((a for a in self.attachments if a.attachment_id == attachment_id), None)

    def attachment_of(self, instance_uuid: str) -> Attachment | None:
        return next((a for a in self.attachments if a.instance_uuid == instance_uuid), None)


def to_json(v: Volume) -> dict[str, Any]:
    return asdict(v)


def from_json(data: dict[str, Any]) -> Volume:
    attachments = tuple(Attachment(**a) for a in data.get("attachments", []))
    return Volume(**{**data, "attachments": attachments})


def _at(event: Event) -> str:
    return event.occurred_at.isoformat()


def _refuse(v: Volume, event: Event) -> TransitionError:
    return TransitionError(f"{event.event_type} cannot happen to volume {v.volume_id} in "
                           f"status {v.status}")


def _requested(v: Volume | None, e: Event) -> Volume:
    if v is not None:
        return v  # asked again (a rescheduled build): the volume is what it is
    p = payload_of(e, payloads.VolumeRequested)
    return Volume(volume_id=p["volume_id"], project_id=p["project_id"], user_id=p["user_id"],
                  name=p["name"], description=p["description"], size_gb=p["size_gb"],
                  volume_type=p["volume_type"], availability_zone=p["availability_zone"],
                  image_id=p["image_id"], metadata=dict(p["metadata"]), status=CREATING,
                  created_at=_at(e), updated_at=_at(e))


def _created(v: Volume, e: Event) -> Volume:
    if v.status != CREATING:
        return v  # the backend answered a repeated request
    p = payload_of(e, payloads.VolumeCreated)
    return replace(v, status=AVAILABLE, size_gb=p["size_gb"], bootable=p["bootable"],
                   connection={k: str(v) for k, v in p["connection"].items()},
                   updated_at=_at(e))


def _create_failed(v: Volume, e: Event) -> Volume:
    if v.status != CREATING:
        return v
    return replace(v, status=ERROR, reason=payload_of(e, payloads.VolumeCreateFailed)["reason"],
                   updated_at=_at(e))


def _delete_requested(v: Volume, e: Event) -> Volume:
    if v.status == DELETING:
        return v
    if v.status not in DELETABLE or v.attachments:
        raise _refuse(v, e)
    return replace(v, status=DELETING, updated_at=_at(e))


def _deleted(v: Volume, e: Event) -> Volume:
    return replace(v, status=DELETED, attachments=(), updated_at=_at(e))


def _delete_failed(v: Volume, e: Event) -> Volume:
    if v.status != DELETING:
        return v
    return replace(v, status=ERROR_DELETING, updated_at=_at(e),
                   reason=payload_of(e, payloads.VolumeDeleteFailed)["reason"])


def _with(v: Volume, a: Attachment, status: str, e: Event) -> Volume:
    others = tuple(x for x in v.attachments if x.attachment_id != a.attachment_id)
    return replace(v, attachments=(*others, a), status=status, updated_at=_at(e))


def _without(v: Volume, attachment_id: str, e: Event) -> Volume:
    left = tuple(x for x in v.attachments if x.attachment_id != attachment_id)
    if len(left) == len(v.attachments):
        return v  # no such attachment (any more): a repeated detach
    return replace(v, attachments=left, status=IN_USE if left else AVAILABLE,
                   updated_at=_at(e))


def _reserved(v: Volume, e: Event) -> Volume:
    p = payload_of(e, payloads.VolumeReserved)
    if v.attachment(p["attachment_id"]) is not None:
        return v
    if v.status != AVAILABLE:
        raise _refuse(v, e)
    return _with(v, Attachment(p["attachment_id"], p["instance_uuid"], "reserved"), RESERVED, e)


def _attaching(v: Volume, e: Event) -> Volume:
    p = payload_of(e, payloads.VolumeAttaching)
    known = v.attachment(p["attachment_id"])
    if known is not None and known.attach_status != "reserved":
        return v
    if known is None and v.status != AVAILABLE:
        raise _refuse(v, e)
    return _with(v, Attachment(p["attachment_id"], p["instance_uuid"], "attaching",
                               host=p["host"]), ATTACHING, e)


def _attached(v: Volume, e: Event) -> Volume:
    p = payload_of(e, payloads.VolumeAttached)
    known = v.attachment(p["attachment_id"])
    if known is None and v.status != AVAILABLE:
        raise _refuse(v, e)
    if known is not None and known.attach_status == "attached":
        if known.host == p["host"] and known.device == p["device"]:
            return v
        return _with(v, replace(known, host=p["host"], device=p["device"]), v.status, e)  # moved
    return _with(v, Attachment(p["attachment_id"], p["instance_uuid"], "attached",
                               host=p["host"], device=p["device"], attached_at=_at(e)), IN_USE, e)


def _attach_failed(v: Volume, e: Event) -> Volume:
    return _without(v, payload_of(e, payloads.VolumeAttachFailed)["attachment_id"], e)


def _detaching(v: Volume, e: Event) -> Volume:
    p = payload_of(e, payloads.VolumeDetaching)
    known = v.attachment(p["attachment_id"])
    if known is None or known.attach_status == "detaching":
        return v
    return _with(v, replace(known, attach_status="detaching"), DETACHING, e)


def _detached(v: Volume, e: Event) -> Volume:
    return _without(v, payload_of(e, payloads.VolumeDetached)["attachment_id"], e)


TRANSITIONS: dict[str, Callable[[Volume, Event], Volume]] = {
    "VolumeCreated": _created,
    "VolumeCreateFailed": _create_failed,
    "VolumeDeleteRequested": _delete_requested,
    "VolumeDeleted": _deleted,
    "VolumeDeleteFailed": _delete_failed,
    "VolumeReserved": _reserved,
    "VolumeAttaching": _attaching,
    "VolumeAttached": _attached,
    "VolumeAttachFailed": _attach_failed,
    "VolumeDetaching": _detaching,
    "VolumeDetached": _detached,
}
FOLDED = frozenset({"VolumeRequested", *TRANSITIONS})  # the facts of a volume's stream


def apply(v: Volume | None, event: Event) -> Volume:
    """The volume after `event` (TransitionError when it cannot happen)."""
    if event.event_type == "VolumeRequested":
        return _requested(v, event)
    if v is None:
        raise TransitionError(f"{event.event_type} for unknown volume {event.aggregate_id}")
    if v.status == DELETED:
        return v  # nothing happens to a deleted volume
    return TRANSITIONS[event.event_type](v, event)


def fold(events: list[Event], until: datetime | None = None) -> Volume | None:
    """The state after the events (in log order) that occurred by `until`."""
    v: Volume | None = None
    for event in events:
        if until is not None and event.occurred_at > until:
            continue
        if event.event_type in FOLDED:
            v = apply(v, event)
    return v
