"""A read-only replica of whole topics, folded into an in-memory view by a background thread.

Roles whose decisions need everything (the scheduler needs every host, not just
its partitions) read the topics from offset 0, outside any consumer group, and
fold each event into a view. It is the one runner (novalog/consume.py) with the
`Unchecked` checkpoint, in a `RunnerThread`: the view is guarded by `lock`,
"caught up" is the one EndOfLog rule, and a dead thread raises in `check`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from novalog.consume import Batch, Runner, RunnerDied, RunnerThread, Unchecked
from novalog.settings import Settings
from schemas import Event

log = logging.getLogger(__name__)
ReplicaDied = RunnerDied


class LogReplica:
    def __init__(self, settings: Settings, topics: list[str], apply: Callable[[Event], None],
                 name: str, wants: frozenset[str] | None = None) -> None:
        """`wants`: the event types `apply` acts on; the others are passed over from the
        header, never decoded (most of what a view reads is not for it)."""
        self.apply = apply
        self.name = name
        checkpoint = Unchecked()
        self.lock: threading.Lock = checkpoint.lock
        self.runner: Runner[None] = Runner(
            settings, name=f"replica-{name}", topics=topics, handle=self._fold,
            checkpoint=checkpoint, group=False, batch_size=1000, poll_timeout_s=0.05,
            dead_letters=False, on_idle=self._note_caught_up, wants=wants)
        self.thread = RunnerThread(self.runner)
        self._caught_up = threading.Event()

    @property
    def events_read(self) -> int:
        return self.runner.events_read

    def start(self) -> LogReplica:
        self.thread.start()
        return self

    def _fold(self, batch: Batch, _context: None) -> None:
        for _record, event in batch.events:
            try:
                self.apply(event)
            except Exception:  # one odd event must not blind the view
                log.exception("replica %s could not apply %s %s", self.name,
                              event.event_type, event.event_id)

    def _note_caught_up(self) -> None:
        if self.runner.caught_up:
            self._caught_up.set()

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        return self._caught_up.wait(timeout)

    def check(self) -> None:
        """Raise ReplicaDied when the reading thread has died (see RunnerThread.check)."""
        self.thread.check()

    def stop(self) -> None:
        self.thread.stop()
