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

from novalog.tokens import Context, verify_password
from novalog.views import Link
from novalog.web import AUTH_REQUIRED, ApiError, Auth, public_base, state_of, token_service
from producers.catalog import entity_id

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
    id: str
    interface: str
    region: str
    region_id: str
    url: str


class CatalogEntry(TypedDict):
    id: str
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
    return public_base(request) + path


REGION = "RegionOne"
# type, name, path under the base URL. Image and network are unversioned: the clients add
# /v2 and /v2.0 themselves (../shared/OPENSTACK_CLIENTS.md section 1).
# Block storage is versioned with the project in the path, as Cinder's catalogs have it
# (Keystone substitutes %(project_id)s), under both type names the clients look for.
SERVICES = [("identity", "keystone", "/identity"), ("compute", "nova", "/compute/v2.1"),
            ("image", "glance", "/image"), ("network", "neutron", "/networking"),
            ("block-storage", "cinder", "/volume/v3/%(project_id)s"),
            ("volumev3", "cinderv3", "/volume/v3/%(project_id)s")]


def catalog(base: str, project_id: str = "") -> list[CatalogEntry]:
    """Every service novalog serves, public and internal at the same URL, one region."""
    return [{"id": entity_id("service", kind), "type": kind, "name": name, "endpoints": [
        {"id": entity_id("endpoint", f"{kind}/{interface}"), "interface": interface,
         "region": REGION, "region_id": REGION,
         "url": base + path.replace("%(project_id)s", project_id)}
        for interface in ("public", "internal")]} for kind, name, path in SERVICES]


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
    return _token_body(request, ctx, (user[0], user[1]), (project[0], project[1]),
                       datetime.now(UTC))


