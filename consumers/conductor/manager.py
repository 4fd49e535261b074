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
from novalog.domain.instance import MIGRATION_STATUS, Instance, open_migration
from novalog.idempotency import boot_attachment_id, build_volume_id, derived_id
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
        if event.event_type != "InstanceSpawned":
            self._release_volumes(event)
        self.requests.forget(event.aggregate_id)
        self.tried.pop(event.aggregate_id, None)

    def _release_volumes(self, event: Event) -> None:
        """An instance that ends without a host's help (NoValidHost, an error, a local
        delete) lets go of the existing volumes the API reserved for it (Nova's conductor
        deletes those attachments); where a host held them, it released them first and
        this repeats it harmlessly."""
        uuid = event.aggregate_id
        for bdm in self.requests.get(uuid)["block_device_mapping"]:
            volume_id = bdm["uuid"]
            if bdm["source_type"] != "volume" or volume_id is None:
                continue
            self.pub.emit(self.topics.volumes, "VolumeDetached", volume_id,
                          payloads.VolumeDetached(
                              volume_id=volume_id,
                              attachment_id=boot_attachment_id(volume_id, uuid),
                              instance_uuid=uuid, host=None), cause=event, what=(volume_id,))

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, event: Event) -> None:
        uuid, p = event.aggregate_id, payload_of(event, payloads.InstanceScheduled)
        request = self.requests.get(uuid)
        build = self._build(uuid, request, p["host"], p["node"], p["attempt"], request["flavor"],
                            moving=False)
        log.info("[instance: %s] build_and_run_instance cast to %s (attempt %d)", uuid,
                 p["host"], p["attempt"])
        # the record first, then the cast, so the log reads in causal order; a leader failover
        # between the two can still let the host's answers in first (the fold absorbs a late
        # record: novalog.domain.instance.LATE_RECORDS)
        self.pub.emit(self.topics.instances, "InstanceBuildDispatched", uuid,
                      payloads.InstanceBuildDispatched(host=p["host"], node=p["node"],
                                                       attempt=p["attempt"]), cause=event)
        self.pub.emit(self._compute_topic(p["host"]), "BuildAndRunInstance", uuid, build,
                      cause=event)

    def _build(self, uuid: str, request: payloads.InstanceBuildRequested, host: str,
               node: str, attempt: int, flavor: payloads.Flavor,
               moving: bool) -> payloads.BuildAndRunInstance:
        """What a host needs to run the instance: its request, the image, networks and
        block devices (a move takes the volumes attached now)."""
        image = self._image(request["image"]["id"]) if request["image"] else None
        networks = [self._network(n["network_id"], n["fixed_ip"])
                    for n in request["networks"]]
        return payloads.BuildAndRunInstance(
            instance_uuid=uuid, host=host, node=node, attempt=attempt, name=request["name"],
            project_id=request["project_id"], user_id=request["user_id"], flavor=flavor,
            image=image, networks=networks,
            block_device_mapping=self._block_devices(uuid, request, moving),
            key_name=request["key_name"], user_data=request["user_data"],
            metadata=request["metadata"], server_group=self._server_group(request),
            # (.get: a request projected before these fields existed has none)
            config_drive=request.get("config_drive", False),
            admin_password=request.get("admin_password"), key_data=request.get("key_data"),
            launch_index=request["launch_index"])

    def _server_group(self, request: payloads.InstanceBuildRequested,
                      ) -> payloads.ServerGroupPolicy | None:
        groups = request["scheduler_hints"].get("group") or []
        return self.projection.server_group(groups[0]) if groups else None

    def _block_devices(self, uuid: str, request: payloads.InstanceBuildRequested,
                       moving: bool) -> list[payloads.BlockDeviceMapping]:
        """The request's mappings, each volume named and an existing one's connection
        filled in (Nova's BDM volume_id and connection_info); for a move, the volumes
        attached now, keeping the request's delete_on_termination."""
        wanted: list[payloads.BlockDeviceMapping] = []
        for index, bdm in enumerate(request["block_device_mapping"]):
            if bdm["destination_type"] != "volume":
                wanted.append(bdm)
                continue
            volume_id = bdm["uuid"] if bdm["source_type"] == "volume" else \
                build_volume_id(uuid, index)
            assert volume_id is not None
            connection = None
            if bdm["source_type"] == "volume":
                volume = self.projection.volume(volume_id)
                if volume is None or volume.connection is None:
                    raise TransientError(f"volume {volume_id} is not in the projection yet")
                connection = volume.connection
            wanted.append({**bdm, "volume_id": volume_id, "connection": connection})
        if not moving:
            return wanted
        keep = {b["volume_id"]: b["delete_on_termination"] for b in wanted if b["volume_id"]}
        return [b for b in wanted if b["destination_type"] != "volume"] + [
            {**a, "delete_on_termination": keep.get(a["volume_id"] or "", False)}
            for a in self.projection.attached_volumes(uuid)]

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
        hosts = [server.host]
        instance = self.projection.instance(uuid)
        m = open_migration(instance) if instance else None
        if m is not None:  # a move under way: the other host holds a guest or claim too
            hosts += [h for h in (m["source_host"], m["dest_host"]) if h and h not in hosts]
        for host in hosts:  # the first one's InstanceDeleted counts; later ones are absorbed
            self.pub.emit(self._compute_topic(host), "TerminateInstance", uuid,
                          payloads.TerminateInstance(instance_uuid=uuid, host=host,
                                                     attempt=server.attempt),
                          cause=event, what=() if host == server.host else (host,))

    def _deleted_locally(self, cause: Event, request_id: str) -> None:
        self.requests.forget(cause.aggregate_id)
        self.tried.pop(cause.aggregate_id, None)
        self.pub.emit(self.topics.instances, "InstanceDeleted", cause.aggregate_id,
                      payloads.InstanceDeleted(host=None, local=True,
                                               terminated_at=datetime.now(UTC)),
                      cause=cause, correlation_id=request_id)

    def _wait_folded(self, event: Event) -> None:
        """Until the projection has folded `event`: it then knows where the instance is."""
        self.projection.wait_folded(event)

    # -- reboot, stop, start, rescue, unrescue -------------------------------------------
    def _accepted(self, event: Event) -> Instance | None:
        """The instance, if the fold accepted this request (its task is the one in
        progress) and no DELETE came; a request the fold refused is only history."""
        self._wait_folded(event)
        instance = self.projection.instance(event.aggregate_id)
        if instance is None or instance.action_request_id != event.correlation_id or \
                instance.host is None or instance.task_state == states.DELETING:
            log.info("%s %s: not the action in progress, nothing to do", event.event_type,
                     event.aggregate_id)
            return None
        return instance

    def _power_action(self, event: Event) -> None:
        """To the instance's host."""
        instance = self._accepted(event)
        if instance is None:
            return
        uuid, host = instance.uuid, str(instance.host)
        topic, kind = self._compute_topic(host), event.event_type
        if kind == "InstanceRebootRequested":
            hard = payload_of(event, payloads.InstanceRebootRequested)["type"] == "HARD"
            self.pub.emit(topic, "RebootInstance", uuid, payloads.RebootInstance(
                instance_uuid=uuid, host=host, hard=hard), cause=event)
        elif kind == "InstanceRescueRequested":
            ref = payload_of(event, payloads.InstanceRescueRequested)["rescue_image_ref"]
            ref = ref or (instance.image["id"] if instance.image else None)
            self.pub.emit(topic, "RescueInstance", uuid, payloads.RescueInstance(
                instance_uuid=uuid, host=host, image=self._image(ref) if ref else None),
                cause=event)
        else:
            command = {"InstanceStopRequested": "StopInstance",
                       "InstanceStartRequested": "StartInstance",
                       "InstanceUnrescueRequested": "UnrescueInstance"}[kind]
            self.pub.emit(topic, command, uuid, {"instance_uuid": uuid, "host": host},
                          cause=event)

    # -- moves: resize, cold and live migration, evacuation ----------------------------
    def _move_requested(self, event: Event) -> None:
        """Nova's conductor migrate_server / rebuild: the migration record opens, and the
        scheduler is asked for a destination (InstanceMigrationStarted)."""
        instance = self._accepted(event)
        if instance is None:
            return
        kind, flavor, requested = _move_of(event, instance.flavor)
        migration = payloads.Migration(
            migration_id=derived_id(event.event_id, "migration"), kind=kind,
            source_host=str(instance.host), source_node=instance.node or str(instance.host),
            dest_host=None, dest_node=None, old_flavor=instance.flavor, new_flavor=flavor,
            requested_host=requested, old_vm_state=instance.vm_state,
            status=MIGRATION_STATUS[kind]["started"])
        self.pub.emit(self.topics.instances, "InstanceMigrationStarted", instance.uuid,
                      payloads.InstanceMigrationStarted(migration=migration), cause=event)

    def _moving(self, event: Event) -> tuple[Instance, payloads.Migration] | None:
        """The instance and its open migration, if `event` is a step of it and no DELETE
        came meanwhile (a delete tears down every host of the move itself)."""
        self._wait_folded(event)
        instance = self.projection.instance(event.aggregate_id)
        m = open_migration(instance, event.payload.get("migration_id")) if instance else None
        if instance is None or m is None or instance.task_state == states.DELETING:
            log.info("%s %s: no such move in progress", event.event_type, event.aggregate_id)
            return None
        return instance, m

    def _migration_scheduled(self, event: Event) -> None:
        """To the destination: claim for the incoming instance (PrepareMigration)."""
        moving = self._moving(event)
        if moving is None:
            return
        instance, m = moving
        p = payload_of(event, payloads.InstanceMigrationScheduled)
        build = self._build(instance.uuid, self.requests.get(instance.uuid), p["host"],
                            p["node"], instance.attempt, m["new_flavor"], moving=True)
        self.pub.emit(self._compute_topic(p["host"]), "PrepareMigration", instance.uuid,
                      payloads.PrepareMigration(instance_uuid=instance.uuid, host=p["host"],
                                                node=p["node"], migration=m, build=build,
                                                ports=list(instance.ports)), cause=event)

    def _migration_claimed(self, event: Event) -> None:
        """The destination holds its claim: the source moves the disks (FinishMigration
        follows from there); an evacuation has no source to ask, the destination
        rebuilds from the image at once."""
        moving = self._moving(event)
        if moving is None:
            return
        instance, m = moving
        p = payload_of(event, payloads.InstanceMigrationClaimed)
        if m["kind"] == "evacuation":
            self.pub.emit(self._compute_topic(p["host"]), "FinishMigration", instance.uuid,
                          payloads.FinishMigration(
                              instance_uuid=instance.uuid, host=p["host"], migration=m,
                              disks=[], power_on=m["old_vm_state"] != states.STOPPED),
                          cause=event)
            return
        self.pub.emit(self._compute_topic(m["source_host"]), "MigrateInstance", instance.uuid,
                      payloads.MigrateInstance(instance_uuid=instance.uuid,
                                               host=m["source_host"], migration=m,
                                               dest_host=p["host"],
                                               dest_instances_path=p["instances_path"]),
                      cause=event)

    def _migration_failed(self, event: Event) -> None:
        """A source that refused after the destination claimed: the destination lets go."""
        p = payload_of(event, payloads.InstanceMigrationFailed)
        if p["stage"] == "migrate" and p["dest_host"]:
            self._wait_folded(event)
            instance = self.projection.instance(event.aggregate_id)
            if instance is not None and instance.migration is not None:
                self.pub.emit(self._compute_topic(p["dest_host"]), "RevertMigration",
                              event.aggregate_id, payloads.RevertMigration(
                                  instance_uuid=event.aggregate_id, host=p["dest_host"],
                                  migration=instance.migration), cause=event)

    def _live_migrated(self, event: Event) -> None:
        """The guest runs on the destination: the source lets go of it."""
        p = payload_of(event, payloads.InstanceLiveMigrated)
        self.pub.emit(self._compute_topic(p["source_host"]), "CleanUpSource", event.aggregate_id,
                      payloads.CleanUpSource(instance_uuid=event.aggregate_id,
                                             host=p["source_host"],
                                             migration_id=p["migration_id"],
                                             kind="live-migration", confirm=False),
                      cause=event)

    def _confirm_requested(self, event: Event) -> None:
        """confirmResize: the source host lets go of the old guest."""
        instance = self._accepted(event)
        m = open_migration(instance) if instance else None
        if instance is None or m is None:
            return
        self.pub.emit(self._compute_topic(m["source_host"]), "CleanUpSource", instance.uuid,
                      payloads.CleanUpSource(instance_uuid=instance.uuid, host=m["source_host"],
                                             migration_id=m["migration_id"], kind=m["kind"],
                                             confirm=True), cause=event)

    def _revert_requested(self, event: Event) -> None:
        """revertResize: the destination gives the instance back to the source."""
        instance = self._accepted(event)
        m = open_migration(instance) if instance else None
        if instance is None or m is None or m["dest_host"] is None:
            return
        self.pub.emit(self._compute_topic(m["dest_host"]), "RevertMigration", instance.uuid,
                      payloads.RevertMigration(instance_uuid=instance.uuid, host=m["dest_host"],
                                               migration=m), cause=event)

    # -- failures --------------------------------------------------------------------------
    def _tried_hosts(self, uuid: str) -> list[str]:
        if uuid in self.tried:
            return self.tried[uuid]
        return self.projection.tried_hosts(uuid)

    def retry_or_fail(self, event: Event, attempt: int, reason: str, retryable: bool) -> None:
        uuid = event.aggregate_id
        request = self.requests.get(uuid) if uuid in self.requests else \
            self.projection.build_request(uuid)
        if request is not None and (request["forced_host"] or request["forced_node"]):
            retryable = False  # Nova's populate_retry: a forced host is never rescheduled
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
    "InstanceRescueRequested": Conductor._power_action,
    "InstanceUnrescueRequested": Conductor._power_action,
    "InstanceResizeRequested": Conductor._move_requested,
    "InstanceLiveMigrationRequested": Conductor._move_requested,
    "InstanceEvacuateRequested": Conductor._move_requested,
    "InstanceMigrationScheduled": Conductor._migration_scheduled,
    "InstanceMigrationClaimed": Conductor._migration_claimed,
    "InstanceMigrationFailed": Conductor._migration_failed,
    "InstanceLiveMigrated": Conductor._live_migrated,
    "InstanceResizeConfirmRequested": Conductor._confirm_requested,
    "InstanceResizeRevertRequested": Conductor._revert_requested,
}
Conductor.WANTS = frozenset(HANDLERS)


def _move_of(event: Event, flavor: payloads.Flavor) -> tuple[str, payloads.Flavor, str | None]:
    """(Nova's migration_type, the flavor after the move, the admin's destination)."""
    if event.event_type == "InstanceResizeRequested":
        p = payload_of(event, payloads.InstanceResizeRequested)
        return ("migration" if p["migrate"] else "resize"), p["flavor"], p["host"]
    if event.event_type == "InstanceLiveMigrationRequested":
        return "live-migration", flavor, payload_of(
            event, payloads.InstanceLiveMigrationRequested)["host"]
    return "evacuation", flavor, payload_of(event, payloads.InstanceEvacuateRequested)["host"]
