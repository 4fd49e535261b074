"""The `compute` role: configuration from the environment, then the agent's consume loop."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from consumers.compute.driver import LibvirtDriver, host_definition
from consumers.compute.image_cache import ImageCache
from consumers.compute.manager import ComputeIdentity, ComputeManager
from consumers.compute.resource_tracker import HostTotals, ResourceTracker
from novalog.consume import ConsumeLoop
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics, ensure_topics
from novalog.publish import Publisher
from novalog.settings import Settings, SettingsError, env_float, env_int


@dataclass(frozen=True)
class ComputeConfig:
    host: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    libvirt_uri: str | None
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    report_interval_s: float

    @classmethod
    def from_env(cls) -> ComputeConfig:
        env = os.environ
        host = env.get("NOVALOG_COMPUTE_HOST")
        if not host:
            raise SettingsError("NOVALOG_COMPUTE_HOST is not set: which host is this agent?")
        return cls(
            host=host,
            vcpus=env_int(env, "NOVALOG_COMPUTE_VCPUS", 8),
            memory_mb=env_int(env, "NOVALOG_COMPUTE_MEMORY_MB", 16384, low=128),
            disk_gb=env_int(env, "NOVALOG_COMPUTE_DISK_GB", 200),
            libvirt_uri=env.get("NOVALOG_LIBVIRT_URI") or None,
            cpu_allocation_ratio=env_float(env, "NOVALOG_CPU_ALLOCATION_RATIO", 4.0),
            ram_allocation_ratio=env_float(env, "NOVALOG_RAM_ALLOCATION_RATIO", 1.0),
            disk_allocation_ratio=env_float(env, "NOVALOG_DISK_ALLOCATION_RATIO", 1.0),
            report_interval_s=env_float(env, "NOVALOG_REPORT_INTERVAL_S", 10.0, low=0.1),
        )


def libvirt_uri(config: ComputeConfig, state_dir: Path) -> str:
    """The configured URI, or a test-driver host made of this agent's CPUs and memory."""
    if config.libvirt_uri:
        return config.libvirt_uri
    state_dir.mkdir(parents=True, exist_ok=True)
    definition = state_dir / "host.xml"
    definition.write_text(host_definition(config.vcpus, config.memory_mb))
    return f"test://{definition}"


def serve(settings: Settings, stop: threading.Event) -> None:
    config = ComputeConfig.from_env()
    topics = Topics(settings.topic_prefix)
    ensure_topics(settings, [topics.compute(config.host)])
    state_dir = settings.home / "compute" / config.host
    driver = LibvirtDriver(libvirt_uri(config, state_dir))
    vcpus, memory_mb = driver.host_resources()
    totals = HostTotals(vcpus, memory_mb, config.disk_gb, config.cpu_allocation_ratio,
                        config.ram_allocation_ratio, config.disk_allocation_ratio)
    pool = make_pool(settings)
    producer = EventProducer(settings)
    manager = ComputeManager(
        ComputeIdentity(config.host, report_interval_s=config.report_interval_s),
        ResourceTracker(pool, config.host, totals), driver,
        ImageCache(state_dir / "instances"), Publisher(producer, "compute", config.host), topics)
    group = f"compute-{config.host}"
    loop = ConsumeLoop(settings, group_id=group, topics=[topics.compute(config.host)],
                       handler=manager.handle, producer=producer, inbox=Inbox(pool, group),
                       on_idle=manager.periodic)
    try:
        manager.start()
        producer.flush()
        loop.run(stop)
    finally:
        producer.flush()
        driver.close()
        pool.close()
