"""The HTTP app factory (nova-api + a minimal keystone) and the `api` role that serves it.

Endpoints that publish live in `producers/`, query endpoints in
`projections/api.py`; what they share (errors, app state, authentication) is in
`novalog/web.py`. This module, part of the composition layer, assembles them and
adds the middleware, the error handlers and health.
"""

from __future__ import annotations

import threading
from importlib.metadata import version
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from novalog.db import DatabaseUnavailable, check_database
from novalog.kafka import BrokerUnavailable, check_broker
from novalog.middleware import ApiMiddleware
from novalog.settings import Settings
from novalog.web import (
    ApiError,
    AppState,
    error_body,
)
from producers.actions import router as actions_router
from producers.flavors import router as flavors_write_router
from producers.identity import router as identity_router
from producers.images import router as images_write_router
from producers.keypairs import router as keypairs_write_router
from producers.networks import router as networks_write_router
from producers.outbox import relay
from producers.quotas import router as quotas_router
from producers.server_groups import router as server_groups_write_router
from producers.servers import router as servers_router
from producers.services import router as services_router
from producers.volumes import compute_router as attach_write_router
from producers.volumes import router as volumes_write_router
from projections.api import history_router
from projections.api import router as query_router
from projections.flavors import router as flavors_router
from projections.hosts import router as hosts_router
from projections.hosts import services_health
from projections.images import router as images_router
from projections.keypairs import router as keypairs_router
from projections.networks import router as networks_router
from projections.server_groups import router as server_groups_router
from projections.volumes import compute_router as attach_router
from projections.volumes import router as volumes_router


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "body")


def create_app(settings: Settings) -> FastAPI:
    """A new app bound to `settings`; no client is created until a request needs it."""
    app = FastAPI(
        title="novalog",
        version=version("novalog"),
        description="OpenStack Nova's boot flow as an event-sourced system.",
    )
    app.state.novalog = AppState(settings)
    app.add_middleware(ApiMiddleware)  # request ids, microversions, body limits

    @app.exception_handler(ApiError)
    def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message), status_code=exc.status)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    def _database_away(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(503, "The database is unavailable; novalog cannot "
                                            "answer or accept requests right now. Try again "
                                            "shortly."), status_code=503)

    @app.exception_handler(psycopg.DataError)
    def _bad_value(_request: Request, exc: Exception) -> JSONResponse:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
        return JSONResponse(error_body(400, f"Invalid input: {first}"), status_code=400)

    @app.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        where = _location(loc)
        if first.get("type") == "extra_forbidden" and loc:  # Nova's jsonschema wording
            where = _location(loc[:-1])
            message = (f"Invalid input for field/attribute {where}. Additional properties "
                       f"are not allowed ('{loc[-1]}' was unexpected)" if where else
                       f"Additional properties are not allowed ('{loc[-1]}' was unexpected)")
        elif where:
            message = f"Invalid input for field/attribute {where}. {first.get('msg')}"
        else:
            message = f"Invalid request body: {first.get('msg')}"
        return JSONResponse(error_body(400, message), status_code=400)

    @app.get("/", summary="What this endpoint is")
    def root() -> dict[str, str]:
        return {"name": "novalog", "version": version("novalog"), "openapi": "/openapi.json"}

    @app.get("/healthz", summary="Broker and database reachability, control-plane services up",
             responses={503: {"description": "the broker or the database does not answer, "
                                             "or a control-plane service is down"}})
    def healthz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            check_broker(settings.require_bootstrap(), timeout=2)
            checks["broker"] = "ok"
        except BrokerUnavailable as exc:
            checks["broker"] = str(exc)
        try:
            server = check_database(settings.require_database_url(), timeout=2)
            checks["database"] = f"ok (PostgreSQL {server})"
        except DatabaseUnavailable as exc:
            checks["database"] = str(exc)
        if checks["database"].startswith("ok"):
            checks["services"] = services_health(app.state.novalog.pool, settings)
        healthy = all(v.startswith("ok") for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks},
                            status_code=200 if healthy else 503)

    app.include_router(identity_router)
    app.include_router(servers_router)
    app.include_router(actions_router)
    app.include_router(services_router)
    app.include_router(quotas_router)
    app.include_router(query_router)
    app.include_router(flavors_router)
    app.include_router(flavors_write_router)
    app.include_router(hosts_router)
    app.include_router(keypairs_router)
    app.include_router(keypairs_write_router)
    app.include_router(server_groups_router)
    app.include_router(volumes_router)
    app.include_router(volumes_write_router)
    app.include_router(attach_router)
    app.include_router(attach_write_router)
    app.include_router(server_groups_write_router)
    app.include_router(history_router)
    app.include_router(images_router)
    app.include_router(images_write_router)
    app.include_router(networks_router)
    app.include_router(networks_write_router)
    return app


def serve(settings: Settings, stop: threading.Event) -> None:
    """The `api` role: uvicorn on NOVALOG_API_HOST:NOVALOG_API_PORT until stopped."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port,
        log_level="info", access_log=False, log_config=None,  # the role's logging
    ))

    def exit_when_stopped() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=exit_when_stopped, daemon=True).start()
    state: AppState = app.state.novalog
    threading.Thread(target=relay, args=(state.pool, state.producer, stop), daemon=True,
                     name="outbox-relay").start()
    try:
        server.run()
    finally:
        app.state.novalog.close()
