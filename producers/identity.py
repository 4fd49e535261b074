"""Keystone, minimal: password authentication, Fernet tokens, the token check every
other endpoint depends on.

- Passwords are stored only as argon2 hashes (argon2-cffi), in UserCreated events.
- Tokens are Fernet tokens (cryptography): encrypted and authenticated, carrying
  user, project, roles and expiry. MultiFernet takes a list of keys: the first
  signs, all of them verify, so a key can be rotated in without invalidating
  unexpired tokens.
- Keys come from NOVALOG_TOKEN_KEYS (comma-separated), else from
  `$NOVALOG_HOME/fernet-keys`, created on first use (mode 600).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from novalog.http import ApiError, state_of
from novalog.settings import Settings

AUTH_REQUIRED = "The request you have made requires authentication."
HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash, password)
    except VerificationError:
        return False


def load_keys(settings: Settings) -> list[bytes]:
    """Token keys: NOVALOG_TOKEN_KEYS, or a key file of the deployment made on first use."""
    configured = os.environ.get("NOVALOG_TOKEN_KEYS")
    if configured:
        return [k.strip().encode() for k in configured.split(",") if k.strip()]
    path = settings.home / "fernet-keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins, the others use its key
        tmp.unlink(missing_ok=True)
    return [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Context:
    """Who is calling (Nova's RequestContext)."""

    user_id: str
    project_id: str
    roles: tuple[str, ...]
    token_id: str
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenService:
    def __init__(self, keys: list[bytes], ttl: timedelta = timedelta(hours=1)) -> None:
        if not keys:
            raise ValueError("no token keys")
        self.fernet = MultiFernet([Fernet(k) for k in keys])
        self.ttl = ttl

    def issue(self, user_id: str, project_id: str, roles: list[str],
              now: datetime | None = None) -> tuple[str, Context]:
        issued = now or datetime.now(UTC)
        ctx = Context(user_id, project_id, tuple(sorted(roles)), uuid.uuid4().hex,
                      issued + self.ttl)
        body = {"u": user_id, "p": project_id, "r": list(ctx.roles), "t": ctx.token_id,
                "e": ctx.expires_at.timestamp()}
        return self.fernet.encrypt(json.dumps(body).encode()).decode(), ctx

    def validate(self, token: str, now: datetime | None = None) -> Context:
        """The caller's context; ValueError for a forged, malformed or expired token."""
        try:
            body = json.loads(self.fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError, TypeError):
            raise ValueError("invalid token") from None
        expires = datetime.fromtimestamp(body["e"], UTC)
        if (now or datetime.now(UTC)) >= expires:
            raise ValueError("expired token")
        return Context(body["u"], body["p"], tuple(body["r"]), body["t"], expires)


def token_service(request: Request) -> TokenService:
    app_state = request.app.state
    service: TokenService | None = getattr(app_state, "tokens", None)
    if service is None:
        settings = state_of(request).settings
        ttl = int(os.environ.get("NOVALOG_TOKEN_TTL_S", "3600"))
        service = TokenService(load_keys(settings), timedelta(seconds=ttl))
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
        revoked = conn.execute("SELECT 1 FROM revoked_tokens WHERE token_id = %s",
                               (ctx.token_id,)).fetchone()
    if revoked:
        raise ApiError(401, AUTH_REQUIRED)
    return ctx


Auth = Annotated[Context, Depends(authenticate)]

router = APIRouter(prefix="/identity", tags=["identity"])


def _self_link(request: Request, path: str) -> str:
    return str(request.base_url).rstrip("/") + path


@router.get("", summary="Keystone version discovery")
def versions(request: Request) -> dict[str, Any]:
    link = _self_link(request, "/identity/v3/")
    return {"versions": {"values": [{"id": "v3.14", "status": "stable",
                                     "links": [{"rel": "self", "href": link}]}]}}


@router.get("/v3", summary="Keystone v3")
def version_v3(request: Request) -> dict[str, Any]:
    link = _self_link(request, "/identity/v3/")
    return {"version": {"id": "v3.14", "status": "stable",
                        "links": [{"rel": "self", "href": link}]}}


class _Named(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    id: str | None = None


class _PasswordUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    id: str | None = None
    password: str = Field(max_length=4096)
    domain: _Named | None = None


class _Password(BaseModel):
    user: _PasswordUser


class _Identity(BaseModel):
    methods: list[str]
    password: _Password


class _ProjectScope(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    id: str | None = None
    domain: _Named | None = None


class _Scope(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: _ProjectScope | None = None


class _Auth(BaseModel):
    identity: _Identity
    scope: _Scope | None = None


class AuthRequest(BaseModel):
    auth: _Auth


LOCKOUT_FAILURES = 5  # failed logins of one user name within LOCKOUT_WINDOW ...
LOCKOUT_WINDOW_S = 300  # ... lock it out for the rest of the window (429)


def _check_lockout(conn: Any, username: str) -> None:
    row = conn.execute(
        "SELECT count(*), max(failed_at) FROM auth_failures WHERE username = %s AND "
        "failed_at > now() - make_interval(secs => %s)", (username, LOCKOUT_WINDOW_S)
    ).fetchone()
    if row and row[0] >= LOCKOUT_FAILURES:
        wait = int((row[1] + timedelta(seconds=LOCKOUT_WINDOW_S)
                    - datetime.now(UTC)).total_seconds()) + 1
        raise ApiError(429, f"Too many failed authentication attempts for this user; "
                            f"try again in {wait} seconds.")


@router.post("/v3/auth/tokens", status_code=201, summary="Password authentication",
             responses={401: {"description": "wrong user, password or project"},
                        429: {"description": "too many failed attempts: locked out"}})
def issue_token(body: AuthRequest, request: Request, response: Response) -> dict[str, Any]:
    if "password" not in body.auth.identity.methods:
        raise ApiError(400, "Only the password method is supported")
    creds = body.auth.identity.password.user
    pool = state_of(request).pool
    username = creds.id or creds.name or ""
    with pool.connection() as conn:
        _check_lockout(conn, username)
        user = conn.execute(
            "SELECT user_id, name, password_hash, default_project_id FROM users "
            "WHERE (%s::text IS NOT NULL AND user_id = %s) OR (%s::text IS NULL AND name = %s)",
            (creds.id, creds.id, creds.id, creds.name)).fetchone()
        if user is None or not verify_password(user[2], creds.password):
            conn.execute("INSERT INTO auth_failures (username) VALUES (%s)", (username,))
            conn.commit()
            raise ApiError(401, AUTH_REQUIRED)
        conn.execute("DELETE FROM auth_failures WHERE username = %s", (username,))
        scope = body.auth.scope.project if body.auth.scope else None
        project = conn.execute(
            "SELECT project_id, name FROM projects WHERE project_id = %s OR name = %s "
            "ORDER BY project_id = %s DESC LIMIT 1",
            (scope.id if scope else user[3], scope.name if scope else None,
             scope.id if scope else user[3])).fetchone()
        if project is None:
            raise ApiError(401, AUTH_REQUIRED)
        roles = [r[0] for r in conn.execute(
            "SELECT role FROM role_assignments WHERE user_id = %s AND project_id = %s",
            (user[0], project[0])).fetchall()]
    if not roles:
        raise ApiError(401, AUTH_REQUIRED)  # no role on that project: not authorised there
    token, ctx = token_service(request).issue(user[0], project[0], roles)
    response.headers["X-Subject-Token"] = token
    base = str(request.base_url).rstrip("/")
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"token": {
        "methods": ["password"],
        "issued_at": now,
        "expires_at": ctx.expires_at.isoformat().replace("+00:00", "Z"),
        "user": {"id": user[0], "name": user[1], "domain": {"id": "default", "name": "Default"}},
        "project": {"id": project[0], "name": project[1],
                    "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": r, "name": r} for r in roles],
        "catalog": [
            {"type": "identity", "name": "keystone", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": f"{base}/identity"}]},
            {"type": "compute", "name": "nova", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": f"{base}/compute/v2.1"}]},
        ],
    }}


@router.delete("/v3/auth/tokens", status_code=204, summary="Revoke a token",
               responses={404: {"description": "X-Subject-Token is not a valid token"}})
def revoke_token(request: Request, ctx: Auth,
                 x_subject_token: Annotated[str | None, Header()] = None) -> Response:
    """Revoke X-Subject-Token: one's own token, or anyone's for an admin (as Keystone)."""
    if not x_subject_token:
        raise ApiError(400, "X-Subject-Token is required")
    try:
        target = token_service(request).validate(x_subject_token)
    except ValueError:
        raise ApiError(404, "Could not find token.") from None
    if target.user_id != ctx.user_id and not ctx.is_admin:
        raise ApiError(403, "You are not authorized to revoke that token.")
    with state_of(request).pool.connection() as conn:
        conn.execute("INSERT INTO revoked_tokens (token_id, expires_at) VALUES (%s, %s) "
                     "ON CONFLICT DO NOTHING", (target.token_id, target.expires_at))
        conn.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")  # expired anyway
    return Response(status_code=204)
