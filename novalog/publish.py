"""Emitting the next event: envelope filled in the same way by every role.

An event caused by another gets the id derived_id(cause, type, *what), the
cause's id as causation_id and the cause's request id as correlation_id, so
re-handling an input re-emits identical events (see novalog.idempotency). The
caller's global request id travels the same way (novalog.request_ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from novalog import request_ids
from novalog.idempotency import derived_id
from novalog.kafka import EventProducer
from schemas import Event


class Publisher:
    def __init__(self, producer: EventProducer, role: str, host: str) -> None:
        self.producer = producer
        self.name = f"{role}@{host}"

    def emit(self, topic: str, event_type: str, aggregate_id: str,
             payload: Mapping[str, object], *, cause: Event | None = None,
             correlation_id: str | None = None,
             what: tuple[object, ...] = (), event_id: str | None = None) -> Event:
        """Build, queue and return the event (the caller's loop flushes before committing)."""
        event = self.build(event_type, aggregate_id, payload, cause=cause,
                           correlation_id=correlation_id, what=what, event_id=event_id)
        self.producer.publish(topic, event)
        return event

    def build(self, event_type: str, aggregate_id: str, payload: Mapping[str, object], *,
              cause: Event | None = None, correlation_id: str | None = None,
              what: tuple[object, ...] = (), event_id: str | None = None) -> Event:
        """The event with its envelope filled in, not yet sent (for an outbox)."""
        if event_id is None and cause is not None:
            event_id = derived_id(cause.event_id, event_type, *what)
        correlation = correlation_id or (cause.correlation_id if cause else None)
        if correlation is None:
            raise ValueError(f"{event_type} needs a cause or a correlation id")
        ids = request_ids.current()
        event = Event(
            event_type=event_type, aggregate_id=aggregate_id, payload=payload,
            correlation_id=correlation, producer=self.name,
            causation_id=cause.event_id if cause else None,
            occurred_at=datetime.now(UTC),
            global_request_id=cause.global_request_id if cause else
            ids.global_request_id if ids else None,
            **({"event_id": event_id} if event_id else {}),
        )
        return event
