"""Glance v2, the reading half: version discovery, image list and show, from the projection.

What the stock clients send is in ../shared/OPENSTACK_CLIENTS.md: `GET /image` without a
token, `?name=` and `?id=in:a,b` filters, a name in the path that must be a 404 so they
fall back to a search, and paging by `next`. Glance answers one image without an envelope.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from psycopg.rows import dict_row
from typing_extensions import TypedDict

from novalog.tokens import Context
from novalog.views import ImageList, ImageView, Link, image_view
from novalog.web import ApiError, Auth, public_base, state_of

router = APIRouter(prefix="/image", tags=["image"])

DEFAULT_LIMIT, MAX_LIMIT = 25, 1000  # Glance's api_limit_max is 1000
COLUMNS = ("image_id, name, status, disk_format, container_format, size, checksum, min_disk, "
           "min_ram, visibility, properties, owner, os_hash_value, virtual_size, created_at, "
           "updated_at")
# Glance's visibility: public and community images for everyone; private and shared ones
# for their owner's project (novalog has no image members); every image for an admin.
VISIBLE = ("(%(admin)s OR visibility IN ('public', 'community') OR owner = %(project)s)")


class ImageVersion(TypedDict):
    id: str
    status: str
    links: list[Link]


class ImageVersions(TypedDict):
    versions: list[ImageVersion]


@router.get("", summary="Glance version discovery")
def image_versions(request: Request) -> ImageVersions:
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"rel": "self", "href": f"{public_base(request)}/image/v2/"}]}]}


def _ids(raw: str | None) -> list[str] | None:
    """`id=in:a,b` (or one id) as a list; Glance's `in:` operator."""
    if raw is None:
        return None
    return [i for i in (raw[3:] if raw.startswith("in:") else raw).split(",") if i]


@router.get("/v2/images", summary="List images (?name=, ?id=in:, ?status=, limit, marker)")
def list_images(request: Request, ctx: Auth, name: str | None = None,
                id: str | None = None, status: str | None = None,
                limit: int = Query(DEFAULT_LIMIT, ge=0), marker: str | None = None,
                ) -> ImageList:
    ids = _ids(id)
    limit = min(limit, MAX_LIMIT)
    with state_of(request).pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        after = None
        if marker is not None:
            after = cur.execute("SELECT name, image_id FROM images WHERE image_id = %s",
                                (marker,)).fetchone()
            if after is None:
                raise ApiError(400, f"marker {marker} could not be found.")
        rows = cur.execute(
            f"SELECT {COLUMNS} FROM images WHERE {VISIBLE} AND "
            "(%(name)s::text IS NULL OR name = %(name)s) "
            "AND (%(ids)s::text[] IS NULL OR image_id = ANY(%(ids)s)) "
            "AND (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(after)s::text IS NULL OR (name, image_id) > (%(after)s, %(after_id)s)) "
            "ORDER BY name, image_id LIMIT %(limit)s",
            {"name": name, "ids": ids, "status": status, "limit": limit + 1,
             "admin": ctx.is_admin, "project": ctx.project_id,
             "after": after["name"] if after else None,
             "after_id": after["image_id"] if after else None}).fetchall()
    page = [image_view(r) for r in rows[:limit]]
    out: ImageList = {"images": page, "first": "/v2/images", "schema": "/v2/schemas/images"}
    if len(rows) > limit and page:
        query = {k: v for k, v in request.query_params.items() if k != "marker"}
        out["next"] = "/v2/images?" + urlencode({**query, "marker": page[-1]["id"]})
    return out


@router.get("/v2/images/{image_id}", summary="Show one image (no envelope, as Glance)",
            responses={404: {"description": "no such image (a name is not an id)"}})
def show_image(image_id: str, request: Request, ctx: Auth) -> ImageView:
    row = find_image(request, ctx, image_id)
    return image_view(row)


def find_image(request: Request, ctx: Context, image_id: str) -> dict[str, Any]:
    """The image's row, or Glance's 404 (a name, another project's private image)."""
    try:
        uuid.UUID(image_id)
    except ValueError:
        raise ApiError(404, f"No image found with ID {image_id}") from None
    with state_of(request).pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {COLUMNS} FROM images WHERE image_id = %(id)s AND {VISIBLE}",
                          {"id": image_id, "admin": ctx.is_admin,
                           "project": ctx.project_id}).fetchone()
    if row is None:
        raise ApiError(404, f"No image found with ID {image_id}")
    return row
