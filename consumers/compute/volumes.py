"""Volumes on a compute host (Nova's compute side of Cinder attachments).

A build whose block device mappings name volumes asks the volume role for each
one it must make (VolumeRequested, answered by BuildVolumeReady on this host's
topic) and waits in `block_device_mapping`; an existing volume comes with its
connection from the conductor. When all are there, each is attached
(VolumeAttaching, VolumeAttached) and the domain is defined with them, the boot
volume as vda. A running server takes one more by hot-plug (AttachVolume) and
lets one go (DetachVolume). The disks are kept in the claim row (`volumes`), so a
restart, a rescue or a move sees them; a delete detaches them all and deletes
those marked delete_on_termination.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from consumers.compute.driver import LibvirtDriver
from consumers.compute.image_cache import ImageCache
from consumers.compute.resource_tracker import BuildRecord, ResourceTracker, VolumeDisk
from novalog.faults import crash_point
from novalog.idempotency import boot_attachment_id, build_volume_id
from novalog.kafka import Topics
from novalog.publish import Publisher
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)
RUNNING_STAGES = frozenset({"active", "stopped"})  # where a volume can be plugged in


def volume_mappings(record: BuildRecord) -> list[tuple[str, payloads.BlockDeviceMapping]]:
    """(volume id, mapping) of the build's volume mappings, the boot volume first."""
    out = []
    for index, bdm in enumerate(record.command["block_device_mapping"]):
        if bdm["destination_type"] == "volume":
            out.append((bdm["volume_id"] or build_volume_id(record.instance_uuid, index), bdm))
    return sorted(out, key=lambda pair: pair[1]["boot_index"] != 0)


def volume_disks(record: BuildRecord) -> list[payloads.Disk]:
    """The disks of the volumes in the instance's domain."""
    return [v["disk"] for v in record.volumes.values() if v["disk"]["device"]]


def _disk(connection: payloads.VolumeConnection, size_gb: int,
          device: str = "") -> payloads.Disk:
    return payloads.Disk(device=device, path=connection["path"], format=connection["format"],
                         size_gb=size_gb, backing_file=None)


