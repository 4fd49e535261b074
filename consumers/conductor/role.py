"""The `conductor` role: consumer group "conductor" on the instances topic."""

from __future__ import annotations

import threading

from consumers.conductor.manager import Conductor
from novalog.consume import ConsumeLoop
from novalog.db import make_pool
from novalog.idempotency import Inbox
from novalog.kafka import COMMAND_PARTITIONS, EventProducer, Topics, ensure_topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection
from novalog.service import ServiceReporter
from novalog.settings import Settings

GROUP = "conductor"


def serve(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    pool = make_pool(settings, autocommit=True)
    producer = EventProducer(settings)
    conductor = Conductor(
        topics, Publisher(producer, "conductor", settings.hostname),
        LiveProjection(pool, settings.db_schema),
        ensure_topic=lambda topic: ensure_topics(settings, [topic],
                                                  partitions=COMMAND_PARTITIONS),
        max_attempts=settings.max_attempts, build_timeout_s=settings.build_timeout_s,
    )
    reporter = ServiceReporter(settings, producer, "conductor")

    def periodic() -> None:
        conductor.sweep()
        reporter.beat()

    loop = ConsumeLoop(settings, group_id=GROUP, topics=[topics.instances],
                       handler=conductor.handle, producer=producer, inbox=Inbox(pool, GROUP),
                       wants=Conductor.WANTS, on_idle=periodic)
    try:
        reporter.start()
        loop.run(stop)
    finally:
        pool.close()
