"""What an operator does to a server after its boot: DELETE and the server actions.

Each action is accepted in one transaction: the API's own row of the instance is
locked and marked, and the action's event is queued in the outbox (published at
once, or by the relay after a crash). The API answers before anything is torn
down; the conductor decides where the action is carried out (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse
from psycopg import Connection

from novalog import request_ids
from novalog.consoles import console_log_path, console_output
from novalog.domain import states
from novalog.domain.actions import NOT_RESIZED, RESIZE_FINISHED, refusal
from novalog.domain.instance import Instance, open_migration
from novalog.kafka import Topics
from novalog.publish import Publisher
from novalog.read_model import LiveProjection, ServerState
from novalog.tokens import Context
from novalog.web import ApiError, AppState, Auth, state_of
from producers import outbox
from producers.admission import check_resize_quota
from producers.servers import flavor_record
from schemas import payloads

log = logging.getLogger(__name__)
router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


def _locked(conn: Connection[Any], app: AppState, ctx: Context,
            server_id: str) -> tuple[tuple[str, str, str | None], ServerState | None]:
    """The API's row of the instance, locked for the request's transaction (project, user,
    a pending DELETE's request id), and its projected state (None while not projected);
    404 for another project's server or a deleted one."""
    row = conn.execute("SELECT project_id, user_id, delete_request_id FROM accepted_instances "
                       "WHERE uuid = %s FOR UPDATE", (server_id,)).fetchone()
    if row is None or (row[0] != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"Instance {server_id} could not be found.")
    server = LiveProjection(conn, app.settings.db_schema).server(server_id)
    if server is not None and server.vm_state == states.DELETED:
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return (row[0], row[1], row[2]), server


@router.delete("/servers/{server_id}", status_code=204, response_class=Response,
               summary="Delete a server, from any state (Nova's delete)",
               responses={404: {"description": "no such server in your project"}})
def delete_server(server_id: str, request: Request, ctx: Auth, response: Response) -> Response:
    app = state_of(request)
    request_id = request_ids.request_id()
    answer = Response(status_code=204, headers=dict(response.headers))
    with app.pool.connection() as conn, conn.transaction():
        (project_id, user_id, pending), server = _locked(conn, app, ctx, server_id)
        if pending is not None:  # Nova: "already in deleting state", nothing new
            log.info("instance %s is already being deleted (%s)", server_id, pending)
            return answer
        conn.execute("UPDATE accepted_instances SET delete_request_id = %s, "
                     "delete_requested_at = %s WHERE uuid = %s",
                     (request_id, datetime.now(UTC), server_id))
        event = Publisher(app.producer, "api", app.settings.hostname).build(
            "InstanceDeleteRequested", server_id, payloads.InstanceDeleteRequested(
                project_id=project_id, user_id=user_id,
                host=server.host if server else None),
            correlation_id=request_id)
        row = outbox.add(conn, Topics(app.settings.topic_prefix).instances, event)
    outbox.publish_accepted(app.pool, app.producer, [row], f"delete {request_id}")
    return answer


@dataclass(frozen=True)
class Asked:
    """One POST /servers/{id}/action body, understood: Nova's rule name (RULES), the
    event it becomes, the answer's status and body."""

    rule: str
    event_type: str
    payload: dict[str, Any]
    status: int = 202
    body: dict[str, Any] | None = None
    admin_only: str | None = None  # Nova's policy name when only admins may
    host: str | None = None  # a destination the admin asked for


def _no_args(rule: str, event_type: str, status: int = 202) -> Callable[[Any], Asked]:
    def parse(value: Any) -> Asked:
        if value not in (None, {}):
            raise ApiError(400, f"Invalid input for field/attribute {rule}. Value: {value}. "
                                f"{value!r} is not of type 'null'")
        return Asked(rule, event_type, {}, status)
    return parse


def _reboot(value: Any) -> Asked:
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
        raise ApiError(400, "Invalid input for field/attribute type. Value: "
                            f"{kind}. '{kind}' is not one of ['SOFT', 'HARD']")
    hard = kind.upper() == "HARD"
    return Asked("reboot_hard" if hard else "reboot", "InstanceRebootRequested",
                 {"type": kind.upper()})


def _resize(value: Any) -> Asked:
    ref = value.get("flavorRef") if isinstance(value, dict) else None
    if not isinstance(ref, str | int) or ref == "":
        raise ApiError(400, f"Invalid input for field/attribute resize. Value: {value}. "
                            "'flavorRef' is a required property")
    return Asked("resize", "InstanceResizeRequested", {"flavorRef": ref, "migrate": False})


def _migrate(value: Any) -> Asked:
    if value not in (None, {}):  # a destination is 2.56's; novalog advertises 2.1
        raise ApiError(400, f"Invalid input for field/attribute migrate. Value: {value}. "
                            f"{value!r} is not of type 'null'")
    return Asked("migrate", "InstanceResizeRequested", {"migrate": True, "host": None},
                 admin_only="os_compute_api:os-migrate-server:migrate")


def _live_migrate(value: Any) -> Asked:
    if not isinstance(value, dict) or "host" not in value or "block_migration" not in value:
        raise ApiError(400, f"Invalid input for field/attribute os-migrateLive. Value: "
                            f"{value}. 'block_migration' and 'host' are required properties")
    host = value["host"]
    if host is not None and not isinstance(host, str):
        raise ApiError(400, f"Invalid input for field/attribute host. Value: {host}.")
    block = value["block_migration"]
    if block is False or str(block).lower() in ("false", "no", "0", "off"):
        raise ApiError(400, "Shared storage live-migration requires either shared storage or "
                            "boot-from-volume with no local disks.")  # novalog has neither
    return Asked("os-migrateLive", "InstanceLiveMigrationRequested",
                 {"host": host, "block_migration": block in (True, "auto") or
                  str(block).lower() in ("true", "yes", "1", "auto")},
                 admin_only="os_compute_api:os-migrate-server:migrate_live", host=host)


def _evacuate(value: Any) -> Asked:
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid input for field/attribute evacuate. Value: {value}.")
    if "onSharedStorage" not in value:
        raise ApiError(400, f"Invalid input for field/attribute evacuate. Value: {value}. "
                            "'onSharedStorage' is a required property")
    shared = value["onSharedStorage"] in (True, "true", "True", "1", "yes")
    if shared and value.get("adminPass"):
        raise ApiError(400, "admin password can't be changed on existing disk")
    if shared:  # the disks are on the lost host: novalog has no shared storage
        raise ApiError(400, "Invalid state of instance files on shared storage")
    password = value.get("adminPass") or secrets.token_urlsafe(9)
    return Asked("evacuate", "InstanceEvacuateRequested",
                 {"host": value.get("host"), "on_shared_storage": shared}, status=200,
                 body={"adminPass": password}, admin_only="os_compute_api:os-evacuate",
                 host=value.get("host"))


def _rescue(value: Any) -> Asked:
    value = value or {}
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid input for field/attribute rescue. Value: {value}.")
    password = value.get("adminPass") or secrets.token_urlsafe(9)
    return Asked("rescue", "InstanceRescueRequested",
                 {"rescue_image_ref": value.get("rescue_image_ref")}, status=200,
                 body={"adminPass": password})


# POST /servers/{id}/action: the body's one key, and how it is read.
ACTIONS: dict[str, Callable[[Any], Asked]] = {
    "reboot": _reboot,
    "os-stop": _no_args("stop", "InstanceStopRequested"),
    "os-start": _no_args("start", "InstanceStartRequested"),
    "resize": _resize,
    "confirmResize": _no_args("confirmResize", "InstanceResizeConfirmRequested", 204),
    "revertResize": _no_args("revertResize", "InstanceResizeRevertRequested"),
    "migrate": _migrate,
    "os-migrateLive": _live_migrate,
    "evacuate": _evacuate,
    "rescue": _rescue,
    "unrescue": _no_args("unrescue", "InstanceUnrescueRequested"),
}


def _action_of(body: dict[str, Any]) -> Asked:
    """What the body asks for, or 400 as Nova words it."""
    if len(body) != 1:
        raise ApiError(400, "Malformed request body: one action per request")
    key, value = next(iter(body.items()))
    if key not in ACTIONS:
        raise ApiError(400, f"There is no such action: {key}")
    return ACTIONS[key](value)


def _service_up(conn: Connection[Any], app: AppState, host: str) -> bool | None:
    """Whether the host's nova-compute is up (heartbeat age); None when it has none."""
    service = LiveProjection(conn, app.settings.db_schema).compute_service(host)
    if service is None:
        return None
    beat, _disabled = service
    return beat is not None and datetime.now(UTC) - beat <= timedelta(
        seconds=app.settings.service_down_time_s)


def _check_move(conn: Connection[Any], app: AppState, ctx: Context, asked: Asked,
                server: Instance) -> dict[str, Any]:
    """Nova's checks of a move before anything is published; the event's payload."""
    uuid, source = server.uuid, str(server.host)
    up = _service_up(conn, app, source)
    if asked.rule == "evacuate":
        if up:
            raise ApiError(400, f"Compute service of {source} is still in use.")
    elif up is False and asked.rule in ("resize", "migrate", "os-migrateLive",
                                       "confirmResize"):
        raise ApiError(409, "Service is unavailable at this time.")
    if asked.host is not None:
        known = _service_up(conn, app, asked.host) is not None
        if asked.rule == "evacuate":
            if asked.host == source:
                raise ApiError(400, "The target host can't be the same one.")
            if not known:
                raise ApiError(404, f"Compute host {asked.host} not found.")
        elif not known:
            raise ApiError(400, f"Compute host {asked.host} could not be found.")
        elif asked.host == source:
            raise ApiError(400, f"Unable to migrate instance ({uuid}) to current host "
                                f"({source}).")
    if asked.rule in ("confirmResize", "revertResize"):
        m = open_migration(server)
        if m is None or m["status"] != RESIZE_FINISHED:
            raise ApiError(400, NOT_RESIZED)
    payload = dict(asked.payload)
    if asked.event_type == "InstanceResizeRequested":
        if asked.rule == "resize":
            try:
                flavor = flavor_record(conn, payload.pop("flavorRef"))
            except ApiError:
                raise ApiError(400, f"Flavor {asked.payload['flavorRef']} could not be "
                                    "found.") from None
            if flavor["flavorid"] == server.flavor["flavorid"]:
                raise ApiError(400, "When resizing, instances must change flavor!")
            check_resize_quota(conn, server.project_id, server.flavor, flavor)
            payload["host"] = None
        else:
            flavor = server.flavor
        payload["flavor"] = flavor
    return payload


@router.post("/servers/{server_id}/action", status_code=202,
             summary="reboot, os-stop, os-start, resize, confirmResize, revertResize, "
                     "migrate, os-migrateLive, evacuate, rescue, unrescue",
             responses={400: {"description": "not an action novalog knows, or bad input"},
                        403: {"description": "an admin's action, or over quota"},
                        404: {"description": "no such server in your project"},
                        409: {"description": "not allowed from the server's state"}})
def server_action(server_id: str, request: Request, ctx: Auth, response: Response,
                  body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    if "os-getConsoleOutput" in body and len(body) == 1:
        return _console_output(server_id, request, ctx, body["os-getConsoleOutput"])
    asked = _action_of(body)
    app = state_of(request)
    request_id = request_ids.request_id()
    name = asked.rule.removesuffix("_hard")
    with app.pool.connection() as conn, conn.transaction():
        (_, _, pending), _row = _locked(conn, app, ctx, server_id)  # 404 before 403, as Nova
        if asked.admin_only and not ctx.is_admin:
            raise ApiError(403, f"Policy doesn't allow {asked.admin_only} to be performed.")
        server = LiveProjection(conn, app.settings.db_schema).instance(server_id)
        if server is None:  # accepted, not projected yet: still building
            raise ApiError(409, f"Cannot '{name}' instance {server_id} "
                                f"while it is in vm_state {states.BUILDING}")
        task = states.DELETING if pending is not None else server.task_state
        if asked.rule != "reboot_hard" and server.host is None:
            raise ApiError(409, f"Instance {server_id} is not ready")
        refused = refusal(asked.rule, server_id, server.vm_state, task,
                          server.launched_at is not None)
        if refused:
            raise ApiError(409, refused)
        payload = asked.payload
        if open_migration(server) is not None and asked.event_type not in ANSWERS:
            raise ApiError(409, f"Cannot '{name}' instance {server_id} while it is in "
                                f"task_state {server.task_state} (a move is not over)")
        if asked.event_type in MOVES:
            payload = _check_move(conn, app, ctx, asked, server)
        event = Publisher(app.producer, "api", app.settings.hostname).build(
            asked.event_type, server_id, payload, correlation_id=request_id)
        row = outbox.add(conn, Topics(app.settings.topic_prefix).instances, event)
    outbox.publish_accepted(app.pool, app.producer, [row], f"{name} {request_id}")
    if asked.body is not None:
        return JSONResponse(asked.body, status_code=asked.status, headers=dict(response.headers))
    return Response(status_code=asked.status, headers=dict(response.headers))


def _console_length(value: Any) -> int | None:
    """Nova's schema: an integer (or a string of one) >= -1, or null; -1 is everything."""
    raw = value.get("length") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) - {"length"} or isinstance(raw, bool) or \
            not (raw is None or isinstance(raw, int) or
                 (isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw))):
        raise ApiError(400, f"Invalid input for field/attribute os-getConsoleOutput. "
                            f"Value: {value}.")
    length = None if raw is None else int(raw)
    if length is not None and length < -1:
        raise ApiError(400, f"Invalid input for field/attribute length. Value: {raw}. "
                            f"{length} is less than the minimum of -1")
    return None if length == -1 else length


def _console_output(server_id: str, request: Request, ctx: Auth,
                    value: Any) -> JSONResponse:
    """Nova's os-getConsoleOutput: the guest's serial console, read where its host wrote
    it (a read: nothing is published). 409 while the instance has no host or is being
    deleted or migrated."""
    length = _console_length(value)
    app = state_of(request)
    with app.pool.connection() as conn:
        _row, server = _locked(conn, app, ctx, server_id)
        pending = _row[2]
    if server is None or server.host is None:
        raise ApiError(409, f"Instance {server_id} is not ready")
    if pending is not None or server.task_state in (states.DELETING, states.MIGRATING):
        task = states.DELETING if pending is not None else server.task_state
        raise ApiError(409, f"Cannot 'get_console_output' instance {server_id} while it is "
                            f"in task_state {task}")
    path = console_log_path(app.settings.home, server.host, server_id)
    return JSONResponse({"output": console_output(path, length)})


ANSWERS = frozenset({"InstanceResizeConfirmRequested", "InstanceResizeRevertRequested"})
MOVES = frozenset({"InstanceResizeRequested", "InstanceLiveMigrationRequested",
                   "InstanceEvacuateRequested", "InstanceResizeConfirmRequested",
                   "InstanceResizeRevertRequested"})