def _token_body(request: Request, ctx: Context, user: tuple[str, str],
                project: tuple[str, str], issued_at: datetime) -> IssuedToken:
    def z(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    default: Domain = {"id": "default", "name": "Default"}
    return {"token": {
        "methods": ["password"], "issued_at": z(issued_at), "expires_at": z(ctx.expires_at),
        "user": {"id": user[0], "name": user[1], "domain": default},
        "project": {"id": project[0], "name": project[1], "domain": default},
        "roles": [{"id": r, "name": r} for r in ctx.roles],
        "catalog": catalog(public_base(request), project[0]),
    }}


@router.get("/v3/auth/tokens", summary="Validate a token (X-Subject-Token)",
            responses={404: {"description": "X-Subject-Token is not a valid token"}})
def validate_token(request: Request, response: Response, ctx: Auth,
                   x_subject_token: Annotated[str | None, Header()] = None) -> IssuedToken:
    """One's own token, or anyone's for an admin, as Keystone's policy has it."""
    target = _subject(request, ctx, x_subject_token)
    with state_of(request).pool.connection() as conn:
        revoked = conn.execute("SELECT 1 FROM revoked_tokens WHERE token_id = %s",
                               (target.token_id,)).fetchone()
        user = conn.execute("SELECT user_id, name FROM users WHERE user_id = %s",
                            (target.user_id,)).fetchone()
        project = conn.execute("SELECT project_id, name FROM projects WHERE project_id = %s",
                               (target.project_id,)).fetchone()
    if revoked or user is None or project is None:
        raise ApiError(404, "Could not find token.")
    response.headers["X-Subject-Token"] = x_subject_token or ""
    issued = target.expires_at - token_service(request).ttl
    return _token_body(request, target, (user[0], user[1]), (project[0], project[1]), issued)


def _subject(request: Request, ctx: Context, x_subject_token: str | None) -> Context:
    if not x_subject_token:
        raise ApiError(400, "X-Subject-Token is required")
    try:
        target = token_service(request).validate(x_subject_token)
    except ValueError:
        raise ApiError(404, "Could not find token.") from None
    if target.user_id != ctx.user_id and not ctx.is_admin:
        raise ApiError(403, "You are not authorized to perform the requested action.")
    return target


@router.delete("/v3/auth/tokens", status_code=204, summary="Revoke a token",
               responses={404: {"description": "X-Subject-Token is not a valid token"}})
def revoke_token(request: Request, ctx: Auth,
                 x_subject_token: Annotated[str | None, Header()] = None) -> Response:
    """Revoke X-Subject-Token: one's own token, or anyone's for an admin (as Keystone)."""
    target = _subject(request, ctx, x_subject_token)
    with state_of(request).pool.connection() as conn:
        conn.execute("INSERT INTO revoked_tokens (token_id, expires_at) VALUES (%s, %s) "
                     "ON CONFLICT DO NOTHING", (target.token_id, target.expires_at))
        conn.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")  # expired anyway
    return Response(status_code=204)


class ProjectView(TypedDict):
    id: str
    name: str
    domain_id: str
    enabled: bool
    description: str
    is_domain: bool
    parent_id: str
    links: dict[str, str]


class Projects(TypedDict):
    projects: list[ProjectView]


class UserView(TypedDict):
    id: str
    name: str
    domain_id: str
    enabled: bool
    default_project_id: str | None
    links: dict[str, str]


class Users(TypedDict):
    users: list[UserView]


def _projects(request: Request, only: str | None, name: str | None) -> Projects:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT project_id, name FROM projects WHERE (%(only)s::text IS NULL OR "
            "project_id = %(only)s) AND (%(name)s::text IS NULL OR name = %(name)s) "
            "ORDER BY name", {"only": only, "name": name}).fetchall()
    return {"projects": [{
        "id": r[0], "name": r[1], "domain_id": "default", "enabled": True, "description": "",
        "is_domain": False, "parent_id": "default",
        "links": {"self": _self_link(request, f"/identity/v3/projects/{r[0]}")}} for r in rows]}


def _admin(ctx: Context) -> None:
    if not ctx.is_admin:
        raise ApiError(403, "You are not authorized to perform the requested action.")


@router.get("/v3/projects", summary="Every project (admin)")
def list_projects(request: Request, ctx: Auth, name: str | None = None) -> Projects:
    _admin(ctx)
    return _projects(request, None, name)


@router.get("/v3/auth/projects", summary="The projects the caller may scope to")
def my_projects(request: Request, ctx: Auth) -> Projects:
    with state_of(request).pool.connection() as conn:
        ids = [r[0] for r in conn.execute("SELECT DISTINCT project_id FROM role_assignments "
                                          "WHERE user_id = %s", (ctx.user_id,)).fetchall()]
    found = [_projects(request, pid, None)["projects"] for pid in ids]
    return {"projects": sorted((p for ps in found for p in ps), key=lambda p: p["name"])}


@router.get("/v3/projects/{project_id}", summary="One project (admin, or one's own)")
def show_project(project_id: str, request: Request, ctx: Auth) -> dict[str, ProjectView]:
    if project_id != ctx.project_id:
        _admin(ctx)
    found = _projects(request, project_id, None)["projects"]
    if not found:
        raise ApiError(404, f"Could not find project: {project_id}.")
    return {"project": found[0]}


def _users(request: Request, only: str | None, name: str | None) -> Users:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            "SELECT user_id, name, default_project_id FROM users WHERE (%(only)s::text IS NULL "
            "OR user_id = %(only)s) AND (%(name)s::text IS NULL OR name = %(name)s) "
            "ORDER BY name", {"only": only, "name": name}).fetchall()
    return {"users": [{
        "id": r[0], "name": r[1], "domain_id": "default", "enabled": True,
        "default_project_id": r[2],
        "links": {"self": _self_link(request, f"/identity/v3/users/{r[0]}")}} for r in rows]}


@router.get("/v3/users", summary="Every user (admin)")
def list_users(request: Request, ctx: Auth, name: str | None = None) -> Users:
    _admin(ctx)
    return _users(request, None, name)


@router.get("/v3/users/{user_id}", summary="One user (admin, or oneself)")
def show_user(user_id: str, request: Request, ctx: Auth) -> dict[str, UserView]:
    if user_id != ctx.user_id:
        _admin(ctx)
    found = _users(request, user_id, None)["users"]
    if not found:
        raise ApiError(404, f"Could not find user: {user_id}.")
    return {"user": found[0]}
