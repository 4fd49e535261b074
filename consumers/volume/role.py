"""The `volume` role: consumer group "volume" on the volumes topic, one backend."""

from __future__ import annotations

import threading

from consumers.volume.driver import FileDriver
from consumers.volume.manager import VolumeManager
from novalog.consume import ConsumeLoop
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import EventProducer, Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from novalog.service import ServiceReporter
from novalog.settings import Settings

GROUP = "volume"


def serve(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    pool = make_pool(settings, autocommit=True)
    producer = EventProducer(settings)
    manager = VolumeManager(FileDriver(settings.volumes_dir),
                            Publisher(producer, "volume", settings.hostname), topics,
                            LiveProjection(pool, settings.db_schema))
    reporter = ServiceReporter(settings, producer, "volume")
    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.volumes], handler=manager.handle,
                       producer=producer, inbox=Inbox(pool, GROUP), wants=VolumeManager.WANTS,
                       on_idle=reporter.beat)
    try:
        reporter.start()
        loop.run(stop)
    finally:
        producer.flush()
        pool.close()