class VolumeOps:
    """The volume half of ComputeManager (mixed in: it shares the manager's parts)."""

    host: str
    tracker: ResourceTracker
    driver: LibvirtDriver
    cache: ImageCache
    pub: Publisher
    topics: Topics

    def _record(self, uuid: str) -> BuildRecord | None:
        raise NotImplementedError

    def _volume_fact(self, kind: str, volume_id: str, payload: Mapping[str, object],
                     cause: Event, *what: object) -> None:
        self.pub.emit(self.topics.volumes, kind, volume_id, payload, cause=cause, what=what)

    # -- a build's volumes -------------------------------------------------------------
    def request_build_volumes(self, record: BuildRecord, cause: Event) -> bool:
        """Ask the volume role for each volume the build must make and has not got;
        True when every volume is here (an existing one is, with its connection)."""
        cmd, uuid = record.command, record.instance_uuid
        ready = True
        for volume_id, bdm in volume_mappings(record):
            if volume_id in record.volumes or bdm["connection"] is not None:
                continue
            ready = False
            self._volume_fact("VolumeRequested", volume_id, payloads.VolumeRequested(
                volume_id=volume_id, project_id=cmd["project_id"], user_id=cmd["user_id"],
                name="", description=None, size_gb=bdm["volume_size"] or 1,
                volume_type="__DEFAULT__", availability_zone="nova",
                image_id=bdm["uuid"] if bdm["source_type"] == "image" else None, metadata={},
                for_build=payloads.BuildRef(instance_uuid=uuid, host=self.host,
                                            attempt=record.attempt)), cause)
        return ready

    def volume_arrived(self, event: Event) -> BuildRecord | None:
        """BuildVolumeReady: the volume kept for the build; the record when the build
        has all its volumes now, None while it waits (or when no build waits)."""
        p = payload_of(event, payloads.BuildVolumeReady)
        uuid, volume_id = p["instance_uuid"], p["volume_id"]
        record = self._record(uuid)
        if record is not None and record.attempt == p["attempt"] and record.stage == "spawning":
            return record  # re-delivered after a crash while spawning: resume
        if record is None or record.attempt != p["attempt"] or \
                record.stage != "block_device_mapping":
            log.info("ignoring volume %s for %s attempt %s: no build waiting for it",
                     volume_id, uuid, p["attempt"])
            return None
        bdm = dict(volume_mappings(record)).get(volume_id)
        if bdm is None:
            return None
        self.tracker.add_volume(uuid, volume_id, VolumeDisk(
            disk=_disk(p["connection"], p["size_gb"]),
            attachment_id=boot_attachment_id(volume_id, uuid),
            delete_on_termination=bdm["delete_on_termination"]))
        record = self._record(uuid)
        assert record is not None
        if all(v in record.volumes or b["connection"] is not None
               for v, b in volume_mappings(record)):
            return record
        return None

    def attach_build_volumes(self, record: BuildRecord, local: list[payloads.Disk],
                             cause: Event) -> list[payloads.Disk]:
        """A device for each of the build's volumes (the boot volume vda, the others
        after the local disks), each one attached to the instance."""
        uuid = record.instance_uuid
        used = {d["device"] for d in local}
        out = []
        for volume_id, bdm in volume_mappings(record):
            known = record.volumes.get(volume_id)
            if known is None:  # an existing volume: its connection came with the build
                assert bdm["connection"] is not None
                known = VolumeDisk(disk=_disk(bdm["connection"], bdm["volume_size"] or 0),
                                   attachment_id=boot_attachment_id(volume_id, uuid),
                                   delete_on_termination=bdm["delete_on_termination"])
            device = "vda" if bdm["boot_index"] == 0 else next(
                d for d in (f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz") if d not in used)
            used.add(device)
            disk = payloads.Disk(**{**known["disk"], "device": device})
            self.tracker.add_volume(uuid, volume_id, VolumeDisk(**{**known, "disk": disk}))
            self._plugged(volume_id, known["attachment_id"], uuid, device, cause)
            out.append(disk)
        return out

    def _plugged(self, volume_id: str, attachment_id: str, uuid: str, device: str,
                 cause: Event) -> None:
        self._volume_fact("VolumeAttaching", volume_id, payloads.VolumeAttaching(
            volume_id=volume_id, attachment_id=attachment_id, instance_uuid=uuid,
            host=self.host), cause)
        self._volume_fact("VolumeAttached", volume_id, payloads.VolumeAttached(
            volume_id=volume_id, attachment_id=attachment_id, instance_uuid=uuid,
            host=self.host, device=device), cause)

    def adopt_volumes(self, record: BuildRecord, cause: Event) -> list[payloads.Disk]:
        """A move's destination: the volumes attached at the source, on the same devices,
        now attached here (VolumeAttached names this host)."""
        uuid = record.instance_uuid
        for volume_id, bdm in volume_mappings(record):
            if bdm["connection"] is None or not bdm["device"] or volume_id in record.volumes:
                continue
            self.tracker.add_volume(uuid, volume_id, VolumeDisk(
                disk=_disk(bdm["connection"], bdm["volume_size"] or 0, bdm["device"]),
                attachment_id=bdm["attachment_id"] or boot_attachment_id(volume_id, uuid),
                delete_on_termination=bdm["delete_on_termination"]))
        record = self._record(uuid) or record
        self.volumes_here(record, cause)
        return volume_disks(record)

    def volumes_here(self, record: BuildRecord, cause: Event) -> None:
        """Say the instance's volumes are attached on this host (after a move or its
        revert); the attachment keeps its id, device and time."""
        for volume_id, v in record.volumes.items():
            if v["disk"]["device"]:
                self._volume_fact("VolumeAttached", volume_id, payloads.VolumeAttached(
                    volume_id=volume_id, attachment_id=v["attachment_id"],
                    instance_uuid=record.instance_uuid, host=self.host,
                    device=v["disk"]["device"]), cause, self.host)

    def release_volumes(self, record: BuildRecord, cause: Event, delete: bool) -> None:
        """Every volume the instance holds detached (its domain is gone): those in its
        domain or made ready for it, and the existing ones it was built with; at a
        delete, those marked delete_on_termination deleted too. A volume its build
        asked for and never got is not the host's to release (it may not exist)."""
        uuid = record.instance_uuid
        held = {v: (known["attachment_id"], known["delete_on_termination"])
                for v, known in record.volumes.items()}
        for volume_id, bdm in volume_mappings(record):
            if bdm["connection"] is not None and volume_id not in held:
                held[volume_id] = (bdm["attachment_id"] or boot_attachment_id(volume_id, uuid),
                                   bdm["delete_on_termination"])
        for volume_id, (attachment_id, doomed) in sorted(held.items()):
            self._volume_fact("VolumeDetached", volume_id, payloads.VolumeDetached(
                volume_id=volume_id, attachment_id=attachment_id, instance_uuid=uuid,
                host=self.host), cause, "released")
            if delete and doomed:
                self._volume_fact("VolumeDeleteRequested", volume_id,
                                  payloads.VolumeDeleteRequested(volume_id=volume_id), cause)

    # -- hot-plug ----------------------------------------------------------------------
    def attach_volume(self, event: Event) -> None:
        """Nova's attach_volume on the host: plugged into the domain (live where the
        hypervisor can), then in-use with its device; refused if the server is not here
        or not running or stopped."""
        p = payload_of(event, payloads.AttachVolume)
        uuid, volume_id, attachment_id = p["instance_uuid"], p["volume_id"], p["attachment_id"]
        record = self._record(uuid)
        if record is None or record.stage not in RUNNING_STAGES:
            self._attach_failed(p, event, f"instance {uuid} is not running on {self.host}")
            return
        self._volume_fact("VolumeAttaching", volume_id, payloads.VolumeAttaching(
            volume_id=volume_id, attachment_id=attachment_id, instance_uuid=uuid,
            host=self.host), event)
        connection = p["connection"]
        try:
            device = self.driver.attach_disk(uuid, connection["path"], connection["format"],
                                             self.cache.instance_dir(uuid) / "libvirt.xml")
        except Exception as exc:
            log.warning("attaching %s to %s failed: %s", volume_id, uuid, exc)
            self._attach_failed(p, event, str(exc))
            return
        crash_point("compute.volume.after_attach")
        self.tracker.add_volume(uuid, volume_id, VolumeDisk(
            disk=_disk(connection, p["size_gb"], device), attachment_id=attachment_id,
            delete_on_termination=False))
        self._volume_fact("VolumeAttached", volume_id, payloads.VolumeAttached(
            volume_id=volume_id, attachment_id=attachment_id, instance_uuid=uuid,
            host=self.host, device=device), event)

    def _attach_failed(self, p: payloads.AttachVolume, cause: Event, reason: str) -> None:
        self._volume_fact("VolumeAttachFailed", p["volume_id"], payloads.VolumeAttachFailed(
            volume_id=p["volume_id"], attachment_id=p["attachment_id"],
            instance_uuid=p["instance_uuid"], reason=reason), cause)

    def detach_volume(self, event: Event) -> None:
        """Nova's detach_volume on the host: unplugged, then available again."""
        p = payload_of(event, payloads.DetachVolume)
        uuid, volume_id = p["instance_uuid"], p["volume_id"]
        record = self._record(uuid)
        known = record.volumes.get(volume_id) if record else None
        if known is not None:
            self.driver.detach_disk(uuid, known["disk"]["path"],
                                    self.cache.instance_dir(uuid) / "libvirt.xml")
            crash_point("compute.volume.after_detach")
            self.tracker.remove_volume(uuid, volume_id)
        self._volume_fact("VolumeDetached", volume_id, payloads.VolumeDetached(
            volume_id=volume_id, attachment_id=p["attachment_id"], instance_uuid=uuid,
            host=self.host), event)

    def build_volume_failed(self, event: Event) -> tuple[BuildRecord, str] | None:
        """BuildVolumeFailed: the waiting build and Nova's reason, or None."""
        p = payload_of(event, payloads.BuildVolumeFailed)
        record = self._record(p["instance_uuid"])
        if record is None or record.attempt != p["attempt"]:
            return None
        return record, (f"Volume {p['volume_id']} did not finish being created: "
                        f"{p['reason']}")
