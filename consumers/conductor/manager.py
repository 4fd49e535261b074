"""nova-conductor's part of a boot: dispatch, reschedule, give up, time out.

- InstanceScheduled: gather what compute needs (the flavor from the request,
  the image and networks from the catalog) and send BuildAndRunInstance to the
  chosen host's topic.
- A refused claim, or a build failure the host calls retryable: reschedule,
  excluding the hosts already tried, up to `max_attempts` (Nova's
  scheduler.max_attempts, 3). A failure that no other host would fix ends in
  error at once.
- A build that has made no progress for `build_timeout` ends in error.
- InstanceDeleteRequested: once the projection has folded it (so it knows every
  earlier event of the instance), TerminateInstance to the host the instance is
  on, or, when it never reached one, the delete is local (InstanceDeleted here).
  A placement that arrives after the API accepted a DELETE is never dispatched:
  the instance is deleted locally instead (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from novalog.consume import Record, TransientError
from novalog.domain import states
from novalog.idempotency import derived_id
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import BuildRequests, LiveProjection
from schemas import Event, payloads
from schemas.typed import payload_of

log = logging.getLogger(__name__)


def max_retries_message(uuid: str) -> str:
    return ("Exceeded maximum number of retries. Exhausted all hosts available for retrying "
            f"build failures for instance {uuid}.")


class Conductor:
    WANTS: ClassVar[frozenset[str]]  # = the keys of HANDLERS, below

    def __init__(self, topics: Topics, publisher: Publisher, projection: LiveProjection, *,
                 ensure_topic: Any, max_attempts: int = 3,
                 build_timeout_s: float = 300.0,
                 sweep_interval_s: float = 10.0) -> None:
        self.topics = topics
        self.pub = publisher
        self.projection = projection
        self.ensure_topic = ensure_topic
        self.max_attempts = max_attempts
        self.build_timeout = timedelta(seconds=build_timeout_s)
        self.sweep_interval_s = sweep_interval_s
        self.requests = BuildRequests(projection)
        self.tried: dict[str, list[str]] = {}
        self._known_topics: set[str] = set()
        self._last_sweep = 0.0

    def handle(self, event: Event, _record: Record) -> None:
        handler = HANDLERS.get(event.event_type)
        if handler is not None:  # a record with no type header reaches here undecided
            handler(self, event)

    def _compute_topic(self, host: str) -> str:
        topic = self.topics.compute(host)
        if topic not in self._known_topics:
            self.ensure_topic(topic)
            self._known_topics.add(topic)
        return topic

    def _requested(self, event: Event) -> None:
        self.requests.remember(event.aggregate_id,
                               payload_of(event, payloads.InstanceBuildRequested))

    def _scheduled(self, event: Event) -> None:
        deleted_by = self.projection.delete_request(event.aggregate_id)
        if deleted_by is not None:  # the user deleted it while it was being scheduled
            self._deleted_locally(event, deleted_by)
            return
        host = payload_of(event, payloads.InstanceScheduled)["host"]
        tried = self.tried.setdefault(event.aggregate_id, [])
        if host not in tried:
            tried.append(host)
        self.dispatch(event)

    def _claim_refused(self, event: Event) -> None:
        p = payload_of(event, payloads.InstanceClaimRefused)
        self.retry_or_fail(event, p["attempt"], f"claim refused on {p['host']}: {p['reason']}",
                           True)

    def _build_failed(self, event: Event) -> None:
        p = payload_of(event, payloads.InstanceBuildFailed)
        self.retry_or_fail(event, p["attempt"], f"build failed on {p['host']} at {p['stage']}: "
                                                f"{p['reason']}", p["retryable"])

    def _ended(self, event: Event) -> None:
        self.requests.forget(event.aggregate_id)
        self.tried.pop(event.aggregate_id, None)

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, event: Event) -> None:
        uuid, p = event.aggregate_id, payload_of(event, payloads.InstanceScheduled)
        request = self.requests.get(uuid)
        image = self._image(request["image"]["id"]) if request["image"] else None
        networks = [self._network(n["network_id"], n["fixed_ip"])
                    for n in request["networks"]]
        topic = self._compute_topic(p["host"])
        self.pub.emit(topic, "BuildAndRunInstance", uuid, payloads.BuildAndRunInstance(
            instance_uuid=uuid, host=p["host"], node=p["node"],
            attempt=p["attempt"], name=request["name"],
            project_id=request["project_id"], flavor=request["flavor"],
            image=image, networks=networks,
            block_device_mapping=request["block_device_mapping"],
            key_name=request["key_name"], user_data=request["user_data"],
            metadata=request["metadata"]), cause=event)
        self.pub.emit(self.topics.instances, "InstanceBuildDispatched", uuid,
                      payloads.InstanceBuildDispatched(host=p["host"], node=p["node"],
                                                       attempt=p["attempt"]), cause=event)

    def _image(self, image_id: str) -> payloads.ImageToBoot:
        image = self.projection.image(image_id)
        if image is None:
            raise TransientError(f"image {image_id} is not in the catalog projection yet")
        return image

    def _network(self, network_id: str | None, fixed_ip: str | None) -> payloads.NetworkToAttach:
        network = self.projection.network(network_id, fixed_ip)
        if network is None:
            raise TransientError(f"network {network_id} is not in the catalog projection yet")
        return network

    # -- delete ----------------------------------------------------------------------------
    def _delete_requested(self, event: Event) -> None:
        uuid = event.aggregate_id
        self._wait_folded(event)
        server = self.projection.server(uuid)
        if server is None or server.vm_state == states.DELETED:
            return  # deleted already (a placement after the DELETE was deleted locally)
        if server.host is None:  # never reached a host: nothing to tear down but the record
            self._deleted_locally(event, event.correlation_id)
            return
        self.pub.emit(self._compute_topic(server.host), "TerminateInstance", uuid,
                      payloads.TerminateInstance(instance_uuid=uuid, host=server.host,
                                                 attempt=server.attempt), cause=event)

    def _deleted_locally(self, cause: Event, request_id: str) -> None:
        self.requests.forget(cause.aggregate_id)
        self.tried.pop(cause.aggregate_id, None)
        self.pub.emit(self.topics.instances, "InstanceDeleted", cause.aggregate_id,
                      payloads.InstanceDeleted(host=None, local=True,
                                               terminated_at=datetime.now(UTC)),
                      cause=cause, correlation_id=request_id)

    def _wait_folded(self, event: Event, timeout_s: float = 10.0) -> None:
        """Until the projection has folded `event`: it then knows where the instance is."""
        deadline = time.monotonic() + timeout_s
        while not self.projection.folded(event.event_id):
            if time.monotonic() > deadline:
                raise TransientError(f"the projection has not folded {event.event_type} "
                                     f"{event.event_id} within {timeout_s:.0f}s")
            time.sleep(0.02)

    # -- reboot, stop, start ------------------------------------------------------------
    def _power_action(self, event: Event) -> None:
        """To the instance's host, if the fold accepted this request (its task is the one in
        progress); a request the fold refused is only history."""
        uuid = event.aggregate_id
        self._wait_folded(event)
        server = self.projection.server(uuid)
        if server is None or server.action_request_id != event.correlation_id or \
                server.host is None:
            log.info("%s %s: not the action in progress, nothing to do", event.event_type, uuid)
            return
        topic, host = self._compute_topic(server.host), server.host
        if event.event_type == "InstanceRebootRequested":
            hard = payload_of(event, payloads.InstanceRebootRequested)["type"] == "HARD"
            self.pub.emit(topic, "RebootInstance", uuid, payloads.RebootInstance(
                instance_uuid=uuid, host=host, hard=hard), cause=event)
        elif event.event_type == "InstanceStopRequested":
            self.pub.emit(topic, "StopInstance", uuid, payloads.StopInstance(
                instance_uuid=uuid, host=host), cause=event)
        else:
            self.pub.emit(topic, "StartInstance", uuid, payloads.StartInstance(
                instance_uuid=uuid, host=host), cause=event)

    # -- failures --------------------------------------------------------------------------
    def _tried_hosts(self, uuid: str) -> list[str]:
        if uuid in self.tried:
            return self.tried[uuid]
        return self.projection.tried_hosts(uuid)

    def retry_or_fail(self, event: Event, attempt: int, reason: str, retryable: bool) -> None:
        uuid = event.aggregate_id
        if retryable and attempt < self.max_attempts:
            self.pub.emit(self.topics.instances, "InstanceRescheduled", uuid,
                          payloads.InstanceRescheduled(
                              attempt=attempt + 1, excluded_hosts=list(self._tried_hosts(uuid)),
                              reason=reason), cause=event)
            return
        message = max_retries_message(uuid) if retryable else \
            f"Build of instance {uuid} aborted: {reason}"
        self.pub.emit(self.topics.instances, "InstanceErrored", uuid,
                      payloads.InstanceErrored(code=500, message=message, details=reason),
                      cause=event)

    # -- periodic --------------------------------------------------------------------------
    def sweep(self) -> None:
        """Builds with no progress for build_timeout end in error (once: derived ids)."""
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_interval_s:
            return
        self._last_sweep = now
        cutoff = datetime.now(UTC) - self.build_timeout
        stuck = self.projection.stuck_builds(states.BUILDING, cutoff)
        for uuid, attempt, task_state, request_id in stuck:
            seconds = int(self.build_timeout.total_seconds())
            log.warning("build of %s stuck in %s for over %ss", uuid, task_state, seconds)
            self.pub.emit(self.topics.instances, "InstanceErrored", uuid, payloads.InstanceErrored(
                code=500,
                message=f"Build of instance {uuid} timed out after {seconds} seconds",
                details=f"no progress while in task_state {task_state}"),
                correlation_id=request_id, event_id=derived_id(uuid, "timeout", attempt))


# What the conductor acts on, by event type: its consume loop's subscription (WANTS)
# and its header-level skipping are derived from this table.
HANDLERS: dict[str, Callable[[Conductor, Event], None]] = {
    "InstanceBuildRequested": Conductor._requested,
    "InstanceScheduled": Conductor._scheduled,
    "InstanceClaimRefused": Conductor._claim_refused,
    "InstanceBuildFailed": Conductor._build_failed,
    "InstanceSpawned": Conductor._ended,
    "InstanceErrored": Conductor._ended,
    "InstanceNoValidHost": Conductor._ended,
    "InstanceDeleteRequested": Conductor._delete_requested,
    "InstanceDeleted": Conductor._ended,
    "InstanceRebootRequested": Conductor._power_action,
    "InstanceStopRequested": Conductor._power_action,
    "InstanceStartRequested": Conductor._power_action,
}
Conductor.WANTS = frozenset(HANDLERS)
