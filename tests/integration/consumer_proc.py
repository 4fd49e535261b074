"""A consume loop in its own process, for the kill-and-restart test.

Its handler appends each event id to a file and fsyncs it before returning,
so the file is the durable effect the loop commits after.
Usage: python consumer_proc.py OUT_FILE GROUP TOPIC (settings from the env).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from novalog.consume import ConsumeLoop, Record
from novalog.kafka import EventProducer
from novalog.settings import Settings
from schemas import Event


def main() -> None:
    out_path, group, topic = sys.argv[1:4]
    settings = Settings.from_env()
    out = open(out_path, "a")  # noqa: SIM115

    def handle(event: Event, _record: Record) -> None:
        out.write(event.event_id + "\n")
        out.flush()
        os.fsync(out.fileno())
        time.sleep(0.02)

    loop = ConsumeLoop(settings, group_id=group, topics=[topic], handler=handle,
                       producer=EventProducer(settings), batch_size=5)
    loop.run(threading.Event())


if __name__ == "__main__":
    main()
