"""What a flavor takes from a compute host: shared by the scheduler, which counts it
against its view, and the compute agent, whose claim is the final word."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Claim:
    vcpus: int
    memory_mb: int
    disk_gb: int


def claim_of(flavor: dict[str, Any]) -> Claim:
    """What a flavor takes from a host: swap counts as disk, rounded up to whole GB."""
    swap_gb = -(-int(flavor.get("swap_mb", 0)) // 1024)
    return Claim(vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
                 disk_gb=flavor["root_gb"] + flavor.get("ephemeral_gb", 0) + swap_gb)
