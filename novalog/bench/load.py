"""Load scenarios: boots posted through the API, ACTIVE observed through the API.

Latency is the client's view (DESIGN.md §8): from just before the POST to the
first moment a GET of the projection shows ACTIVE. An observer thread polls
`GET /servers?status=ACTIVE&changes-since=` (Nova's own filters) every `poll_s` (50 ms),
so a figure carries up to one poll interval of observation delay; the serial
scenario polls the one server it waits for every 10 ms instead. Polling faster
costs the API more CPU than it saves in precision on a 2-core machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from novalog.client import ApiFailure, NovalogClient

FINAL = ("ACTIVE", "ERROR")
SWEEP_S = 1.0  # the observer looks a minute back this often (see Load._observe)


@dataclass
class Boot:
    posted_at: float  # perf_counter just before the POST
    server_id: str | None = None
    accepted_at: float | None = None  # the 202
    done_at: float | None = None
    status: str | None = None
    error: str | None = None  # the refusal, or the fault of an ERROR
    delete_sent_at: float | None = None  # the soak's DELETE, once ACTIVE for a while
    delete_failed: bool = False  # refused or unanswered: not sent again

    @property
    def latency_ms(self) -> float | None:
        if self.done_at is None:
            return None
        return (self.done_at - self.posted_at) * 1000


class Percentiles(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    n: int


class LoadSummary(TypedDict):
    posted: int
    accepted: int
    refused: int
    active: int
    error: int
    unfinished: int
    latency_ms: Percentiles
    post_ms: Percentiles
    seconds_to_last_active: float | None
    boots_per_second: float | None
    first_refusal: str | None
    faults: list[str]


def server_body(name: str, flavor: str, image: str) -> dict[str, dict[str, str]]:
    return {"server": {"name": name, "flavorRef": flavor, "imageRef": image,
                       "networks": "auto"}}


class Load:
    """Posts boots and watches them finish, against one API."""

    def __init__(self, client: NovalogClient, flavor: str = "m1.tiny",
                 image: str = "cirros", poll_s: float = 0.05,
                 serial_poll_s: float = 0.01) -> None:
        self.client = client
        self.flavor = client.find("flavor", flavor)["id"]
        self.image = client.find("image", image)["id"]
        self.poll_s = poll_s
        self.serial_poll_s = serial_poll_s
        self.boots: dict[str, Boot] = {}
        self.failed: list[Boot] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: threading.Thread | None = None

    # -- posting ---------------------------------------------------------------------
    def post(self, name: str) -> Boot:
        boot = Boot(time.perf_counter())
        try:
            body = self.client.request("POST", "/compute/v2.1/servers",
                                       json=server_body(name, self.flavor, self.image))
        except (ApiFailure, OSError) as exc:
            boot.error = str(exc)
            with self._lock:
                self.failed.append(boot)
            return boot
        boot.accepted_at = time.perf_counter()
        boot.server_id = body["server"]["id"]
        with self._lock:
            self.boots[boot.server_id] = boot
        return boot

    def wait_one(self, boot: Boot, timeout: float = 60.0) -> None:
        """Serial mode: poll the one server until it is ACTIVE or ERROR."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and boot.server_id:
            try:
                server = self.client.get(f"/compute/v2.1/servers/{boot.server_id}")["server"]
            except ApiFailure:
                server = {"status": None}
            if server["status"] in FINAL:
                boot.done_at, boot.status = time.perf_counter(), server["status"]
                return
            time.sleep(self.serial_poll_s)

    # -- observing -------------------------------------------------------------------
    def start_observer(self) -> None:
        self._observer = threading.Thread(target=self._observe, name="observer", daemon=True)
        self._observer.start()

    def _observe(self) -> None:
        """Cheap on both sides: the short list (ids only), filtered by status and by a
        changes-since window; every second a sweep a minute back catches rows the
        projector committed later than the window's 1 s margin. (`updated_at` is the
        event's business time, not the projection's: when the projector lags by more
        than the margin, only a sweep sees a server, so a sweep every 5 s added up to
        5 s to burst latencies, in clumps.)"""
        since: datetime | None = None
        polls, last_sweep = 0, time.perf_counter()
        while not self._stop.is_set():
            started = datetime.now(UTC)
            sweep = time.perf_counter() - last_sweep > SWEEP_S
            if sweep:
                last_sweep = time.perf_counter()
            statuses = FINAL if sweep or polls % 10 == 0 else ("ACTIVE",)
            for status in statuses:
                params = {"status": status}
                if since is not None:  # a sweep looks a minute back, not at every server
                    window = since - timedelta(seconds=60) if sweep else since
                    params["changes-since"] = window.isoformat()
                try:
                    servers = self.client.get("/compute/v2.1/servers", **params)["servers"]
                except (ApiFailure, OSError):
                    continue
                self._seen([s["id"] for s in servers], status)
            since = started - timedelta(seconds=1)
            polls += 1
            time.sleep(self.poll_s)

    def _seen(self, ids: list[str], status: str) -> None:
        now = time.perf_counter()
        with self._lock:
            for server_id in ids:
                boot = self.boots.get(server_id)
                if boot is not None and boot.done_at is None:
                    boot.done_at, boot.status = now, status

    def stop_observer(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.join()

    def fetch_faults(self, limit: int = 20) -> None:
        """The fault of (the first few) boots that ended in ERROR, for the report."""
        errored = [b for b in self.boots.values() if b.status == "ERROR"][:limit]
        for boot in errored:
            try:
                server = self.client.get(f"/compute/v2.1/servers/{boot.server_id}")["server"]
                boot.error = (server.get("fault") or {}).get("message")
            except (ApiFailure, OSError) as exc:
                boot.error = str(exc)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for b in self.boots.values() if b.done_at is None)

    def wait_all(self, timeout: float, progress: Callable[[int], None] | None = None) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            left = self.pending()
            if progress:
                progress(len(self.boots) - left)
            if left == 0:
                return
            time.sleep(0.05)

    # -- deleting (soak) --------------------------------------------------------------
    def delete_after(self, seconds: float, stop: threading.Event) -> None:
        """Until `stop`, then for what is left: DELETE each ACTIVE server `seconds` after
        it was seen ACTIVE (one at a time, as an operator's tooling would)."""
        while True:
            stopping = stop.is_set()
            now = time.perf_counter()
            with self._lock:
                due = [b for b in self.boots.values() if b.status == "ACTIVE"
                       and b.delete_sent_at is None and not b.delete_failed
                       and b.done_at is not None
                       and (stopping or now - b.done_at >= seconds)]
            for boot in due:
                try:
                    self.client.request("DELETE", f"/compute/v2.1/servers/{boot.server_id}")
                except (ApiFailure, OSError) as exc:
                    boot.error, boot.delete_failed = f"delete: {exc}", True
                    continue
                boot.delete_sent_at = time.perf_counter()
            if stopping:
                return
            stop.wait(0.2)

    def wait_gone(self, timeout: float) -> int:
        """Until the API lists none of the deleted servers; how many it still lists."""
        deleted = {b.server_id for b in self.boots.values()
                   if b.delete_sent_at is not None and b.server_id is not None}
        deadline = time.perf_counter() + timeout
        while True:
            try:
                listed = self.listed()
            except (ApiFailure, OSError):
                listed = deleted
            left = len(listed & deleted)
            if left == 0 or time.perf_counter() > deadline:
                return left
            time.sleep(0.5)

    def listed(self) -> set[str]:
        """Every server the API lists, page by page (Nova's max_limit is 1,000)."""
        ids: list[str] = []
        while True:
            params = {"limit": "1000", **({"marker": ids[-1]} if ids else {})}
            page = [s["id"] for s in self.client.get("/compute/v2.1/servers",
                                                      **params)["servers"]]
            ids += page
            if len(page) < 1000:
                return set(ids)

    # -- scenarios -------------------------------------------------------------------
    def burst(self, count: int, concurrency: int,
              progress: Callable[[int], None] | None = None) -> None:
        """Post `count` boots as fast as `concurrency` client connections allow."""
        with posting(concurrency) as pool:
            for i in range(count):
                pool.submit(self.post, f"burst-{i}")
                if progress and i % 50 == 0:
                    progress(len(self.boots))

    def at_rate(self, rate: float, duration: float, concurrency: int) -> None:
        """Post at a fixed offered rate, whatever the answers' speed (open loop)."""
        started = time.perf_counter()
        total = int(rate * duration)
        with posting(concurrency) as pool:
            for i in range(total):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.post, f"rate-{i}")


