"""A read-only replica of whole topics, folded into an in-memory view by a background thread.

Roles whose decisions need everything (the scheduler needs every host, not just
its partitions) read the topics with assign() from offset 0, outside any
consumer group, and fold each event into a view. The view is guarded by
`lock`. "Caught up" means the position reached the high watermarks read at the
start; on Tansu, whose watermarks cannot be trusted, a poll that came back empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer

from novalog.consume import through_outages
from novalog.kafka import next_batch, open_reader, reached
from novalog.settings import Settings
from schemas import Event, SerializationError, decode

log = logging.getLogger(__name__)


class ReplicaDied(RuntimeError):
    """The replica's thread ended while the role still runs."""


class LogReplica:
    def __init__(self, settings: Settings, topics: list[str], apply: Callable[[Event], None],
                 name: str) -> None:
        self.settings = settings
        self.topics = topics
        self.apply = apply
        self.name = name
        self.lock = threading.Lock()
        self.events_read = 0
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> LogReplica:
        self._thread = threading.Thread(target=self._run, name=f"replica-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        return self._idle.wait(timeout)

    def check(self) -> None:
        """Raise when the reading thread has died: a frozen view must stop the role (and the
        supervisor restart it), never go on deciding on stale data."""
        if self._thread is not None and not self._thread.is_alive() and \
                not self._stop.is_set():
            raise ReplicaDied(f"replica {self.name} stopped reading: {self.failure!r}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer, ends = through_outages(f"replica {self.name}: opening the log",
                                             lambda: open_reader(self.settings,
                                                                 f"replica-{self.name}",
                                                                 self.topics))
            while not self._stop.is_set():
                messages = next_batch(consumer, 1000, 0.05)
                if not messages:
                    if ends is None or reached(consumer, ends):
                        self._idle.set()
                    continue
                with self.lock:
                    for msg in messages:
                        if msg.error() is not None:
                            continue
                        try:
                            event = decode(msg.value() or b"")
                        except SerializationError as exc:
                            log.warning("replica %s skips %s@%s: %s", self.name, msg.topic(),
                                        msg.offset(), exc)
                            continue
                        try:
                            self.apply(event)
                        except Exception:  # one odd event must not blind the view
                            log.exception("replica %s could not apply %s %s", self.name,
                                          event.event_type, event.event_id)
                        self.events_read += 1
                # the position moved when the batch was handed over: caught up only once
                # the batch is folded in
                if ends is not None and not self._idle.is_set() and reached(consumer, ends):
                    self._idle.set()
        except Exception as exc:
            self.failure = exc
            log.exception("replica %s stopped", self.name)
            raise
        finally:
            if consumer is not None:
                consumer.close()
