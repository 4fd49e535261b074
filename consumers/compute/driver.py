"""The libvirt driver: domain XML from flavor, disks and ports; define, start, destroy.

The default URI is libvirt's test driver with a host definition file (CPUs,
memory), so many simulated hosts run on one machine through the real libvirt
API. `qemu:///system` (TCG: KVM guests hang on these machines) is a change of
NOVALOG_LIBVIRT_URI. Several compute hosts may share one real libvirt (qemu1 and
qemu2 on one machine, or two deployments' qemu1): each domain then names its owner
(deployment / host) in novalog's metadata, and a host lists, counts and destroys
only its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import libvirt

from novalog.domain import states
from novalog.domain.instance import instance_name
from schemas import payloads

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
NOVALOG_NS = "https://novalog.dev/xmlns/libvirt/1"
SHUTDOWN_RETRY_S = 10.0  # Nova's shutdown_retry_interval: the guest is asked again

log = logging.getLogger(__name__)
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raised, not printed too


POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: states.NOSTATE, libvirt.VIR_DOMAIN_RUNNING: states.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: states.RUNNING, libvirt.VIR_DOMAIN_PAUSED: states.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: states.SHUTDOWN, libvirt.VIR_DOMAIN_SHUTOFF: states.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: states.CRASHED, libvirt.VIR_DOMAIN_PMSUSPENDED: states.SUSPENDED,
}


def host_definition(vcpus: int, memory_mb: int) -> str:
    """A test-driver node description: libvirt reports these as the host's resources."""
    return (f"<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets>"
            f"<cores>{vcpus}</cores><threads>1</threads><active>{vcpus}</active>"
            f"<mhz>2400</mhz><model>x86_64</model></cpu>"
            f"<memory>{memory_mb * 1024}</memory></node>")


def domain_name(instance_uuid: str) -> str:
    return instance_name(instance_uuid)


def _disk_files(domain: ElementTree.Element) -> dict[str, str]:
    """device -> source file of a domain definition's disks."""
    out = {}
    for disk in domain.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if source is not None and target is not None:
            out[str(target.get("dev"))] = str(source.get("file"))
    return out


def disk_element(device: str, path: str, fmt: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)}/>"
            f"<source file={quoteattr(path)}/><target dev={quoteattr(device)} bus='virtio'/>"
            f"</disk>")


@dataclass(frozen=True)
class DirectBoot:
    """Nova's boot from an image with kernel_id / ramdisk_id: QEMU loads them itself."""

    kernel: str
    ramdisk: str | None
    cmdline: str


def os_xml(boot: DirectBoot | None) -> str:
    if boot is None:
        return "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
    initrd = f"<initrd>{escape(boot.ramdisk)}</initrd>" if boot.ramdisk else ""
    return (f"<os><type arch='x86_64' machine='pc'>hvm</type>"
            f"<kernel>{escape(boot.kernel)}</kernel>{initrd}"
            f"<cmdline>{escape(boot.cmdline)}</cmdline></os>")


def config_drive_element(path: Path) -> str:
    """Nova's config drive for an i440fx guest: a read-only IDE CD-ROM, the bus's last
    device (hdd)."""
    return (f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(str(path))}/><target dev='hdd' bus='ide'/><readonly/>"
            f"</disk>")


