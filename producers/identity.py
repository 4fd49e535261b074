"""Keystone, minimal: version discovery, password authentication, token revocation.

Hashes and tokens are `novalog/tokens.py`; the token check every other endpoint
depends on (`Auth`) is `novalog/web.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates the response bodies

from novalog.tokens import verify_password
from novalog.views import Link
from novalog.web import AUTH_REQUIRED, ApiError, Auth, state_of, token_service

router = APIRouter(prefix="/identity", tags=["identity"])


class KeystoneVersion(TypedDict):
    id: str
    status: str
    links: list[Link]


class VersionValues(TypedDict):
    values: list[KeystoneVersion]


class Versions(TypedDict):
    versions: VersionValues


class OneVersion(TypedDict):
    version: KeystoneVersion


class Domain(TypedDict):
    id: str
    name: str


class DomainOwned(TypedDict):
    """A user or a project, with its domain."""

    id: str
    name: str
    domain: Domain


class Role(TypedDict):
    id: str
    name: str


class Endpoint(TypedDict):
    interface: str
    region: str
    url: str


class CatalogEntry(TypedDict):
    type: str
    name: str
    endpoints: list[Endpoint]


class Token(TypedDict):
    methods: list[str]
    issued_at: str
    expires_at: str
    user: DomainOwned
    project: DomainOwned
    roles: list[Role]
    catalog: list[CatalogEntry]


class IssuedToken(TypedDict):
    token: Token


def _self_link(request: Request, path: str) -> str:
    return str(request.base_url).rstrip("/") + path


@router.get("", summary="Keystone version discovery")
def versions(request: Request) -> Versions:
    link = _self_link(request, "/identity/v3/")
    return {"versions": {"values": [{"id": "v3.14", "status": "stable",
                                     "links": [{"rel": "self", "href": link}]}]}}


@router.get("/v3", summary="Keystone v3")
def version_v3(request: Request) -> OneVersion:
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
def issue_token(body: AuthRequest, request: Request, response: Response) -> IssuedToken:
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
