"""The resource tracker: atomic claims against a host's totals and allocation ratios.

Claims live in Postgres (`compute_claims`) so they survive an agent restart; a
claim takes a row lock on its host first, so concurrent builds on one host are
serialised and the last free resources go to exactly one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from typing_extensions import TypedDict

from novalog.domain.claims import Claim
from schemas import payloads


@dataclass(frozen=True)
class HostTotals:
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float


@dataclass(frozen=True)
class Usage:
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    instances: list[str]


@dataclass(frozen=True)
class ClaimResult:
    accepted: bool
    reason: str = ""
    duplicate: bool = False  # this instance already holds a claim here (re-delivery)


@dataclass(frozen=True)
class BuildRecord:
    """A claim row: where the build of one instance on this host stands."""

    instance_uuid: str
    attempt: int
    stage: str
    command: payloads.BuildAndRunInstance
    ports: dict[str, list[payloads.Port]]  # by port_key (the network id, for slot 0)
    volumes: dict[str, VolumeDisk] = field(default_factory=dict)  # by volume id

    def ordered_ports(self) -> list[payloads.Port]:
        """The instance's ports in the order of the request's networks (its NICs)."""
        return [port for key, _net, _slot in port_slots(self.command["networks"])
                for port in self.ports.get(key, [])]


def port_key(network_id: str, slot: int) -> str:
    """Where a claim keeps one requested network entry's ports: the network id for the
    first entry (as before slots existed), `<id>#<slot>` for a repeated one."""
    return network_id if slot == 0 else f"{network_id}#{slot}"


def port_slots(networks: list[payloads.NetworkToAttach],
               ) -> list[tuple[str, payloads.NetworkToAttach, int]]:
    """(port key, network, slot) per requested entry: Nova allows one network twice."""
    seen: dict[str, int] = {}
    out = []
    for net in networks:
        slot = seen.get(net["network_id"], 0)
        seen[net["network_id"]] = slot + 1
        out.append((port_key(net["network_id"], slot), net, slot))
    return out


class VolumeDisk(TypedDict):
    """A volume in the instance's domain: its disk, and what a delete does with it."""

    disk: payloads.Disk
    attachment_id: str
    delete_on_termination: bool


