"""IP address management, pure and deterministic.

Allocation takes the lowest free address of the allocation range; the MAC and
port id derive from (network, address). Replaying the same facts therefore
rebuilds exactly the same pools, and re-handling a command after a crash yields
exactly the same port, so re-delivery never hands out a second address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import dataclass, field, replace

from schemas import payloads

PORT_NAMESPACE = uuid.UUID("6f1c1b1e-3d2a-4c55-9a57-2b1d0c9e7a10")


class PoolExhausted(Exception):
    """No free address left in the network's allocation range."""


@dataclass(frozen=True)
class Port:
    port_id: str
    network_id: str
    network_name: str
    ip_address: str
    mac_address: str
    instance_uuid: str
    attempt: int = 0  # the build attempt the port is bound for
    host: str = ""
    slot: int = 0  # which of the instance's entries for this network

    def as_payload(self) -> payloads.Port:
        """The novalog.instance.Port record."""
        return payloads.Port(port_id=self.port_id, network_id=self.network_id,
                             network_name=self.network_name, ip_address=self.ip_address,
                             mac_address=self.mac_address)


def mac_for(network_id: str, ip: str, taken: set[str]) -> str:
    """fa:16:3e (OpenStack's prefix) + 3 bytes from a hash; bumped on the rare collision."""
    n = 0
    while True:
        digest = hashlib.sha256(f"{network_id}/{ip}/{n}".encode()).digest()
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
        n += 1


@dataclass
class Pool:
    network_id: str
    name: str
    cidr: str
    gateway_ip: str
    allocation_start: str
    allocation_end: str
    ports: dict[str, Port] = field(default_factory=dict)  # ip -> port
    # indexes kept with `ports`, so an allocation does not scan every port of the pool
    _by_instance: dict[str, dict[str, None]] = field(default_factory=dict, repr=False)
    _macs: set[str] = field(default_factory=set, repr=False)
    _lowest_free: int = field(default=0, repr=False)  # no free address below this one

    @classmethod
    def from_network(cls, net: payloads.NetworkToAttach) -> Pool:
        """From a NetworkToAttach record; refuses a range outside the CIDR."""
        network = ipaddress.ip_network(net["cidr"])
        start = ipaddress.ip_address(net["allocation_start"])
        end = ipaddress.ip_address(net["allocation_end"])
        if start not in network or end not in network or int(start) > int(end):
            raise ValueError(f"allocation range {start}-{end} is not within {network}")
        return cls(net["network_id"], net["name"], net["cidr"], net["gateway_ip"],
                   net["allocation_start"], net["allocation_end"])

    def ports_of(self, instance_uuid: str, attempt: int = 0) -> list[Port]:
        """The instance's ports; with `attempt`, only those bound for that attempt."""
        held = (self.ports[ip] for ip in self._by_instance.get(instance_uuid, {}))
        return [p for p in held if not attempt or p.attempt == attempt]

    def allocate(self, instance_uuid: str, fixed_ip: str | None = None, *, attempt: int = 0,
                 host: str = "", slot: int = 0) -> Port:
        """The instance's port `slot` on this network, bound to `attempt`: the existing
        one (re-bound, as Neutron moves a port to the new host), or a new one."""
        existing = [p for p in self.ports_of(instance_uuid) if p.slot == slot]
        if existing:
            return replace(existing[0], attempt=attempt, host=host)
        if fixed_ip is not None:
            ip = ipaddress.ip_address(fixed_ip)
            if ip not in ipaddress.ip_network(self.cidr) or str(ip) == self.gateway_ip:
                raise PoolExhausted(f"fixed IP {fixed_ip} is not usable on {self.name}")
            if str(ip) in self.ports:
                raise PoolExhausted(f"fixed IP {fixed_ip} is already in use on {self.name}")
            return replace(self._port(instance_uuid, str(ip)), attempt=attempt, host=host,
                           slot=slot)
        first = max(int(ipaddress.ip_address(self.allocation_start)), self._lowest_free)
        last = int(ipaddress.ip_address(self.allocation_end))
        for n in range(first, last + 1):
            candidate = str(ipaddress.IPv4Address(n))
            if candidate not in self.ports and candidate != self.gateway_ip:
                self._lowest_free = n
                return replace(self._port(instance_uuid, candidate), attempt=attempt, host=host,
                               slot=slot)
        raise PoolExhausted(f"no free IP address on network {self.name} ({self.cidr})")

    def _port(self, instance_uuid: str, ip: str) -> Port:
        taken = self._macs
        return Port(
            port_id=str(uuid.uuid5(PORT_NAMESPACE, f"{self.network_id}/{ip}/{instance_uuid}")),
            network_id=self.network_id, network_name=self.name, ip_address=ip,
            mac_address=mac_for(self.network_id, ip, taken), instance_uuid=instance_uuid,
        )

    def apply_allocated(self, p: payloads.IpAllocated) -> None:
        """An IpAllocated fact; applying it twice changes nothing."""
        port = Port(p["port_id"], p["network_id"], self.name, p["ip_address"],
                    p["mac_address"], p["instance_uuid"], p.get("attempt", 0), p.get("host", ""),
                    p.get("slot", 0))
        old = self.ports.get(port.ip_address)
        if old is not None:
            self._unindex(old)
        self.ports[port.ip_address] = port  # an existing key keeps its place, as before
        self._by_instance.setdefault(port.instance_uuid, {})[port.ip_address] = None
        self._macs.add(port.mac_address)

    def apply_released(self, p: payloads.IpReleased) -> None:
        """An IpReleased fact; only frees the address if that port still holds it."""
        held = self.ports.get(p["ip_address"])
        if held is not None and held.port_id == p["port_id"]:
            self._unindex(self.ports.pop(p["ip_address"]))
            self._lowest_free = min(self._lowest_free, int(ipaddress.ip_address(
                p["ip_address"])))

    def _unindex(self, port: Port) -> None:
        ips = self._by_instance.get(port.instance_uuid)
        if ips is not None:
            ips.pop(port.ip_address, None)
            if not ips:
                del self._by_instance[port.instance_uuid]
        self._macs.discard(port.mac_address)
