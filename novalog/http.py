"""The HTTP app factory (nova-api) and the `api` role that serves it.

Endpoints that publish live in `producers/`, query endpoints in
`projections/`; this module assembles them with the shared pieces: settings,
health, the OpenAPI document FastAPI derives from the typed handlers.
"""

from __future__ import annotations

import threading
from importlib.metadata import version

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from novalog.db import DatabaseUnavailable, check_database
from novalog.kafka import BrokerUnavailable, check_broker
from novalog.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """A new app bound to `settings`; no client is created until a request needs it."""
    app = FastAPI(
        title="novalog",
        version=version("novalog"),
        description="OpenStack Nova's boot flow as an event-sourced system.",
    )

    @app.get("/", summary="What this endpoint is")
    def root() -> dict[str, str]:
        return {"name": "novalog", "version": version("novalog"), "openapi": "/openapi.json"}

    @app.get("/healthz", summary="Broker and database reachability",
             responses={503: {"description": "the broker or the database does not answer"}})
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
        healthy = all(v.startswith("ok") for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks},
                            status_code=200 if healthy else 503)

    return app


def serve(settings: Settings, stop: threading.Event) -> None:
    """The `api` role: uvicorn on NOVALOG_API_HOST:NOVALOG_API_PORT until stopped."""
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), host=settings.api_host, port=settings.api_port,
        log_level="info", access_log=False,
    ))

    def exit_when_stopped() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=exit_when_stopped, daemon=True).start()
    server.run()
