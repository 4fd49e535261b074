"""The `compute` role: configuration from the environment, then the agent's consume loop."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from consumers.compute.driver import host_definition
from consumers.compute.fault_injection import driver_for, tracker_for
from consumers.compute.image_cache import ImageCache
from consumers.compute.manager import ComputeIdentity, ComputeManager
from consumers.compute.resource_tracker import HostTotals, ResourceTracker
from novalog.consoles import instances_dir
from novalog.consume import ConsumeLoop
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics, ensure_topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from novalog.settings import ComputeSettings, Settings
from novalog.tokens import unseal


def libvirt_uri(config: ComputeSettings, state_dir: Path) -> str:
    """The configured URI, or a test-driver host made of this agent's CPUs and memory."""
    if config.libvirt_uri:
        return config.libvirt_uri
    state_dir.mkdir(parents=True, exist_ok=True)
    definition = state_dir / "host.xml"
    definition.write_text(host_definition(config.vcpus, config.memory_mb))
    return f"test://{definition}"


def serve(settings: Settings, stop: threading.Event) -> None:
    config = settings.compute
    host = config.require_host()
    topics = Topics(settings.topic_prefix)
    ensure_topics(settings, [topics.compute(host)])
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
    pool = make_pool(settings)
    producer = EventProducer(settings)
    manager = ComputeManager(
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
    group = f"compute-{host}"
    loop = ConsumeLoop(settings, group_id=group, topics=[topics.compute(host)],
                       handler=manager.handle, producer=producer, inbox=Inbox(pool, group),
                       wants=ComputeManager.WANTS, on_idle=manager.periodic,
                       after_flush=manager.flushed)
    try:
        manager.start()
        producer.flush()
        manager.flushed()  # claims init_host let go of (instances that left this host)
        loop.run(stop)
    finally:
        producer.flush()
        driver.close()
        pool.close()
