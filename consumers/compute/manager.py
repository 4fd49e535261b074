"""nova-compute for one host: claim, then networking → block_device_mapping → spawning.

Commands arrive on the host's own topic: BuildAndRunInstance from the conductor,
then PortsAllocated / PortsAllocationFailed from the network role. The build's
progress lives in its claim row, so a restarted agent picks up where it was.
Any failure after the claim releases what the build took (domain, disks,
ports, claim) before InstanceBuildFailed tells the conductor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote
from uuid import uuid4

from consumers.compute import config_drive
from consumers.compute.driver import DirectBoot, LibvirtDriver, domain_name, domain_xml
from consumers.compute.image_cache import ImageCache, ImageError
from consumers.compute.image_cache import device_name as _device
from consumers.compute.resource_tracker import (
    BuildRecord,
    ResourceTracker,
    port_key,
    port_slots,
)
from consumers.compute.volumes import VolumeOps, volume_disks
from novalog.consume import Record
from novalog.domain import states
from novalog.domain.claims import claim_of
from novalog.domain.instance import open_migration
from novalog.faults import crash_point
from novalog.idempotency import derived_id
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)

BINARY = "nova-compute"
EVACUATED = frozenset({"accepted", "pre-migrating", "done"})  # Nova's, at init_host
SYNCED = frozenset({states.ACTIVE, states.STOPPED})  # what the power sync may correct
BEFORE_COPY = frozenset({"pre-migrating", "migrating", "preparing", "running"})
NOVA_CMDLINE = "root=/dev/vda console=tty0 console=ttyS0"  # Nova's, for a kernel image


class BuildStepFailed(Exception):
    def __init__(self, stage: str, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.stage, self.reason, self.retryable = stage, reason, retryable


@dataclass(frozen=True)
class ComputeIdentity:
    host: str
    zone: str = "nova"
    host_ip: str = "127.0.0.1"
    report_interval_s: float = 10.0  # Nova's report_interval
    resource_report_interval_s: float = 60.0
    sync_power_state_interval_s: float = 600.0  # Nova's sync_power_state_interval
    resize_confirm_window_s: float = 0.0  # Nova's resize_confirm_window: 0, never automatic
    shutdown_timeout_s: float = 60.0  # Nova's shutdown_timeout: a clean stop, then off
    soft_reboot_wait_s: float = 120.0  # Nova's [libvirt] wait_soft_reboot_seconds
    force_config_drive: bool = False  # Nova's force_config_drive


class ComputeManager(VolumeOps):
    WANTS: ClassVar[frozenset[str]]  # = the keys of HANDLERS, below

    def __init__(self, ident: ComputeIdentity, tracker: ResourceTracker, driver: LibvirtDriver,
                 cache: ImageCache, publisher: Publisher, topics: Topics,
                 projection: LiveProjection | None = None,
                 unseal: Callable[[str], str | None] = lambda _sealed: None) -> None:
        """`projection`: where the power-state sync sees a task in progress (and then
        changes nothing); without it every instance is synced. `unseal` opens the admin
        password the API sealed (novalog.tokens.unseal with the deployment's keys)."""
        self.unseal = unseal
        self.ident = ident
        self.host = ident.host
        self.tracker = tracker
        self.driver = driver
        self.cache = cache
        self.pub = publisher
        self.topics = topics
        self._last_heartbeat = 0.0
        self._last_report = 0.0
        self.projection = projection
        self._last_sync = time.monotonic()  # the first sync after one interval, as Nova
        self._last_poll = 0.0
        self._vanished: set[str] = set()  # reported once each
        self._releasing: set[str] = set()  # claims to drop once this batch's events are safe
        self._report_due: Event | None = None  # a usage report for after this batch
        self._start_correlation = f"req-{self.host}-start-{int(time.time())}"

    # -- service lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Register the host, restore its guests, then tell the cloud: service started,
        resources, heartbeat."""
        self.tracker.register()
        self.init_host()
        self.pub.emit(self.topics.hosts, "ComputeServiceStarted", self.host,
                      payloads.ComputeServiceStarted(
                          host=self.host, binary=BINARY, zone=self.ident.zone,
                          hypervisor_type=self.driver.hypervisor_type(),
                          hypervisor_hostname=self.host,
                          host_ip=self.ident.host_ip, version="novalog"),
                      correlation_id=self._start_correlation)
        self.report_resources()
        self.heartbeat()

    def init_host(self) -> None:
        """Like Nova's init_host: every instance this host holds as active has its domain
        running again (a restarted agent, or a hypervisor that lost its guests); one that
        is off here (stopped, or a resize's source) is defined again, and stays off."""
        self._destroy_evacuated_instances()
        known = set(self.driver.instance_uuids())
        for stage, start in (("active", True), ("stopped", False), ("outgoing", False)):
            for uuid in self.tracker.instances_at(stage):
                saved = self.cache.instance_dir(uuid) / "libvirt.xml"
                if uuid in self._releasing or not saved.exists() or \
                        self.driver.owned_elsewhere(uuid):  # a move's destination has it
                    continue
                try:
                    if start and self.driver.power_state_of(uuid) != states.RUNNING:
                        log.info("init_host: starting the domain of %s again", uuid)
                        self.driver.spawn(saved.read_text(), saved)
                    elif not start and uuid not in known:
                        log.info("init_host: defining the domain of %s again (%s)", uuid,
                                 stage)
                        self.driver.define(saved.read_text())
                except Exception:  # as Nova's init_host: one guest never stops the host
                    log.exception("init_host: the domain of %s could not be restored", uuid)

    def _destroy_evacuated_instances(self) -> None:
        """Nova's init_host step of the same name: the instances evacuated from this host
        while it was down (an evacuation with this host as its source, accepted,
        pre-migrating or done) lose their domain, disks and claim here; their addresses
        went with them. A finished evacuation is then completed."""
        if self.projection is None:
            return
        correlation = f"req-{self.host}-init-host-{int(time.time())}"
        for uuid in self.tracker.instances():
            server = self.projection.instance(uuid)
            m = server.migration if server else None
            if m is None or m["kind"] != "evacuation" or m["source_host"] != self.host or \
                    m["status"] not in EVACUATED:
                continue
            log.warning("init_host: %s was evacuated to %s; destroying it here", uuid,
                        m["dest_host"])
            self._drop_here(uuid)
            if m["status"] == "done":
                self.pub.emit(self.topics.instances, "InstanceMigrationSourceCleaned", uuid,
                              payloads.InstanceMigrationSourceCleaned(
                                  migration_id=m["migration_id"], host=self.host),
                              correlation_id=correlation,
                              event_id=derived_id(m["migration_id"], "source-cleaned"))

    def periodic(self) -> None:
        """Called by the consume loop after every poll."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self.ident.report_interval_s:
            self.heartbeat()
        if now - self._last_report >= self.ident.resource_report_interval_s:
            self.report_resources()
        if now - self._last_sync >= self.ident.sync_power_state_interval_s:
            self.sync_power_states()
        changed = self.driver.changed_domains()
        if changed:  # Nova's handle_lifecycle_event: those guests synced now
            self._sync_changed(changed, f"req-{self.host}-lifecycle-{int(time.time())}")
        if self.ident.resize_confirm_window_s and now - self._last_poll >= min(
                10.0, self.ident.resize_confirm_window_s):
            self.poll_unconfirmed_resizes()

    def poll_unconfirmed_resizes(self) -> None:
        """Nova's _poll_unconfirmed_resizes, on the destination: a resize left in
        VERIFY_RESIZE for longer than resize_confirm_window is confirmed, once (the
        request's id is derived from the migration)."""
        self._last_poll = time.monotonic()
        if self.projection is None:
            return
        before = datetime.now(UTC) - timedelta(seconds=self.ident.resize_confirm_window_s)
        for uuid, migration_id, _request in self.projection.unconfirmed_resizes(self.host,
                                                                                before):
            log.info("auto-confirming the resize of %s (%s)", uuid, migration_id)
            self.pub.emit(self.topics.instances, "InstanceResizeConfirmRequested", uuid,
                          payloads.InstanceResizeConfirmRequested(automatic=True),
                          correlation_id=f"req-{derived_id(migration_id, 'auto-confirm')}",
                          event_id=derived_id(migration_id, "auto-confirm"))

    def sync_power_states(self) -> None:
        """Nova's _sync_power_states: libvirt's view of each guest against the log's. A
        guest shut off behind novalog's back becomes stopped; one started behind its back
        while stopped is stopped again (as Nova calls its stop API); a vanished domain is
        reported (power_state 0); nothing changes while a task is in progress."""
        self._last_sync = time.monotonic()
        correlation = f"req-{self.host}-power-sync-{int(time.time())}"
        self._sync_instances([(uuid, stage) for stage in ("active", "stopped")
                              for uuid in self.tracker.instances_at(stage)], correlation)

    def _sync_changed(self, uuids: Iterable[str], correlation: str) -> None:
        records = [self._record(uuid) for uuid in uuids]
        self._sync_instances([(r.instance_uuid, r.stage) for r in records if r is not None],
                             correlation)

    def _sync_instances(self, instances: list[tuple[str, str]], correlation: str) -> None:
        for uuid, stage in instances:
            if uuid in self._releasing or stage not in ("active", "stopped"):
                continue  # a build or a move under way here
            server = self.projection.server(uuid) if self.projection else None
            if server is not None and (server.task_state is not None or
                                       server.vm_state not in SYNCED):
                continue  # a task, a move waiting for confirm, a rescue: left alone
            power = self.driver.power_state_of(uuid)
            if power is None:
                if uuid not in self._vanished:
                    self._vanished.add(uuid)
                    log.warning("power sync: the domain of %s is gone", uuid)
                    self._sync_event("InstancePowerStateChanged", uuid,
                                     payloads.InstancePowerStateChanged(
                                         host=self.host, power_state=states.NOSTATE),
                                     correlation)
                continue
            self._vanished.discard(uuid)
            if stage == "active" and power in (states.SHUTDOWN, states.CRASHED):
                log.warning("power sync: %s is shut off; it is stopped now", uuid)
                self.tracker.set_stage(uuid, "stopped")
                self._sync_event("InstanceStopped", uuid, payloads.InstanceStopped(
                    host=self.host, power_state=power), correlation)
            elif stage == "stopped" and power == states.RUNNING:
                log.warning("power sync: %s runs while stopped; stopping it", uuid)
                self.driver.power_off(uuid, self.ident.shutdown_timeout_s)

    def _sync_event(self, kind: str, uuid: str, payload: Mapping[str, object],
                    correlation: str) -> None:
        self.pub.emit(self.topics.instances, kind, uuid, payload,
                      correlation_id=correlation, event_id=str(uuid4()))  # an observation

    def heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        self.pub.emit(self.topics.hosts, "ServiceHeartbeat", self.host,
                      payloads.ServiceHeartbeat(host=self.host, binary=BINARY),
                      correlation_id=self._start_correlation)

    def report_resources(self, cause: Event | None = None) -> None:
        self._last_report = time.monotonic()
        t, u = self.tracker.totals, self.tracker.usage()
        self.pub.emit(self.topics.hosts, "ComputeResourcesReported", self.host,
                      payloads.ComputeResourcesReported(
                          host=self.host, node=self.host, vcpus=t.vcpus, memory_mb=t.memory_mb,
                          local_gb=t.local_gb, vcpus_used=u.vcpus_used,
                          memory_mb_used=u.memory_mb_used, local_gb_used=u.local_gb_used,
                          running_vms=self.driver.running_count(),
                          cpu_allocation_ratio=t.cpu_allocation_ratio,
                          ram_allocation_ratio=t.ram_allocation_ratio,
                          disk_allocation_ratio=t.disk_allocation_ratio,
                          cpu_arch="x86_64", hypervisor_type=self.driver.hypervisor_type(),
                          instance_uuids=u.instances),
                      correlation_id=cause.correlation_id if cause else self._start_correlation,
                      event_id=str(uuid4()))  # a snapshot, not a consequence: never de-duplicated

    def report_after_batch(self, cause: Event) -> None:
        """A build's change of usage, reported once for the whole batch (flushed() sends
        it): forty builds landing on a host in one batch are one report, not eighty. The
        scheduler counted its placements already; a report lost in a crash is made good
        by the next one (a snapshot, never a consequence)."""
        self._report_due = cause

    # -- commands --------------------------------------------------------------------------
    def handle(self, event: Event, _record: Record) -> None:
        handler = HANDLERS.get(event.event_type)
        if handler is None:  # a record with no type header reaches here undecided
            raise ValueError(f"{event.event_type} is not a command for nova-compute")
        host = event.payload.get("host")  # every command names its host
        if host != self.host:
            raise ValueError(f"{event.event_type} for host {host} reached {self.host}")
        handler(self, event)

    def _instance_event(self, kind: str, uuid: str, payload: Mapping[str, object],
                        cause: Event, *what: object) -> None:
        self.pub.emit(self.topics.instances, kind, uuid, payload, cause=cause, what=what)

    def build_and_run_instance(self, event: Event) -> None:
        p = payload_of(event, payloads.BuildAndRunInstance)
        uuid, attempt, host = p["instance_uuid"], p["attempt"], self.host
        need = claim_of(p["flavor"])
        result = self.tracker.claim(uuid, attempt, need, p)
        result_ok, reason, duplicate = result.accepted, result.reason, result.duplicate
        crash_point("compute.after_claim")
        if not result_ok:
            self._instance_event("InstanceClaimRefused", uuid, payloads.InstanceClaimRefused(
                host=host, attempt=attempt, node=p["node"], reason=reason), event)
            return
        log.info("[instance: %s] Claim successful on node %s", uuid, p["node"])
        self._instance_event("InstanceClaimAccepted", uuid, payloads.InstanceClaimAccepted(
            host=host, attempt=attempt, node=p["node"], vcpus=need.vcpus,
            memory_mb=need.memory_mb, disk_gb=need.disk_gb), event)
        if not duplicate:
            self.report_after_batch(event)
        self._instance_event("InstanceNetworkingStarted", uuid,
                             payloads.InstanceNetworkingStarted(host=host, attempt=attempt),
                             event)
        if not p["networks"]:
            record = self._record(uuid)
            assert record is not None
            self._continue_build(record, event)
            return
        for _key, net, slot in port_slots(p["networks"]):
            self.pub.emit(self.topics.network, "AllocatePorts", net["network_id"],
                          payloads.AllocatePorts(instance_uuid=uuid, host=host, attempt=attempt,
                                                 network=net, slot=slot),
                          cause=event, what=(net["network_id"], *([slot] if slot else [])))

    def ports_allocated(self, event: Event) -> None:
        p = payload_of(event, payloads.PortsAllocated)
        record = self._record(p["instance_uuid"])
        if record is None or record.attempt != p["attempt"] or \
                record.stage in ("active", "stopped"):  # built already
            log.info("ignoring ports for %s attempt %s: no build waiting for them",
                     p["instance_uuid"], p["attempt"])
            return
        if record.stage != "networking":  # re-delivered after a crash mid-build: resume
            self._continue_build(record, event)
            return
        network_id = p["ports"][0]["network_id"] if p["ports"] else ""
        record = self.tracker.add_ports(record.instance_uuid,
                                        port_key(network_id, p.get("slot", 0)), p["ports"])
        if record is None:
            return
        if all(key in record.ports for key, _, _ in port_slots(record.command["networks"])):
            self._continue_build(record, event)

    def ports_allocation_failed(self, event: Event) -> None:
        p = payload_of(event, payloads.PortsAllocationFailed)
        record = self._record(p["instance_uuid"])
        if record is None or record.attempt != p["attempt"]:
            return
        self._fail(record, event, BuildStepFailed("networking", p["reason"], retryable=False))

    # -- the build -------------------------------------------------------------------------
    def _continue_build(self, record: BuildRecord, cause: Event) -> None:
        uuid = record.instance_uuid
        host, attempt = self.host, record.attempt
        ports = record.ordered_ports()
        self._instance_event("InstanceNetworkAllocated", uuid, payloads.InstanceNetworkAllocated(
            host=host, attempt=attempt, ports=ports), cause)
        self.tracker.set_stage(uuid, "block_device_mapping")
        self._instance_event("InstanceBlockDeviceMappingStarted", uuid,
                             payloads.InstanceBlockDeviceMappingStarted(host=host,
                                                                        attempt=attempt), cause)
        if self.request_build_volumes(record, cause):
            self._spawn(self._record(uuid) or record, cause)

    def build_volume_ready(self, event: Event) -> None:
        record = self.volume_arrived(event)
        if record is not None:
            self._spawn(record, event)

    def build_volume_gone(self, event: Event) -> None:
        failed = self.build_volume_failed(event)
        if failed is not None:
            self._fail(failed[0], event, BuildStepFailed("block_device_mapping", failed[1],
                                                         retryable=False))

    def _spawn(self, record: BuildRecord, cause: Event) -> None:
        """Disks (local ones made, volumes attached), then the domain defined and started."""
        cmd, uuid = record.command, record.instance_uuid
        host, attempt = self.host, record.attempt
        ports = record.ordered_ports()
        try:
            try:
                disks = self.cache.prepare_disks(uuid, cmd["image"], cmd["flavor"])
                disks = sorted(disks + self.attach_build_volumes(record, disks, cause),
                               key=lambda d: d["device"])
            except Exception as exc:
                raise BuildStepFailed("block_device_mapping", str(exc), retryable=True) from exc
            crash_point("compute.after_disks")
            self._instance_event("InstanceBlockDevicesMapped", uuid,
                                 payloads.InstanceBlockDevicesMapped(host=host, attempt=attempt,
                                                                     disks=disks), cause)
            self.tracker.set_stage(uuid, "spawning")
            self._instance_event("InstanceSpawningStarted", uuid,
                                 payloads.InstanceSpawningStarted(host=host, attempt=attempt),
                                 cause)
            try:
                started = time.monotonic()
                xml = self._domain_xml(uuid, cmd, disks, ports)
                self.driver.spawn(xml, self.cache.instance_dir(uuid) / "libvirt.xml")
                log.info("[instance: %s] Took %.2f seconds to spawn the instance on the "
                         "hypervisor.", uuid, time.monotonic() - started)
            except Exception as exc:
                raise BuildStepFailed("spawning", str(exc), retryable=True) from exc
            crash_point("compute.after_define")
        except BuildStepFailed as failure:
            self._fail(record, cause, failure)
            return
        self.tracker.set_stage(uuid, "active")
        self._instance_event("InstanceSpawned", uuid, payloads.InstanceSpawned(
            host=host, attempt=attempt, node=host, domain_name=domain_name(uuid),
            power_state=states.RUNNING, launched_at=datetime.now(UTC)), cause)
        self.report_after_batch(cause)

    def _domain_xml(self, uuid: str, cmd: payloads.BuildAndRunInstance,
                    disks: list[payloads.Disk], ports: list[payloads.Port],
                    image: payloads.ImageToBoot | None = None) -> str:
        return domain_xml(uuid, cmd["name"], cmd["flavor"], disks, ports,
                          self.cache.instance_dir(uuid) / "console.log", self.driver.owner,
                          self._direct_boot(uuid, cmd["name"], image or cmd["image"]),
                          self._config_drive(uuid, cmd, ports, image or cmd["image"]))

    def _config_drive(self, uuid: str, cmd: payloads.BuildAndRunInstance,
                      ports: list[payloads.Port],
                      image: payloads.ImageToBoot | None) -> Path | None:
        """Nova's rule: asked for, forced by the host's configuration, or mandatory for
        the image (img_config_drive). Made once per host; a move makes it again on the
        destination, as Nova does."""
        props = image["properties"] if image else {}
        if not (cmd.get("config_drive") or self.ident.force_config_drive
                or props.get("img_config_drive") == "mandatory"):
            return None
        path = self.cache.instance_dir(uuid) / "disk.config"
        if not path.exists():
            sealed = cmd.get("admin_password")
            password = self.unseal(sealed) if sealed else None
            if sealed and password is None:
                log.warning("[instance: %s] the admin password cannot be opened with this "
                            "deployment's keys: the config drive goes without it", uuid)
            path.parent.mkdir(parents=True, exist_ok=True)
            config_drive.write(path, config_drive.files(cmd, ports, self.ident.zone, password))
        return path

    def _direct_boot(self, uuid: str, name: str,
                     image: payloads.ImageToBoot | None) -> DirectBoot | None:
        """An image with kernel_id (and ramdisk_id) boots them directly, as Nova's libvirt
        driver does, with the image's os_command_line. novalog adds the instance's uuid
        and name (percent-encoded) for the guest to say who it is."""
        props = image["properties"] if image else {}
        if not props.get("kernel_id"):
            return None
        kernel = self.cache.base_image(self._catalog_image(props["kernel_id"]))
        ramdisk = props.get("ramdisk_id")
        initrd = str(self.cache.base_image(self._catalog_image(ramdisk))) if ramdisk else None
        cmdline = props.get("os_command_line") or NOVA_CMDLINE
        return DirectBoot(str(kernel), initrd, f"{cmdline} novalog.uuid={uuid} "
                                               f"novalog.name={quote(name, safe='')}")

    def _catalog_image(self, image_id: str) -> payloads.ImageToBoot:
        found = self.projection.image(image_id) if self.projection else None
        if found is None:
            raise ImageError(f"image {image_id} (a kernel or ramdisk) is not in the catalog")
        return found

    def _fail(self, record: BuildRecord, cause: Event, failure: BuildStepFailed) -> None:
        """Release everything the build took, then say so."""
        uuid = record.instance_uuid
        log.warning("build of %s failed at %s on %s: %s", uuid, failure.stage, self.host,
                    failure.reason)
        try:
            self.driver.destroy(uuid)
        except Exception:
            log.exception("could not destroy the domain of %s", uuid)
        self.release_volumes(self._record(uuid) or record, cause, delete=False)
        self._release(uuid, record, cause, f"build failed on {self.host}: {failure.reason}")
        self._instance_event("InstanceBuildFailed", uuid, payloads.InstanceBuildFailed(
            host=self.host, attempt=record.attempt, stage=failure.stage,
            reason=failure.reason, retryable=failure.retryable), cause)

    def _release(self, uuid: str, record: BuildRecord | None, cause: Event,
                 reason: str) -> None:
        """Disks, ports and claim of the instance on this host (what a domain needs gone
        first); each step is idempotent, so a re-delivered command repeats it harmlessly."""
        self.cache.remove(uuid)
        self._releasing.add(uuid)
        if record is not None:
            for network_id in dict.fromkeys(n["network_id"] for n in record.command["networks"]):
                self.pub.emit(self.topics.network, "ReleasePorts", network_id,
                              payloads.ReleasePorts(instance_uuid=uuid, network_id=network_id,
                                                    reason=reason, attempt=record.attempt),
                              cause=cause, what=(network_id,))

    def _record(self, uuid: str) -> BuildRecord | None:
        """The instance's claim record, unless it is being released (later commands of the
        same batch, such as ports arriving for a build just deleted, then find none)."""
        return None if uuid in self._releasing else self.tracker.get(uuid)

    def flushed(self) -> None:
        """After the batch's events are acknowledged (the consume loop's after_flush): drop
        the claims released in it. Dropped before, a crash would lose the ReleasePorts
        still queued, and the re-delivered command, finding no claim, would not resend
        them; dropped after, a re-delivered command finds the claim and repeats them.
        Then the batch's report of usage, if one is due."""
        if self._releasing:
            for uuid in sorted(self._releasing):
                self.tracker.release(uuid)
            self._releasing.clear()
            self.report_resources(cause=self._report_due)
        elif self._report_due is not None:
            self.report_resources(cause=self._report_due)
        self._report_due = None  # only once sent: a retry after an outage sends it then

    # -- delete ----------------------------------------------------------------------------
    def terminate_instance(self, event: Event) -> None:
        """Nova's terminate_instance: the domain destroyed and undefined, the instance's
        directory (overlay, console log, libvirt.xml) removed, its ports and claim released.
        It runs after any build of the instance this host took (one partition, in order);
        a build still waiting for its ports finds no record when they come, and stops."""
        p = payload_of(event, payloads.TerminateInstance)
        uuid = p["instance_uuid"]
        record = self._record(uuid)
        attempt = record.attempt if record else p["attempt"]
        self._instance_event("InstanceTerminateStarted", uuid, payloads.InstanceTerminateStarted(
            host=self.host, attempt=attempt), event)
        self.driver.destroy(uuid)
        crash_point("compute.after_destroy")
        if record is not None:
            self.release_volumes(record, event, delete=True)
        self._release(uuid, record, event, f"instance deleted on {self.host}")
        crash_point("compute.after_release")
        self._instance_event("InstanceDeleted", uuid, payloads.InstanceDeleted(
            host=self.host, local=False, terminated_at=datetime.now(UTC)), event)


    # -- reboot, stop, start ------------------------------------------------------------
    def reboot_instance(self, event: Event) -> None:
        """Nova's reboot_instance: reboot_pending, reboot_started, then active."""
        p = payload_of(event, payloads.RebootInstance)
        uuid, hard = p["instance_uuid"], p["hard"]
        self._instance_event("InstanceRebootPending", uuid, payloads.InstanceRebootPending(
            host=self.host, hard=hard), event)
        self._instance_event("InstanceRebootStarted", uuid, payloads.InstanceRebootStarted(
            host=self.host, hard=hard), event)
        power = self.driver.reboot(uuid, hard, self.ident.soft_reboot_wait_s)
        self.tracker.set_stage(uuid, "active")  # a hard reboot also starts a stopped guest
        self._instance_event("InstanceRebooted", uuid, payloads.InstanceRebooted(
            host=self.host, hard=hard, power_state=power), event)

    def stop_instance(self, event: Event) -> None:
        uuid = payload_of(event, payloads.StopInstance)["instance_uuid"]
        power = self.driver.power_off(uuid, self.ident.shutdown_timeout_s)
        self.tracker.set_stage(uuid, "stopped")  # init_host leaves it off after a restart
        self._instance_event("InstanceStopped", uuid, payloads.InstanceStopped(
            host=self.host, power_state=power), event)
        self.report_resources(cause=event)

    def start_instance(self, event: Event) -> None:
        uuid = payload_of(event, payloads.StartInstance)["instance_uuid"]
        power = self.driver.power_on(uuid)
        self.tracker.set_stage(uuid, "active")
        self._instance_event("InstanceStarted", uuid, payloads.InstanceStarted(
            host=self.host, power_state=power), event)
        self.report_resources(cause=event)


    # -- moves: resize, cold and live migration, evacuation ----------------------------
    def prepare_migration(self, event: Event) -> None:
        """The destination's claim for an incoming instance (Nova's prep_resize claim, the
        live-migration claim, the rebuild claim of an evacuation); the source keeps its
        own until the move is confirmed, reverted or given up."""
        p = payload_of(event, payloads.PrepareMigration)
        uuid, m, build = p["instance_uuid"], p["migration"], p["build"]
        if m["kind"] == "live-migration" and self._record(uuid) is None and \
                self.driver.power_state_of(uuid) is not None:  # Nova's destination check
            self._migration_failed(event, m, "prep", f"The instance {uuid} already exists "
                                                     f"on {self.host}.")
            return
        if uuid in self._releasing:  # let go of it first (a move back to a host just left)
            self.pub.producer.flush()
            self.flushed()
        ports: dict[str, list[payloads.Port]] = {}
        for port in p["ports"]:
            ports.setdefault(port["network_id"], []).append(port)
        result = self.tracker.claim(uuid, build["attempt"], claim_of(build["flavor"]), build,
                                    stage="incoming", ports=ports)
        if not result.accepted:
            self._migration_failed(event, m, "prep", result.reason)
            return
        crash_point("compute.migration.after_claim")
        self._instance_event("InstanceMigrationClaimed", uuid, payloads.InstanceMigrationClaimed(
            migration_id=m["migration_id"], host=self.host, node=self.host,
            instances_path=str(self.cache.instances_dir)), event)
        if not result.duplicate:
            self.report_resources(cause=event)

    def migrate_instance(self, event: Event) -> None:
        """The source's part: a resize or cold migrate powers the guest off and copies
        its disks (Nova's migrate_disk_and_power_off); a live migration copies them while
        the guest runs (block migration). Then the destination finishes. A failure here
        puts the guest back as it was and gives the move up (Nova's InstanceFaultRollback)."""
        p = payload_of(event, payloads.MigrateInstance)
        uuid, m = p["instance_uuid"], p["migration"]
        record = self._record(uuid)
        if record is None or not self._may_move(uuid, m):
            log.info("migrate %s: no such move to start here (deleted, or done already)", uuid)
            return
        cmd, mid, live = record.command, m["migration_id"], m["kind"] == "live-migration"
        old, new = m["old_flavor"], m["new_flavor"]
        if live:
            self._instance_event("InstanceLiveMigrationStarted", uuid,
                                 payloads.InstanceLiveMigrationStarted(migration_id=mid,
                                                                       host=self.host), event)
        else:
            self._instance_event("InstanceResizeMigrating", uuid,
                                 payloads.InstanceResizeMigrating(migration_id=mid,
                                                                  host=self.host), event)
            if new["root_gb"] < old["root_gb"] or new["ephemeral_gb"] < old["ephemeral_gb"]:
                self._migration_failed(event, m, "migrate", "Unable to resize disk down.")
                return
        try:
            if not live:
                self.tracker.set_stage(uuid, "outgoing")  # init_host and power sync leave it
                self.driver.power_off(uuid, self.ident.shutdown_timeout_s)
                crash_point("compute.resize.after_power_off")
            disks = self.cache.copy_disks(uuid, Path(p["dest_instances_path"]), cmd["image"],
                                          cmd["flavor"])
        except Exception as exc:
            log.warning("%s of %s failed on its source %s: %s", m["kind"], uuid, self.host, exc)
            if not live:  # as it was before the request
                stopped = m["old_vm_state"] == states.STOPPED
                self.tracker.set_stage(uuid, "stopped" if stopped else "active")
                if not stopped:
                    self.driver.power_on(uuid)
            self._migration_failed(event, m, "migrate", str(exc))
            return
        crash_point("compute.migration.after_copy")
        if not live:
            self._instance_event("InstanceResizeMigrated", uuid, payloads.InstanceResizeMigrated(
                migration_id=mid, host=self.host), event)
        self.pub.emit(self.topics.compute(p["dest_host"]), "FinishMigration", uuid,
                      payloads.FinishMigration(instance_uuid=uuid, host=p["dest_host"],
                                               migration=m, disks=disks,
                                               power_on=m["old_vm_state"] != states.STOPPED),
                      cause=event)

    def _may_move(self, uuid: str, m: payloads.Migration) -> bool:
        """The move is still the open one and has not got past the source (a re-delivered
        command after the destination finished must not copy over its disks)."""
        if self.projection is None:
            return True
        server = self.projection.instance(uuid)
        current = open_migration(server, m["migration_id"]) if server else None
        return server is not None and current is not None and \
            server.task_state != states.DELETING and current["status"] in BEFORE_COPY

    def finish_migration(self, event: Event) -> None:
        """The destination's part: the guest defined with the new flavor on the disks
        copied in (or, for an evacuation, new ones from the image), started unless it was
        stopped. A failure here releases what this host took, then says so."""
        p = payload_of(event, payloads.FinishMigration)
        uuid, m = p["instance_uuid"], p["migration"]
        record = self._record(uuid)
        if record is None:  # given up or deleted: a copy that raced it leaves nothing here
            log.info("finish migration of %s: no claim here (given up or deleted)", uuid)
            self.cache.remove(uuid)
            return
        cmd, mid, kind = record.command, m["migration_id"], m["kind"]
        evacuation = kind == "evacuation"
        step = "InstanceRebuildBlockDeviceMapping" if evacuation else "InstanceResizeFinishing"
        if kind != "live-migration":
            self._instance_event(step, uuid, {"migration_id": mid, "host": self.host}, event)
        ports = record.ordered_ports()
        try:
            if p["disks"]:
                disks = self.cache.adopt_disks(uuid, cmd["image"], cmd["flavor"])
            else:
                disks = self.cache.prepare_disks(uuid, cmd["image"], cmd["flavor"])
            if evacuation:
                self._instance_event("InstanceRebuildSpawning", uuid,
                                     payloads.InstanceRebuildSpawning(migration_id=mid,
                                                                      host=self.host), event)
            disks = sorted(disks + self.adopt_volumes(record, event), key=lambda d: d["device"])
            self.driver.spawn(self._domain_xml(uuid, cmd, disks, ports),
                              self.cache.instance_dir(uuid) / "libvirt.xml")
            if not p["power_on"]:
                self.driver.power_off(uuid, self.ident.shutdown_timeout_s)
        except Exception as exc:
            log.warning("%s of %s failed on %s: %s", kind, uuid, self.host, exc)
            self._drop_here(uuid)
            self._migration_failed(event, m, "finish", str(exc),
                                   rolled_back=kind == "live-migration")
            return
        crash_point("compute.migration.after_spawn")
        self.tracker.set_stage(uuid, "active" if p["power_on"] else "stopped")
        arrived = {"migration_id": mid, "host": self.host, "node": self.host,
                   "power_state": self.driver.power_state(uuid), "disks": disks}
        if kind == "live-migration":
            self._instance_event("InstanceLiveMigrated", uuid, payloads.InstanceLiveMigrated(
                **arrived, source_host=m["source_host"]), event)  # type: ignore[typeddict-item]
        else:
            self._instance_event("InstanceEvacuated" if evacuation else "InstanceResized",
                                 uuid, arrived, event)
        self.report_resources(cause=event)

    def clean_up_source(self, event: Event) -> None:
        """The old host lets go: the guest's domain and disks go, its claim is dropped;
        its addresses stay with the instance (a resize confirm, or after a live move)."""
        p = payload_of(event, payloads.CleanUpSource)
        uuid = p["instance_uuid"]
        self._drop_here(uuid)
        crash_point("compute.migration.after_cleanup")
        if p["confirm"]:
            self._instance_event("InstanceResizeConfirmed", uuid, payloads.InstanceResizeConfirmed(
                migration_id=p["migration_id"], host=self.host), event)
        else:
            self._instance_event("InstanceMigrationSourceCleaned", uuid,
                                 payloads.InstanceMigrationSourceCleaned(
                                     migration_id=p["migration_id"], host=self.host), event)

    def revert_migration(self, event: Event) -> None:
        """The destination of a resize gives the instance back (Nova's revert_resize); after
        a failed move it only lets go of what it took."""
        p = payload_of(event, payloads.RevertMigration)
        uuid, m = p["instance_uuid"], p["migration"]
        self._drop_here(uuid)
        crash_point("compute.resize.after_revert_dest")
        if m["status"] == "reverting":
            self.pub.emit(self.topics.compute(m["source_host"]), "FinishRevertMigration", uuid,
                          payloads.FinishRevertMigration(instance_uuid=uuid,
                                                         host=m["source_host"], migration=m),
                          cause=event)

    def finish_revert_migration(self, event: Event) -> None:
        """The source runs the old guest again (or keeps it off, if it was stopped)."""
        p = payload_of(event, payloads.FinishRevertMigration)
        uuid, m = p["instance_uuid"], p["migration"]
        record = self._record(uuid)
        if record is None:
            log.info("finish revert of %s: no instance here any more", uuid)
            return
        stopped = m["old_vm_state"] == states.STOPPED
        saved = self.cache.instance_dir(uuid) / "libvirt.xml"
        if self.driver.power_state_of(uuid) is None and saved.exists():
            self.driver.define(saved.read_text())  # one libvirt: the destination undefined it
        power = self.driver.power_state(uuid) if stopped else self.driver.power_on(uuid)
        self.tracker.set_stage(uuid, "stopped" if stopped else "active")
        disks = self.cache.disks_of(uuid, record.command["image"], record.command["flavor"])
        self.volumes_here(record, event)
        self._instance_event("InstanceResizeReverted", uuid, payloads.InstanceResizeReverted(
            migration_id=m["migration_id"], host=self.host, node=self.host, power_state=power,
            disks=disks, dest_host=str(m["dest_host"])), event)
        self.report_resources(cause=event)

    def _migration_failed(self, cause: Event, m: payloads.Migration, stage: str, reason: str,
                          rolled_back: bool | None = None) -> None:
        if rolled_back is None:
            rolled_back = m["kind"] != "evacuation"
        self._instance_event("InstanceMigrationFailed", cause.aggregate_id,
                             payloads.InstanceMigrationFailed(
                                 migration_id=m["migration_id"], stage=stage, reason=reason,
                                 source_host=m["source_host"], dest_host=m["dest_host"],
                                 rolled_back=rolled_back), cause)

    def _drop_here(self, uuid: str) -> None:
        """Domain and disks of the instance gone from this host, its claim dropped once
        this batch is safe; never its ports (they move with the instance)."""
        self.driver.destroy(uuid)
        self.cache.remove(uuid)
        self._releasing.add(uuid)

    # -- rescue, unrescue --------------------------------------------------------------
    def rescue_instance(self, event: Event) -> None:
        """Nova's libvirt rescue: the domain redefined with a rescue disk made from the
        image first and the instance's own disks after it; the usual XML kept to unrescue."""
        p = payload_of(event, payloads.RescueInstance)
        uuid = p["instance_uuid"]
        record = self._record(uuid)
        if record is None:
            return
        cmd, directory = record.command, self.cache.instance_dir(uuid)
        image = p["image"] or cmd["image"]
        own = self.cache.disks_of(uuid, cmd["image"], cmd["flavor"])
        disks = [self.cache.rescue_disk(uuid, image)] if image else []
        disks += [{**d, "device": _device(len(disks) + i)}
                  for i, d in enumerate(own + volume_disks(record))]
        ports = record.ordered_ports()
        saved = directory / "unrescue.xml"
        if not saved.exists():
            (directory / "libvirt.xml").replace(saved)
        self.driver.destroy(uuid)
        self.driver.spawn(self._domain_xml(uuid, cmd, disks, ports, image),
                          directory / "libvirt.xml")
        self.tracker.set_stage(uuid, "rescued")
        self._instance_event("InstanceRescued", uuid, payloads.InstanceRescued(
            host=self.host, power_state=self.driver.power_state(uuid)), event)

    def unrescue_instance(self, event: Event) -> None:
        uuid = payload_of(event, payloads.UnrescueInstance)["instance_uuid"]
        directory = self.cache.instance_dir(uuid)
        saved = directory / "unrescue.xml"
        if saved.exists():
            self.driver.destroy(uuid)
            self.driver.spawn(saved.read_text(), directory / "libvirt.xml")
            saved.unlink()
        (directory / "disk.rescue").unlink(missing_ok=True)
        self.tracker.set_stage(uuid, "active")
        self._instance_event("InstanceUnrescued", uuid, payloads.InstanceUnrescued(
            host=self.host, power_state=self.driver.power_on(uuid)), event)


# The commands nova-compute takes on its host's topic, by type: its consume loop's
# subscription (WANTS) and its header-level skipping are derived from this table.
HANDLERS: dict[str, Callable[[ComputeManager, Event], None]] = {
    "BuildAndRunInstance": ComputeManager.build_and_run_instance,
    "PortsAllocated": ComputeManager.ports_allocated,
    "PortsAllocationFailed": ComputeManager.ports_allocation_failed,
    "TerminateInstance": ComputeManager.terminate_instance,
    "RebootInstance": ComputeManager.reboot_instance,
    "StopInstance": ComputeManager.stop_instance,
    "StartInstance": ComputeManager.start_instance,
    "PrepareMigration": ComputeManager.prepare_migration,
    "MigrateInstance": ComputeManager.migrate_instance,
    "FinishMigration": ComputeManager.finish_migration,
    "CleanUpSource": ComputeManager.clean_up_source,
    "RevertMigration": ComputeManager.revert_migration,
    "FinishRevertMigration": ComputeManager.finish_revert_migration,
    "RescueInstance": ComputeManager.rescue_instance,
    "UnrescueInstance": ComputeManager.unrescue_instance,
    "BuildVolumeReady": ComputeManager.build_volume_ready,
    "BuildVolumeFailed": ComputeManager.build_volume_gone,
    "AttachVolume": ComputeManager.attach_volume,
    "DetachVolume": ComputeManager.detach_volume,
}
ComputeManager.WANTS = frozenset(HANDLERS)
