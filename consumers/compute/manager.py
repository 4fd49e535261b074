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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar
from uuid import uuid4

from consumers.compute.driver import LibvirtDriver, domain_name, domain_xml
from consumers.compute.image_cache import ImageCache
from consumers.compute.resource_tracker import BuildRecord, ResourceTracker
from novalog.consume import Record
from novalog.domain import states
from novalog.domain.claims import claim_of
from novalog.faults import crash_point
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)

BINARY = "nova-compute"


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


class ComputeManager:
    WANTS: ClassVar[frozenset[str]]  # = the keys of HANDLERS, below

    def __init__(self, ident: ComputeIdentity, tracker: ResourceTracker, driver: LibvirtDriver,
                 cache: ImageCache, publisher: Publisher, topics: Topics,
                 projection: LiveProjection | None = None) -> None:
        """`projection`: where the power-state sync sees a task in progress (and then
        changes nothing); without it every instance is synced."""
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
        self._vanished: set[str] = set()  # reported once each
        self._releasing: set[str] = set()  # claims to drop once this batch's events are safe
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
                          hypervisor_type="QEMU", hypervisor_hostname=self.host,
                          host_ip=self.ident.host_ip, version="novalog"),
                      correlation_id=self._start_correlation)
        self.report_resources()
        self.heartbeat()

    def init_host(self) -> None:
        """Like Nova's init_host: every instance this host holds as active has its domain
        running again (a restarted agent, or a hypervisor that lost its guests)."""
        running = set(self.driver.instance_uuids())
        for uuid in self.tracker.instances_at("active"):
            saved = self.cache.instance_dir(uuid) / "libvirt.xml"
            if uuid not in running and saved.exists():
                log.info("init_host: restoring the domain of %s", uuid)
                self.driver.spawn(saved.read_text(), saved)

    def periodic(self) -> None:
        """Called by the consume loop after every poll."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self.ident.report_interval_s:
            self.heartbeat()
        if now - self._last_report >= self.ident.resource_report_interval_s:
            self.report_resources()
        if now - self._last_sync >= self.ident.sync_power_state_interval_s:
            self.sync_power_states()

    def sync_power_states(self) -> None:
        """Nova's _sync_power_states: libvirt's view of each guest against the log's. A
        guest shut off behind novalog's back becomes stopped; one started behind its back
        while stopped is stopped again (as Nova calls its stop API); a vanished domain is
        reported (power_state 0); nothing changes while a task is in progress."""
        self._last_sync = time.monotonic()
        correlation = f"req-{self.host}-power-sync-{int(time.time())}"
        for stage in ("active", "stopped"):
            for uuid in self.tracker.instances_at(stage):
                server = self.projection.server(uuid) if self.projection else None
                if server is not None and server.task_state is not None:
                    continue
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
                    self.driver.power_off(uuid)

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
                          cpu_arch="x86_64", hypervisor_type="QEMU",
                          instance_uuids=u.instances),
                      correlation_id=cause.correlation_id if cause else self._start_correlation,
                      event_id=str(uuid4()))  # a snapshot, not a consequence: never de-duplicated

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
        self._instance_event("InstanceClaimAccepted", uuid, payloads.InstanceClaimAccepted(
            host=host, attempt=attempt, node=p["node"], vcpus=need.vcpus,
            memory_mb=need.memory_mb, disk_gb=need.disk_gb), event)
        if not duplicate:
            self.report_resources(cause=event)
        self._instance_event("InstanceNetworkingStarted", uuid,
                             payloads.InstanceNetworkingStarted(host=host, attempt=attempt),
                             event)
        if not p["networks"]:
            record = self._record(uuid)
            assert record is not None
            self._continue_build(record, event)
            return
        for net in p["networks"]:
            self.pub.emit(self.topics.network, "AllocatePorts", net["network_id"],
                          payloads.AllocatePorts(instance_uuid=uuid, host=host, attempt=attempt,
                                                 network=net),
                          cause=event, what=(net["network_id"],))

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
        record = self.tracker.add_ports(record.instance_uuid, network_id, p["ports"])
        if record is None:
            return
        wanted = [n["network_id"] for n in record.command["networks"]]
        if all(n in record.ports for n in wanted):
            self._continue_build(record, event)

    def ports_allocation_failed(self, event: Event) -> None:
        p = payload_of(event, payloads.PortsAllocationFailed)
        record = self._record(p["instance_uuid"])
        if record is None or record.attempt != p["attempt"]:
            return
        self._fail(record, event, BuildStepFailed("networking", p["reason"], retryable=False))

    # -- the build -------------------------------------------------------------------------
    def _continue_build(self, record: BuildRecord, cause: Event) -> None:
        cmd, uuid = record.command, record.instance_uuid
        host, attempt = self.host, record.attempt
        ports = [port for n in cmd["networks"] for port in record.ports.get(n["network_id"], [])]
        self._instance_event("InstanceNetworkAllocated", uuid, payloads.InstanceNetworkAllocated(
            host=host, attempt=attempt, ports=ports), cause)
        try:
            self.tracker.set_stage(uuid, "block_device_mapping")
            self._instance_event("InstanceBlockDeviceMappingStarted", uuid,
                                 payloads.InstanceBlockDeviceMappingStarted(host=host,
                                                                            attempt=attempt),
                                 cause)
            try:
                disks = self.cache.prepare_disks(uuid, cmd["image"], cmd["flavor"])
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
                directory = self.cache.instance_dir(uuid)
                xml = domain_xml(uuid, cmd["name"], cmd["flavor"], disks, ports,
                                 directory / "console.log")
                self.driver.spawn(xml, directory / "libvirt.xml")
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
        self.report_resources(cause=cause)

    def _fail(self, record: BuildRecord, cause: Event, failure: BuildStepFailed) -> None:
        """Release everything the build took, then say so."""
        uuid = record.instance_uuid
        log.warning("build of %s failed at %s on %s: %s", uuid, failure.stage, self.host,
                    failure.reason)
        try:
            self.driver.destroy(uuid)
        except Exception:
            log.exception("could not destroy the domain of %s", uuid)
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
            for net in record.command["networks"]:
                self.pub.emit(self.topics.network, "ReleasePorts", net["network_id"],
                              payloads.ReleasePorts(instance_uuid=uuid,
                                                    network_id=net["network_id"],
                                                    reason=reason, attempt=record.attempt),
                              cause=cause, what=(net["network_id"],))

    def _record(self, uuid: str) -> BuildRecord | None:
        """The instance's claim record, unless it is being released (later commands of the
        same batch, such as ports arriving for a build just deleted, then find none)."""
        return None if uuid in self._releasing else self.tracker.get(uuid)

    def flushed(self) -> None:
        """After the batch's events are acknowledged (the consume loop's after_flush): drop
        the claims released in it. Dropped before, a crash would lose the ReleasePorts
        still queued, and the re-delivered command, finding no claim, would not resend
        them; dropped after, a re-delivered command finds the claim and repeats them."""
        if not self._releasing:
            return
        for uuid in sorted(self._releasing):
            self.tracker.release(uuid)
        self._releasing.clear()
        self.report_resources()

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
        power = self.driver.reboot(uuid, hard)
        self.tracker.set_stage(uuid, "active")  # a hard reboot also starts a stopped guest
        self._instance_event("InstanceRebooted", uuid, payloads.InstanceRebooted(
            host=self.host, hard=hard, power_state=power), event)

    def stop_instance(self, event: Event) -> None:
        uuid = payload_of(event, payloads.StopInstance)["instance_uuid"]
        power = self.driver.power_off(uuid)
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
}
ComputeManager.WANTS = frozenset(HANDLERS)