def domain_xml(instance_uuid: str, name: str, flavor: payloads.Flavor,
               disks: list[payloads.Disk], ports: list[payloads.Port],
               console_log: Path, owner: str, boot: DirectBoot | None = None,
               config_drive: Path | None = None) -> str:
    """What Nova's libvirt driver would define, reduced to what a boot needs: TCG, ACPI
    (without it a guest's power-off never ends the domain), the serial console appended
    to a file (a reboot adds to it), no balloon, the instance uuid as the domain's."""
    disk_xml = "".join(disk_element(d["device"], d["path"], d["format"]) for d in disks)
    if config_drive is not None:
        disk_xml += config_drive_element(config_drive)
    nic_xml = "".join(
        f"<interface type='ethernet'><mac address={quoteattr(p['mac_address'])}/>"
        f"<model type='virtio'/></interface>" for p in ports)
    return (
        f"<domain type='qemu'><name>{domain_name(instance_uuid)}</name>"
        f"<uuid>{instance_uuid}</uuid>"
        f"<metadata><nova:instance xmlns:nova='{NOVA_NS}'><nova:name>{escape(name)}</nova:name>"
        f"<nova:flavor name={quoteattr(flavor['name'])}><nova:memory>{flavor['memory_mb']}"
        f"</nova:memory><nova:vcpus>{flavor['vcpus']}</nova:vcpus></nova:flavor>"
        f"</nova:instance><novalog:instance xmlns:novalog='{NOVALOG_NS}'>"
        f"<novalog:owner>{escape(owner)}</novalog:owner></novalog:instance></metadata>"
        f"<memory unit='MiB'>{flavor['memory_mb']}</memory><vcpu>{flavor['vcpus']}</vcpu>"
        f"{os_xml(boot)}"
        f"<features><acpi/><apic/></features><clock offset='utc'/>"
        f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
        f"<on_crash>destroy</on_crash>"
        f"<devices>{disk_xml}{nic_xml}<serial type='file'>"
        f"<source path={quoteattr(str(console_log))} append='on'/></serial>"
        f"<memballoon model='none'/></devices></domain>"
    )


def owner_of(dom: libvirt.virDomain, live: bool = False) -> str | None:
    """The owner in the novalog metadata of the domain's persistent definition (a move's
    destination redefines a running domain: the live one keeps the source's until the
    next start), or of the running one; None for a domain novalog did not define."""
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NOVALOG_NS, flags)
    except libvirt.libvirtError:
        return None
    found = ElementTree.fromstring(xml).find("owner")
    return found.text if found is not None else None