class ResourceTracker:
    def __init__(self, pool: ConnectionPool, host: str, totals: HostTotals) -> None:
        self.pool = pool
        self.host = host
        self.totals = totals

    def register(self) -> None:
        t = self.totals
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO compute_hosts VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (host) DO UPDATE SET vcpus = excluded.vcpus, "
                "memory_mb = excluded.memory_mb, local_gb = excluded.local_gb, "
                "cpu_allocation_ratio = excluded.cpu_allocation_ratio, "
                "ram_allocation_ratio = excluded.ram_allocation_ratio, "
                "disk_allocation_ratio = excluded.disk_allocation_ratio",
                (self.host, t.vcpus, t.memory_mb, t.local_gb, t.cpu_allocation_ratio,
                 t.ram_allocation_ratio, t.disk_allocation_ratio))

    def claim(self, instance: str, attempt: int, need: Claim,
              command: payloads.BuildAndRunInstance, *, stage: str = "networking",
              ports: dict[str, list[payloads.Port]] | None = None) -> ClaimResult:
        """Reserve `need` for `instance`, or say which resource does not fit. A build
        starts at `networking`; a migration's destination at `incoming`, with the ports
        the instance keeps."""
        t = self.totals
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM compute_hosts WHERE host = %s FOR UPDATE", (self.host,))
            existing = conn.execute(
                "SELECT attempt FROM compute_claims WHERE host = %s AND instance_uuid = %s",
                (self.host, instance)).fetchone()
            if existing is not None:
                return ClaimResult(True, duplicate=True)
            row = conn.execute(
                "SELECT COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mb), 0), "
                "COALESCE(SUM(disk_gb), 0) FROM compute_claims WHERE host = %s",
                (self.host,)).fetchone()
            assert row is not None
            used_cpu, used_ram, used_disk = (int(v) for v in row)
            checks = [
                ("RAM", need.memory_mb, t.memory_mb * t.ram_allocation_ratio - used_ram, "MB"),
                ("vCPU", need.vcpus, t.vcpus * t.cpu_allocation_ratio - used_cpu, ""),
                ("disk", need.disk_gb, t.local_gb * t.disk_allocation_ratio - used_disk, "GB"),
            ]
            for (what, wanted, free, unit), total in zip(
                    checks, (t.memory_mb, t.vcpus, t.local_gb), strict=True):
                if wanted > total:  # placement's max_unit: no instance larger than the host
                    return ClaimResult(False, f"Insufficient {what} on {self.host}: "
                                              f"{wanted}{unit} requested, the host has "
                                              f"{total}{unit}")
                if wanted > free:
                    return ClaimResult(False, f"Insufficient {what} on {self.host}: "
                                              f"{wanted}{unit} requested, {max(free, 0):g}{unit}"
                                              f" free")
            violation = self._group_violation(conn, instance, command.get("server_group"))
            if violation:
                return ClaimResult(False, violation)
            conn.execute(
                "INSERT INTO compute_claims (host, instance_uuid, attempt, vcpus, memory_mb, "
                "disk_gb, stage, command, ports) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (self.host, instance, attempt, need.vcpus, need.memory_mb, need.disk_gb,
                 stage, Jsonb(command), Jsonb(ports or {})))
        return ClaimResult(True)

    def _group_violation(self, conn: Connection[Any], instance: str,
                         group: payloads.ServerGroupPolicy | None) -> str | None:
        """Nova's _validate_instance_group_policy, under the host's claim lock: a racing
        build the scheduler could not see must not break the group's policy here."""
        if group is None or group["policy"] not in ("affinity", "anti-affinity"):
            return None  # the soft policies are the weighers' business only
        hosts = {r[0] for r in conn.execute(
            "SELECT host FROM compute_claims WHERE command->'server_group'->>'group_id' = %s "
            "AND instance_uuid <> %s", (group["group_id"], instance)).fetchall()}
        if group["policy"] == "anti-affinity" and self.host in hosts:
            return "Anti-affinity instance group policy was violated."
        if group["policy"] == "affinity" and hosts and self.host not in hosts:
            return "Affinity instance group policy was violated."
        return None

    def get(self, instance: str) -> BuildRecord | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT attempt, stage, command, ports, volumes FROM compute_claims "
                "WHERE host = %s AND instance_uuid = %s", (self.host, instance)).fetchone()
        return BuildRecord(instance, row[0], row[1], row[2], row[3], row[4]) if row else None

    def add_ports(self, instance: str, key: str,
                  ports: list[payloads.Port]) -> BuildRecord | None:
        """Record one requested entry's ports (under its port_key); returns the updated
        build (None when released)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE compute_claims SET ports = ports || %s WHERE host = %s "
                "AND instance_uuid = %s RETURNING attempt, stage, command, ports, volumes",
                (Jsonb({key: ports}), self.host, instance)).fetchone()
        return BuildRecord(instance, row[0], row[1], row[2], row[3], row[4]) if row else None

    def add_volume(self, instance: str, volume_id: str, volume: VolumeDisk) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE compute_claims SET volumes = volumes || %s WHERE host = %s "
                "AND instance_uuid = %s", (Jsonb({volume_id: volume}), self.host, instance))

    def remove_volume(self, instance: str, volume_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE compute_claims SET volumes = volumes - %s WHERE host = %s "
                "AND instance_uuid = %s", (volume_id, self.host, instance))

    def set_stage(self, instance: str, stage: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE compute_claims SET stage = %s WHERE host = %s "
                         "AND instance_uuid = %s", (stage, self.host, instance))

    def release(self, instance: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM compute_claims WHERE host = %s AND instance_uuid = %s",
                         (self.host, instance))

    def instances(self) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT instance_uuid FROM compute_claims WHERE host = %s "
                                "ORDER BY instance_uuid", (self.host,)).fetchall()
        return [r[0] for r in rows]

    def instances_at(self, stage: str) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT instance_uuid FROM compute_claims WHERE host = %s AND "
                                "stage = %s", (self.host, stage)).fetchall()
        return [r[0] for r in rows]

    def usage(self) -> Usage:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT instance_uuid, vcpus, memory_mb, disk_gb FROM compute_claims "
                "WHERE host = %s ORDER BY instance_uuid", (self.host,)).fetchall()
        return Usage(sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows),
                     [r[0] for r in rows])
