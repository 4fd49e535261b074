"""The `compute` role: configuration from the environment, then the agent's consume loop
(one host, or a fleet of simulated hosts sharing one consumer, producer and pool)."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from psycopg_pool import ConnectionPool

from consumers.compute.driver import host_definition
from consumers.compute.fault_injection import driver_for, tracker_for
from consumers.compute.image_cache import ImageCache
from consumers.compute.manager import ComputeIdentity, ComputeManager
from consumers.compute.resource_tracker import HostTotals, ResourceTracker
from novalog.consoles import instances_dir
from novalog.consume import ConsumeLoop, Record, is_outage
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import COMMAND_PARTITIONS, EventProducer, Topics, ensure_topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from novalog.settings import ComputeSettings, Settings
from novalog.tokens import unseal
from schemas import Event


def libvirt_uri(config: ComputeSettings, state_dir: Path) -> str:
    """The configured URI, or a test-driver host made of this agent's CPUs and memory."""
    if config.libvirt_uri:
        return config.libvirt_uri
    state_dir.mkdir(parents=True, exist_ok=True)
    definition = state_dir / "host.xml"
    definition.write_text(host_definition(config.vcpus, config.memory_mb))
    return f"test://{definition}"


log = logging.getLogger(__name__)

FLEET_LANES = 8  # hosts of a fleet handled at once (threads whose waits overlap); with
# its pool of lanes + 2 connections, ten fleets stay well inside Postgres's 200


def agent(settings: Settings, host: str, pool: ConnectionPool,
          producer: EventProducer) -> ComputeManager:
    """One host's compute manager: its own libvirt connection, tracker and claims."""
    config = settings.compute
    topics = Topics(settings.topic_prefix)
    state_dir = settings.home / "compute" / host
    driver = driver_for(host, libvirt_uri(config, state_dir), settings.topic_prefix)
    vcpus, memory_mb = driver.host_resources()
    disk_gb = config.disk_gb or 200
    if driver.shared:  # a real machine: its memory and disk, shared by its compute hosts
        memory_mb //= config.shares
        disk_gb = config.disk_gb or shutil.disk_usage(settings.home).total // 2**30 // \
            config.shares
    totals = HostTotals(vcpus, memory_mb, disk_gb, config.cpu_allocation_ratio,
                        config.ram_allocation_ratio, config.disk_allocation_ratio)
    return ComputeManager(
        ComputeIdentity(host, zone=config.zone, report_interval_s=settings.report_interval_s,
                        sync_power_state_interval_s=settings.sync_power_state_interval_s,
                        resize_confirm_window_s=settings.resize_confirm_window_s,
                        shutdown_timeout_s=config.shutdown_timeout_s,
                        soft_reboot_wait_s=config.soft_reboot_wait_s,
                        force_config_drive=config.force_config_drive),
        tracker_for(host, ResourceTracker(pool, host, totals)), driver,
        ImageCache(instances_dir(settings.home, host)), Publisher(producer, "compute", host),
        topics, LiveProjection(pool, settings.db_schema),
        unseal=lambda sealed: unseal(settings, sealed))


class Fleet:
    """The hosts one agent process serves, behind one consumer and one producer: a record
    goes to the manager of the host whose topic it came on; periodic work and the
    after-flush step run for each. One host is a fleet of one (a real machine's agent)."""

    def __init__(self, managers: dict[str, ComputeManager]) -> None:
        self.managers = managers  # by command topic

    def handle(self, event: Event, record: Record) -> None:
        self.managers[record.topic].handle(event, record)

    def periodic(self) -> None:
        """Each host's periodic work; one host's outage does not skip the others'."""
        for manager in self.managers.values():
            try:
                manager.periodic()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("%s: periodic work skipped: %s", manager.host, exc)

    def flushed(self) -> None:
        for manager in self.managers.values():
            manager.flushed()


def serve(settings: Settings, stop: threading.Event) -> None:
    hosts = settings.compute.require_hosts()
    topics = Topics(settings.topic_prefix)
    host_topics = {host: topics.compute(host) for host in hosts}
    ensure_topics(settings, list(host_topics.values()), partitions=COMMAND_PARTITIONS)
    lanes = min(len(hosts), FLEET_LANES)
    pool = make_pool(settings, max_size=4 if lanes == 1 else lanes + 2, autocommit=True)
    producer = EventProducer(settings)
    managers: dict[str, ComputeManager] = {}
    try:
        for host, topic in host_topics.items():
            managers[topic] = agent(settings, host, pool, producer)
        fleet = Fleet(managers)
        # a host's inbox keeps its own name whichever process serves it
        group = f"compute-{hosts[0]}" if len(hosts) == 1 else \
            f"compute-fleet-{hosts[0]}-{hosts[-1]}"
        inbox = Inbox(pool, group, {t: f"compute-{h}" for h, t in host_topics.items()})
        loop = ConsumeLoop(settings, group_id=group, topics=list(host_topics.values()),
                           handler=fleet.handle, producer=producer, inbox=inbox,
                           wants=ComputeManager.WANTS, on_idle=fleet.periodic,
                           after_flush=fleet.flushed, lanes=lanes)
        for manager in managers.values():
            manager.start()
        producer.flush()
        fleet.flushed()  # claims init_host let go of (instances that left these hosts)
        loop.run(stop)
    finally:
        producer.flush()
        for manager in managers.values():
            manager.driver.close()
        pool.close()
