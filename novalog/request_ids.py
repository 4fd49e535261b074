"""Request ids in every log line, as Nova's (oslo.log's) logs carry them.

The API gives each HTTP request a fresh id, `req-<uuid>`, and honours a caller's
`X-OpenStack-Request-ID` of that form as the global request id (oslo.middleware's
RequestId and oslo.context's global_request_id). Both travel on every event the
request causes (correlation_id, global_request_id), and each role binds them while
it handles an event, so one grep finds a request in every role's log.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from schemas import Event

REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# timestamp, pid, level, module, [global local], message, source location
LOG_FORMAT = ("%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s "
              "[%(global_request_id)s %(request_id)s] %(message)s (%(filename)s:%(lineno)d)")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class RequestIds:
    request_id: str  # this request's (the events' correlation_id)
    global_request_id: str | None = None  # the caller's, spanning its several requests


_current: ContextVar[RequestIds | None] = ContextVar("novalog_request_ids", default=None)


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def valid_request_id(value: str | None) -> str | None:
    """The caller's id when it has oslo's form (anything else is ignored, as oslo does)."""
    return value if value and REQUEST_ID.match(value.lower()) else None


def current() -> RequestIds | None:
    return _current.get()


@contextmanager
def bound(ids: RequestIds | None) -> Iterator[None]:
    """Log lines written inside carry `ids`."""
    token = _current.set(ids)
    try:
        yield
    finally:
        _current.reset(token)


def handling(event: Event) -> RequestIds:
    """The ids a role logs with while it handles `event`."""
    return RequestIds(event.correlation_id, event.global_request_id)


class RequestIdFilter(logging.Filter):
    """Puts the bound ids (or "-") on every record, whichever logger wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current.get()
        record.request_id = ids.request_id if ids else "-"
        record.global_request_id = (ids.global_request_id if ids else None) or "-"
        return True


def request_id() -> str:
    """The id of the request being served, or a new one outside any (a bootstrap)."""
    ids = _current.get()
    return ids.request_id if ids else new_request_id()


def configure_logging(level: int = logging.INFO) -> None:
    """Every log line in LOG_FORMAT (`novalog up` gives each role its own file,
    $NOVALOG_HOME/logs/<role>.log, so the role is the file's name)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []  # into the root's handler, same format
        logging.getLogger(name).propagate = True


def lines_of(logs: Path, request_id: str) -> list[tuple[str, str]]:
    """Every (role, line) of the stack's logs that names `request_id`, in time order
    (the lines start with their timestamp; a role's own lines keep their order)."""
    found: list[tuple[str, str]] = []
    for path in sorted(logs.glob("*.log")):
        with path.open(errors="replace") as f:
            found.extend((path.stem, line.rstrip("\n")) for line in f if request_id in line)
    return sorted(found, key=lambda pair: pair[1][:23])