@contextmanager
def posting(concurrency: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of posting threads that waits for its POSTs, unless interrupted (Ctrl-C):
    then the POSTs not sent yet are dropped, so the stack can stop at once."""
    pool = ThreadPoolExecutor(concurrency)
    try:
        yield pool
        pool.shutdown(wait=True)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise


@dataclass
class Outcome:
    """What a load scenario measured, ready for the report."""

    boots: list[Boot]
    failed: list[Boot]
    first_post: float
    last_done: float | None
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s, ACTIVE so far)

    @classmethod
    def of(cls, load: Load) -> Outcome:
        boots = list(load.boots.values())
        posts = [b.posted_at for b in boots + load.failed]
        done = [b.done_at for b in boots if b.done_at is not None]
        first = min(posts) if posts else 0.0
        ends = sorted(d - first for d in done)
        timeline = [(round(t, 3), i + 1) for i, t in enumerate(ends)]
        return cls(boots, load.failed, first, max(done) if done else None, timeline)

    def latencies(self) -> list[float]:
        return sorted(b.latency_ms for b in self.boots
                      if b.latency_ms is not None and b.status == "ACTIVE")

    def summary(self) -> LoadSummary:
        lat = self.latencies()
        active = len(lat)
        span = (self.last_done - self.first_post) if self.last_done else None
        posts = sorted(b.accepted_at - b.posted_at for b in self.boots if b.accepted_at)
        return {
            "posted": len(self.boots) + len(self.failed), "accepted": len(self.boots),
            "refused": len(self.failed), "active": active,
            "error": sum(1 for b in self.boots if b.status == "ERROR"),
            "unfinished": sum(1 for b in self.boots if b.done_at is None),
            "latency_ms": percentiles(lat),
            "post_ms": percentiles([p * 1000 for p in posts]),
            "seconds_to_last_active": round(span, 3) if span else None,
            "boots_per_second": round(active / span, 1) if span else None,
            "first_refusal": self.failed[0].error if self.failed else None,
            "faults": sorted({b.error for b in self.boots if b.status == "ERROR" and b.error}),
        }


def percentiles(values: list[float]) -> Percentiles:
    ordered = sorted(values)

    def pick(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": round(ordered[-1], 1) if ordered else None, "n": len(ordered)}




