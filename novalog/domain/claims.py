"""What a flavor takes from a compute host: shared by the scheduler, which counts it
against its view, and the compute agent, whose claim is the final word."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import payloads


@dataclass(frozen=True)
class Claim:
    vcpus: int
    memory_mb: int
    disk_gb: int


def claim_of(flavor: payloads.Flavor) -> Claim:
    """What a flavor takes from a host: swap counts as disk, rounded up to whole GB."""
    swap_gb = -(-flavor["swap_mb"] // 1024)
    return Claim(vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
                 disk_gb=flavor["root_gb"] + flavor["ephemeral_gb"] + swap_gb)
