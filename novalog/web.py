"""HTTP plumbing every router shares: Nova-shaped errors, the app's state, who is calling.

Routers (producers/, projections/api.py) import this module and nothing of each
other; the app factory (novalog/http.py) assembles them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, NotRequired, TypedDict

from fastapi import Depends, Header, Request
from psycopg_pool import ConnectionPool

from novalog.db import make_pool
from novalog.kafka import EventProducer
from novalog.settings import Settings
from novalog.tokens import Context, TokenService, load_keys
from novalog.views import Link

AUTH_REQUIRED = "The request you have made requires authentication."
FAULT_NAMES = {400: "badRequest", 403: "forbidden", 404: "itemNotFound",
               406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit",
               429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable"}
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any valid request (user data is <= 64 KiB)


MIN_MICROVERSION = MAX_MICROVERSION = (2, 1)  # honoured completely; see docs/decisions.md


def dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def compute_microversion(headers: Mapping[str, str]) -> tuple[int, int]:
    """The microversion a compute request asks for (OpenStack-API-Version: compute X.Y, or
    the legacy X-OpenStack-Nova-API-Version), 'latest' being the maximum; none: 2.1.
    ApiError 400 for a malformed one, 406 for one outside min..max, as Nova."""
    raw = None
    for part in headers.get("openstack-api-version", "").split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() == "compute":
            raw = value.strip()
    if raw is None:
        raw = headers.get("x-openstack-nova-api-version")
    if raw is None:
        return MIN_MICROVERSION
    if raw.lower() == "latest":
        return MAX_MICROVERSION
    major, dot, minor = raw.partition(".")
    if not (dot and digits(major) and digits(minor)):
        raise ApiError(400, f"Invalid API version request: {raw!r} is not of the form X.Y")
    asked = (int(major), int(minor))
    if not MIN_MICROVERSION <= asked <= MAX_MICROVERSION:
        raise ApiError(406, f"Version {raw} is not supported by the API. Minimum is "
                            f"{dotted(MIN_MICROVERSION)} and maximum is "
                            f"{dotted(MAX_MICROVERSION)}.")
    return asked


def digits(text: str) -> bool:
    """Only ASCII digits: str.isdigit() is also true of '³', which int() refuses (a 500
    the API fuzz found)."""
    return text.isascii() and text.isdigit()


class ApiError(Exception):
    """An error answered the way Nova does: {"badRequest": {"code": 400, "message": ...}}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ErrorDetail(TypedDict):
    code: int
    title: NotRequired[str]
    message: str


def error_body(status: int, message: str) -> dict[str, ErrorDetail]:
    """{fault name: {code, message}}, the name depending on the status."""
    if status == 401:  # keystonemiddleware's shape
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    return {FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}}


@dataclass
class AppState:
    """What the request handlers share; created lazily on first use."""

    settings: Settings
    _pool: ConnectionPool | None = None
    _producer: EventProducer | None = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = make_pool(self.settings, max_size=8, timeout=5.0)
        return self._pool

    @property
    def producer(self) -> EventProducer:
        if self._producer is None:
            self._producer = EventProducer(self.settings, linger_ms=1,
                                           delivery_timeout_ms=300_000)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
        if self._pool is not None:
            self._pool.close()


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.novalog
    return state


def token_service(request: Request) -> TokenService:
    app_state = request.app.state
    service: TokenService | None = getattr(app_state, "tokens", None)
    if service is None:
        settings = state_of(request).settings
        service = TokenService(load_keys(settings), timedelta(seconds=settings.token_ttl_s))
        app_state.tokens = service
    return service


def authenticate(request: Request,
                 x_auth_token: Annotated[str | None, Header()] = None) -> Context:
    """FastAPI dependency: 401 unless X-Auth-Token is a valid, unexpired, unrevoked token."""
    if not x_auth_token:
        raise ApiError(401, AUTH_REQUIRED)
    try:
        ctx = token_service(request).validate(x_auth_token)
    except ValueError:
        raise ApiError(401, AUTH_REQUIRED) from None
    with state_of(request).pool.connection() as conn:
        conn.autocommit = True  # a lone read on every request: no BEGIN and COMMIT round trips
        try:
            revoked = conn.execute("SELECT 1 FROM revoked_tokens WHERE token_id = %s",
                                   (ctx.token_id,)).fetchone()
        finally:
            if not conn.broken:  # a broken one is dropped by the pool (and would refuse)
                conn.autocommit = False
    if revoked:
        raise ApiError(401, AUTH_REQUIRED)
    return ctx


Auth = Annotated[Context, Depends(authenticate)]


def require_admin(ctx: Context, policy: str) -> None:
    """Nova's default policy for admin-only APIs: 403 naming the rule otherwise."""
    if not ctx.is_admin:
        raise ApiError(403, f"Policy doesn't allow {policy} to be performed.")


def public_base(request: Request) -> str:
    """The base URL clients are told to use: NOVALOG_PUBLIC_URL, else the one they called."""
    return state_of(request).settings.public_url or str(request.base_url).rstrip("/")


def server_link(request: Request, server_id: str) -> list[Link]:
    base = public_base(request)
    return [{"rel": "self", "href": f"{base}/compute/v2.1/servers/{server_id}"},
            {"rel": "bookmark", "href": f"{base}/compute/servers/{server_id}"}]
