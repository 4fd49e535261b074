"""The libvirt driver: domain XML from flavor, disks and ports; define, start, destroy.

The default URI is libvirt's test driver with a host definition file (CPUs,
memory), so many simulated hosts run on one machine through the real libvirt
API. `qemu:///system` (TCG when KVM is absent) is a change of NOVALOG_LIBVIRT_URI.
"""

from __future__ import annotations

import threading
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import libvirt

from novalog.domain import states
from schemas import payloads

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"


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
    return f"instance-{instance_uuid}"


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


def domain_xml(instance_uuid: str, name: str, flavor: payloads.Flavor,
               disks: list[payloads.Disk], ports: list[payloads.Port],
               console_log: Path) -> str:
    """What Nova's libvirt driver would define, reduced to what a boot needs."""
    disk_xml = "".join(disk_element(d["device"], d["path"], d["format"]) for d in disks)
    nic_xml = "".join(
        f"<interface type='ethernet'><mac address={quoteattr(p['mac_address'])}/>"
        f"<model type='virtio'/></interface>" for p in ports)
    return (
        f"<domain type='qemu'><name>{domain_name(instance_uuid)}</name>"
        f"<uuid>{instance_uuid}</uuid>"
        f"<metadata><nova:instance xmlns:nova='{NOVA_NS}'><nova:name>{escape(name)}</nova:name>"
        f"<nova:flavor name={quoteattr(flavor['name'])}><nova:memory>{flavor['memory_mb']}"
        f"</nova:memory><nova:vcpus>{flavor['vcpus']}</nova:vcpus></nova:flavor>"
        f"</nova:instance></metadata>"
        f"<memory unit='MiB'>{flavor['memory_mb']}</memory><vcpu>{flavor['vcpus']}</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        f"<features><acpi/><apic/></features><clock offset='utc'/>"
        f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
        f"<on_crash>destroy</on_crash>"
        f"<devices>{disk_xml}{nic_xml}<serial type='file'>"
        f"<source path={quoteattr(str(console_log))}/></serial>"
        f"<memballoon model='none'/></devices></domain>"
    )


class LibvirtDriver:
    """One lazily opened connection, used from the agent's thread only."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None:
                self._conn = libvirt.open(self.uri)
            return self._conn

    def host_resources(self) -> tuple[int, int]:
        """(vCPUs, memory MB) as libvirt reports the host."""
        info = self.conn.getInfo()
        return int(info[2]), int(info[1])

    def spawn(self, xml: str, dump_to: Path) -> libvirt.virDomain:
        """Define (idempotent: same uuid and name) and start unless already running."""
        dom = self.conn.defineXML(xml)
        if not dom.isActive():
            dom.create()
        dump_to.write_text(dom.XMLDesc())  # what libvirt accepted, like Nova's libvirt.xml
        return dom

    def define(self, xml: str) -> libvirt.virDomain:
        """Define without starting (a stopped guest known again after a restart)."""
        return self.conn.defineXML(xml)

    def destroy(self, instance_uuid: str) -> None:
        """Stop and undefine the instance's domain if it exists."""
        try:
            dom = self.conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefine()

    def reboot(self, instance_uuid: str, hard: bool) -> int:
        """SOFT: the guest is asked to reboot (ACPI); HARD: the domain is destroyed and
        started again, as Nova's libvirt driver does. Returns the power state after."""
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if hard or not dom.isActive():
            if dom.isActive():
                dom.destroy()
            dom.create()
        else:
            dom.reboot(0)
        return self.power_state(instance_uuid)

    def power_off(self, instance_uuid: str) -> int:
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if dom.isActive():
            dom.shutdown()  # a clean shutdown; the test driver shuts off at once
            if dom.isActive():
                dom.destroy()
        return self.power_state(instance_uuid)

    def power_on(self, instance_uuid: str) -> int:
        dom = self.conn.lookupByUUIDString(instance_uuid)
        if not dom.isActive():
            dom.create()
        return self.power_state(instance_uuid)

    def power_state_of(self, instance_uuid: str) -> int | None:
        """The domain's power state, or None when libvirt has no such domain."""
        try:
            return self.power_state(instance_uuid)
        except libvirt.libvirtError:
            return None

    def power_state(self, instance_uuid: str) -> int:
        """Nova's power_state code for the domain (nova/virt/libvirt's LIBVIRT_POWER_STATE)."""
        state = self.conn.lookupByUUIDString(instance_uuid).state()[0]
        return POWER_STATES.get(state, states.NOSTATE)

    def running_count(self) -> int:
        """Active domains, counted by libvirt (no listing: reported twice per boot)."""
        return int(self.conn.numOfDomains())

    def instance_uuids(self) -> list[str]:
        return sorted(d.UUIDString() for d in self.conn.listAllDomains())

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
                self._conn.close()
                self._conn = None
