"""Nova's flavors, read from the projection: list, detail, show, extra specs, access.

Flavor ids are strings; a name in the path is a 404, so the clients search by name.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from novalog import views
from novalog.tokens import Context
from novalog.web import ApiError, Auth, public_base, require_admin, state_of

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])




def _is_public(raw: str | None, ctx: Context) -> bool | None:
    """Nova's is_public filter: members always see public flavors only; an admin's
    `None` (any spelling) means all, as novaclient and openstackclient send it."""
    if raw is None or not ctx.is_admin:
        return True
    if raw.lower() == "none":
        return None
    if raw.lower() in ("1", "t", "true", "on", "y", "yes"):
        return True
    if raw.lower() in ("0", "f", "false", "off", "n", "no"):
        return False
    raise ApiError(400, f"Invalid is_public filter [{raw}]")


def _flavors(request: Request, ctx: Context, detail: bool) -> views.Flavors:
    params = request.query_params
    public = _is_public(params.get("is_public"), ctx)
    try:
        min_ram, min_disk = int(params.get("minRam", 0)), int(params.get("minDisk", 0))
    except ValueError:
        raise ApiError(400, "Invalid minRam or minDisk filter: not an integer") from None
    with state_of(request).pool.connection() as conn:
        rows = conn.execute(
            f"SELECT {views.FLAVOR_COLUMNS} FROM flavors WHERE "
            "(%s::boolean IS NULL OR is_public = %s) AND memory_mb >= %s AND root_gb >= %s "
            "ORDER BY flavorid",
            (public, public, min_ram, min_disk)).fetchall()
    return {"flavors": [views.flavor_view(public_base(request), r, detail) for r in rows]}


@router.get("/flavors", summary="List flavors (?is_public=, ?minRam=, ?minDisk=)")
def list_flavors(request: Request, ctx: Auth) -> views.Flavors:
    return _flavors(request, ctx, detail=False)


@router.get("/flavors/detail", summary="List flavors with details")
def list_flavors_detail(request: Request, ctx: Auth) -> views.Flavors:
    return _flavors(request, ctx, detail=True)


def _flavor_row(request: Request, flavor_id: str, columns: str) -> tuple[Any, ...]:
    with state_of(request).pool.connection() as conn:
        row = conn.execute(f"SELECT {columns} FROM flavors WHERE flavorid = %s",
                           (flavor_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return tuple(row)


@router.get("/flavors/{flavor_id}", summary="Show a flavor",
            responses={404: {"description": "no such flavor id (a name is not an id)"}})
def show_flavor(flavor_id: str, request: Request, ctx: Auth) -> views.OneFlavor:
    row = _flavor_row(request, flavor_id, views.FLAVOR_COLUMNS)
    if not row[7] and not ctx.is_admin:  # a private flavor: the admin's (no access lists)
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return {"flavor": views.flavor_view(public_base(request), row, True)}


@router.get("/flavors/{flavor_id}/os-extra_specs", summary="A flavor's extra specs")
def flavor_extra_specs(flavor_id: str, request: Request, _ctx: Auth) -> views.ExtraSpecs:
    return {"extra_specs": _flavor_row(request, flavor_id, "extra_specs")[0]}


@router.get("/flavors/{flavor_id}/os-extra_specs/{key}", summary="One extra spec")
def flavor_extra_spec(flavor_id: str, key: str, request: Request,
                      _ctx: Auth) -> dict[str, str]:
    specs: dict[str, str] = _flavor_row(request, flavor_id, "extra_specs")[0]
    if key not in specs:
        raise ApiError(404, f"Flavor {flavor_id} has no extra specs with key {key}.")
    return {key: specs[key]}


@router.get("/flavors/{flavor_id}/os-flavor-access", summary="Who may use a private flavor")
def flavor_access(flavor_id: str, request: Request, ctx: Auth) -> views.FlavorAccess:
    require_admin(ctx, "os_compute_api:os-flavor-access")
    if _flavor_row(request, flavor_id, "is_public")[0]:
        raise ApiError(404, "Access list not available for public flavors.")
    return {"flavor_access": []}
