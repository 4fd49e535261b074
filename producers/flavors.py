"""Nova's flavor administration (admin): create, delete, set and unset extra specs.

`openstack flavor create --ram R --vcpus V --disk D [--property k=v] NAME` is a POST
of the flavor, then one of its extra specs. Each change is a catalog fact
(FlavorCreated, FlavorExtraSpecsSet with the whole map, FlavorDeleted), read back
before the answer. Servers embed their flavor, so a deleted flavor changes none of
them. A private flavor (`--private`) is the admin's only: novalog keeps no
flavor-access lists.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field

from novalog import views
from novalog.web import ApiError, Auth, digits, public_base, require_admin, state_of
from producers import facts
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

INT32 = 2**31 - 1
Key = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\w.:-]+$")]


class FlavorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=255)
    id: str | None = Field(default=None, max_length=255,
                           pattern=r"^[\w.\-]([\w.\- ]*[\w.\-])?$")  # no edge spaces
    ram: int = Field(ge=1, le=INT32)
    vcpus: int = Field(ge=1, le=INT32)
    disk: int = Field(ge=0, le=INT32)
    ephemeral: int = Field(default=0, ge=0, le=INT32, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: int | str = Field(default=0)
    rxtx_factor: float = Field(default=1.0, gt=0)
    is_public: bool = Field(default=True, alias="os-flavor-access:is_public")


class FlavorBody(BaseModel):
    flavor: FlavorCreate


class ExtraSpecsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extra_specs: dict[Key, Annotated[str, Field(max_length=255)]]


def _specs(conn: Connection[Any], flavorid: str) -> dict[str, str] | None:
    row = conn.execute("SELECT extra_specs FROM flavors WHERE flavorid = %s",
                       (flavorid,)).fetchone()
    return None if row is None else dict(row[0])


@router.post("/flavors", summary="Create a flavor (admin)",
             responses={409: {"description": "the name or id is taken"}})
def create_flavor(body: FlavorBody, request: Request, ctx: Auth) -> views.OneFlavor:
    require_admin(ctx, "os_compute_api:os-flavor-manage:create")
    f = body.flavor
    swap = 0 if f.swap in ("", None) else f.swap
    if (not isinstance(swap, int) and not digits(str(swap))) or not 0 <= int(swap) <= INT32:
        raise ApiError(400, f"Invalid input for field/attribute swap. Value: {f.swap}.")
    flavorid = str(uuid.uuid4()) if f.id in (None, "auto") else str(f.id)
    app = state_of(request)
    with facts.owner_lock(app, "flavors") as conn:
        if conn.execute("SELECT 1 FROM flavors WHERE name = %s", (f.name,)).fetchone():
            raise ApiError(409, f"Flavor with name {f.name} already exists.")
        if _specs(conn, flavorid) is not None:
            raise ApiError(409, f"Flavor with ID {flavorid} already exists.")
        facts.publish(app, [("FlavorCreated", flavorid, payloads.FlavorCreated(
            flavorid=flavorid, name=f.name, vcpus=f.vcpus, memory_mb=f.ram, root_gb=f.disk,
            ephemeral_gb=f.ephemeral, swap_mb=int(swap), is_public=f.is_public,
            extra_specs={}))], lambda c: _specs(c, flavorid) is not None, conn)
        row = conn.execute(f"SELECT {views.FLAVOR_COLUMNS} FROM flavors WHERE flavorid = %s",
                           (flavorid,)).fetchone()
    assert row is not None
    return {"flavor": views.flavor_view(public_base(request), tuple(row), True)}


@router.delete("/flavors/{flavor_id}", status_code=202, response_class=Response,
               summary="Delete a flavor (admin; its servers keep their copy)")
def delete_flavor(flavor_id: str, request: Request, ctx: Auth) -> Response:
    require_admin(ctx, "os_compute_api:os-flavor-manage:delete")
    app = state_of(request)
    with facts.owner_lock(app, "flavors") as conn:
        if _specs(conn, flavor_id) is None:
            raise ApiError(404, f"Flavor {flavor_id} could not be found.")
        facts.publish(app, [("FlavorDeleted", flavor_id,
                             payloads.FlavorDeleted(flavorid=flavor_id))],
                      lambda c: _specs(c, flavor_id) is None, conn)
    return Response(status_code=202)


def _set_specs(request: Request, flavor_id: str, change: dict[str, str | None],
               ) -> dict[str, str]:
    """The flavor's specs with `change` applied (None: unset), published as one fact."""
    app = state_of(request)
    with facts.owner_lock(app, "flavors") as conn:
        specs = _specs(conn, flavor_id)
        if specs is None:
            raise ApiError(404, f"Flavor {flavor_id} could not be found.")
        for key, value in change.items():
            if value is None and key not in specs:
                raise ApiError(404, f"Flavor {flavor_id} has no extra specs with key {key}.")
            if value is None:
                specs.pop(key)
            else:
                specs[key] = value
        facts.publish(app, [("FlavorExtraSpecsSet", flavor_id, payloads.FlavorExtraSpecsSet(
            flavorid=flavor_id, extra_specs=specs))], lambda c: _specs(c, flavor_id) == specs, conn)
    return specs


@router.post("/flavors/{flavor_id}/os-extra_specs", summary="Set extra specs (admin)")
def set_extra_specs(flavor_id: str, body: ExtraSpecsBody, request: Request,
                    ctx: Auth) -> views.ExtraSpecs:
    require_admin(ctx, "os_compute_api:os-flavor-extra-specs:create")
    _set_specs(request, flavor_id, dict(body.extra_specs))
    return {"extra_specs": dict(body.extra_specs)}


@router.delete("/flavors/{flavor_id}/os-extra_specs/{key}", response_class=Response,
               summary="Unset one extra spec (admin)")
def unset_extra_spec(flavor_id: str, key: str, request: Request, ctx: Auth) -> Response:
    require_admin(ctx, "os_compute_api:os-flavor-extra-specs:delete")
    _set_specs(request, flavor_id, {key: None})
    return Response(status_code=200)
