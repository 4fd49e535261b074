"""Test faults (novalog/faults.py) wrapped around the compute agent's parts, so the
build path itself has no test branches: a refusing tracker, a failing driver."""

from __future__ import annotations

from pathlib import Path

import libvirt

from consumers.compute.driver import LibvirtDriver
from consumers.compute.resource_tracker import ClaimResult, ResourceTracker
from novalog import faults
from novalog.domain.claims import Claim
from schemas import payloads


class RefusingTracker(ResourceTracker):
    """Every claim refused, as if the host were full (fault `refuse_claim`)."""

    def claim(self, instance: str, attempt: int, need: Claim,
              command: payloads.BuildAndRunInstance, *, stage: str = "networking",
              ports: dict[str, list[payloads.Port]] | None = None) -> ClaimResult:
        return ClaimResult(False, f"claim refused on {self.host} (test fault)")


class FailingDriver(LibvirtDriver):
    """Every spawn fails, after the disks are made (fault `fail_spawn`)."""

    def spawn(self, xml: str, dump_to: Path) -> libvirt.virDomain:
        raise RuntimeError(f"spawn failed on {self.host} (test fault)")


def driver_for(host: str, uri: str, deployment: str) -> LibvirtDriver:
    """The host's libvirt driver, or one whose spawns fail where a test asks."""
    driver = FailingDriver if faults.active("fail_spawn", host) else LibvirtDriver
    return driver(uri, host, deployment)


def tracker_for(host: str, tracker: ResourceTracker) -> ResourceTracker:
    """The host's resource tracker, or one that refuses every claim where a test asks."""
    if faults.active("refuse_claim", host):
        return RefusingTracker(tracker.pool, tracker.host, tracker.totals)
    return tracker