def destroy_deployment(uri: str, deployment: str) -> list[str]:
    """Destroy and undefine every domain a deployment's hosts own on this libvirt (a
    bench's or a test's cloud torn down with guests still running); their uuids."""
    conn = libvirt.open(uri)
    gone = []
    try:
        for dom in conn.listAllDomains():
            if (owner_of(dom) or "").startswith(f"{deployment}/"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
                gone.append(dom.UUIDString())
    finally:
        conn.close()
    return gone


_EVENT_LOOP: list[threading.Thread] = []  # libvirt's default event loop, one per process


def _start_event_loop() -> None:
    """libvirt delivers domain events only to a process that runs its event loop, which
    must be registered before the connection is opened."""
    if _EVENT_LOOP:
        return
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
    thread.start()
    _EVENT_LOOP.append(thread)


class LibvirtDriver:
    """One lazily opened connection, used from the agent's thread only. `host` is the
    compute host it serves and `deployment` the cloud (its topic prefix): on a shared
    (real) libvirt, `owner` is written into each domain it defines, and only the
    domains it owns are touched."""

    def __init__(self, uri: str, host: str = "", deployment: str = "") -> None:
        self.uri = uri
        self.host = host
        self.owner = f"{deployment}/{host}" if deployment else host
        self.shared = not uri.startswith("test:")  # a real hypervisor, maybe other hosts'
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._changed: set[str] = set()  # uuids with a lifecycle event since the last drain
        self._callback: int | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None:
                if self.shared:
                    _start_event_loop()
                self._conn = libvirt.open(self.uri)
                if self.shared:  # a guest that powers itself off is seen at once
                    self._callback = self._conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
            return self._conn

    def _lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, _event: int,
                   _detail: int, _opaque: object) -> None:
        with self._lock:
            self._changed.add(dom.UUIDString())

    def changed_domains(self) -> set[str]:
        """The domains libvirt reported a start, stop, crash or shutdown of since the last
        call (what Nova's handle_lifecycle_event syncs at once)."""
        with self._lock:
            out, self._changed = self._changed, set()
        return out

    def hypervisor_type(self) -> str:
        """As libvirt names it: QEMU, or TEST for a simulated host."""
        return str(self.conn.getType())

    def host_resources(self) -> tuple[int, int]:
        """(vCPUs, memory MB) as libvirt reports the host: the whole machine's memory for
        a real one (getInfo counts only NUMA node 0's on some machines)."""
        info = self.conn.getInfo()
        if not self.shared:
            return int(info[2]), int(info[1])
        total_kib = self.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)["total"]
        return int(info[2]), int(total_kib) // 1024

    def owner_of(self, dom: libvirt.virDomain) -> str | None:
        """The deployment / host a domain belongs to."""
        return owner_of(dom)

    def _owned(self, dom: libvirt.virDomain) -> bool:
        return not self.shared or owner_of(dom) == self.owner

    def owned_elsewhere(self, instance_uuid: str) -> bool:
        """The domain exists on this shared libvirt as another host's (a move's
        destination took it): this host must neither start nor redefine it."""
        if not self.shared:
            return False
        try:
            dom = self.conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError:
            return False
        owner = owner_of(dom)
        return owner is not None and owner != self.owner

    def spawn(self, xml: str, dump_to: Path) -> libvirt.virDomain:
        """Define (idempotent: same uuid and name) and start unless already running. On a
        shared libvirt a domain still running as another host's (a live migration or an
        evacuation between two hosts of one machine) is started again: it must run on
        this host's disks, not on the ones its source is about to remove."""
        restart = False
        if self.shared:
            try:
                old = self.conn.lookupByUUIDString(str(ElementTree.fromstring(xml).findtext(
                    "uuid")))
                restart = bool(old.isActive()) and owner_of(old, live=True) != self.owner
            except libvirt.libvirtError:
                pass
        dom = self.conn.defineXML(xml)
        if restart:
            log.info("%s ran as %s's; starting it again here", dom.UUIDString(),
                     owner_of(dom, live=True))
            dom.destroy()
        if not dom.isActive():
            dom.create()
        dump_to.write_text(dom.XMLDesc())  # what libvirt accepted, like Nova's libvirt.xml
        return dom

    def define(self, xml: str) -> libvirt.virDomain:
        """Define without starting (a stopped guest known again after a restart)."""
        return self.conn.defineXML(xml)

    def destroy(self, instance_uuid: str) -> None:
        """Stop and undefine the instance's domain if it exists and is this host's (after
        a move on one machine, the destination's domain has the same uuid)."""
        try:
            dom = self.conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError:
            return
        if not self._owned(dom):
            log.info("domain of %s belongs to %s now; left alone", instance_uuid,
                     self.owner_of(dom))
            return
        if dom.isActive():
            dom.destroy()
        dom.undefine()

    def _shut_down(self, dom: libvirt.virDomain, timeout_s: float) -> bool:
        """Nova's _clean_shutdown: ask the guest (ACPI power button), again every
        SHUTDOWN_RETRY_S, until it is off or the timeout passes; whether it went off."""
        deadline = time.monotonic() + timeout_s
        asked: float | None = None
        while dom.isActive():
            now = time.monotonic()
            if now >= deadline:
                return False
            if asked is None or now - asked >= SHUTDOWN_RETRY_S:
                try:
                    dom.shutdown()
                except libvirt.libvirtError:
                    if not dom.isActive():
                        break
                    raise
                asked = now
                if not dom.isActive():  # the test driver's shutdown is immediate
                    break
            time.sleep(0.1)
        return True

    def reboot(self, instance_uuid: str, hard: bool, timeout_s: float = 120.0) -> int:
        """Nova's libvirt reboot. SOFT: the guest is asked to shut down (ACPI) and started
        again once it is off; if it does not go off within the timeout, a hard reboot.
        HARD: the domain is destroyed and started again. Returns the power state after."""
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if not hard and dom.isActive() and not self._shut_down(dom, timeout_s):
            log.warning("%s did not shut down within %.0f s; rebooting it hard",
                        instance_uuid, timeout_s)
        if dom.isActive():
            dom.destroy()
        dom.create()
        return self.power_state(instance_uuid)

    def power_off(self, instance_uuid: str, timeout_s: float = 60.0) -> int:
        """A clean shutdown within Nova's shutdown_timeout, else the domain destroyed."""
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if dom.isActive() and not self._shut_down(dom, timeout_s):
            log.warning("%s did not shut down within %.0f s; powering it off", instance_uuid,
                        timeout_s)
            dom.destroy()
        return self.power_state(instance_uuid)

    def power_on(self, instance_uuid: str) -> int:
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if not dom.isActive():
            dom.create()
        return self.power_state(instance_uuid)

    def power_state_of(self, instance_uuid: str) -> int | None:
        """The domain's power state, or None when libvirt has no such domain of ours."""
        try:
            dom = self.conn.lookupByUUIDString(instance_uuid)
            return POWER_STATES.get(dom.state()[0], states.NOSTATE) if self._owned(dom) \
                else None
        except libvirt.libvirtError:
            return None

    def power_state(self, instance_uuid: str) -> int:
        """Nova's power_state code for the domain (nova/virt/libvirt's LIBVIRT_POWER_STATE)."""
        state = self.conn.lookupByUUIDString(instance_uuid).state()[0]
        return POWER_STATES.get(state, states.NOSTATE)

    def running_count(self) -> int:
        """Active domains, counted by libvirt (no listing on a host's own test driver:
        reported twice per boot)."""
        if not self.shared:
            return int(self.conn.numOfDomains())
        return sum(1 for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                   if self._owned(d))

    def instance_uuids(self) -> list[str]:
        return sorted(d.UUIDString() for d in self.conn.listAllDomains() if self._owned(d))

    # -- volumes: hot-plug where libvirt can, the persistent definition where it cannot ----
    def attach_disk(self, instance_uuid: str, path: str, fmt: str, dump_to: Path) -> str:
        """Plug the file in as the next free virtio disk (live and in the persistent
        definition, as Nova's attach does) and return its device; the device it has when
        it is plugged in already (a repeated attach). The test driver cannot hot-plug
        (no virDomainAttachDeviceFlags): there the persistent definition takes the disk,
        which the guest sees from its next boot."""
        dom = self.conn.lookupByUUIDString(instance_uuid)
        config = ElementTree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        targets = _disk_files(config)
        for dev, source in targets.items():
            if source == path:
                return str(dev)
        device = next(name for name in (f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
                      if name not in targets)
        xml = disk_element(device, path, fmt)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        try:
            dom.attachDeviceFlags(xml, flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            devices = config.find("devices")
            assert devices is not None
            devices.append(ElementTree.fromstring(xml))
            dom = self.conn.defineXML(ElementTree.tostring(config, encoding="unicode"))
        dump_to.write_text(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return device

    def detach_disk(self, instance_uuid: str, path: str, dump_to: Path) -> None:
        """Unplug the file (live and persistent); nothing when it is not there."""
        try:
            dom = self.conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError:
            return  # no domain: nothing holds the volume
        config = ElementTree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = config.find("devices")
        assert devices is not None
        found = [d for d in devices.iterfind("disk")
                 if d.find("source") is not None and d.find("source").get("file") == path]  # type: ignore[union-attr]
        if not found:
            return
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        try:
            dom.detachDeviceFlags(ElementTree.tostring(found[0], encoding="unicode"), flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            devices.remove(found[0])
            dom = self.conn.defineXML(ElementTree.tostring(config, encoding="unicode"))
        dump_to.write_text(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def disk_sources(self, instance_uuid: str, inactive: bool = True) -> dict[str, str]:
        """device -> file of the domain's disks (its persistent definition by default)."""
        dom = self.conn.lookupByUUIDString(instance_uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
        return _disk_files(ElementTree.fromstring(xml))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if self._callback is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        self._conn.domainEventDeregisterAny(self._callback)
                self._conn.close()
                self._conn = None
