"""Glance v2, the writing half: create an image record, upload its data, delete it.

`openstack image create --file F --disk-format qcow2 NAME` is a POST (the image is
`queued`), then a PUT of the bytes to /file. The API streams them into novalog's image
store ($NOVALOG_HOME/images, where compute hosts fetch from: a shared file system in a
multi-machine deployment, like Glance's file backend), computes Glance's md5 checksum
and sha512 hash, asks qemu-img what the data is, and refuses a disk format that does
not match it (as Glance's format inspection does). Then ImageUploaded makes the image
active. Each step is a catalog fact, read back before the answer (producers/facts.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from novalog.tokens import Context
from novalog.views import image_view
from novalog.web import ApiError, AppState, Auth, require_admin, state_of
from producers import facts
from schemas import payloads

router = APIRouter(prefix="/image", tags=["image"])

IMAGE_SIZE_CAP = 1 << 40  # Glance's image_size_cap: 1 TiB
DiskFormat = Literal["qcow2", "raw", "aki", "ari", "ami"]  # what compute hosts can boot
AMAZON = frozenset({"aki", "ari", "ami"})  # a kernel, a ramdisk, a machine: raw data


class ImageCreate(BaseModel):
    """Glance's create body; any other key is an image property (a string)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = Field(default=None, max_length=255)
    id: uuid.UUID | None = None
    disk_format: DiskFormat | None = None
    container_format: Literal["bare", "aki", "ari", "ami"] | None = None
    visibility: Literal["public", "private", "shared", "community"] = "shared"
    min_disk: int = Field(default=0, ge=0, le=2**31 - 1)
    min_ram: int = Field(default=0, ge=0, le=2**31 - 1)
    protected: Literal[False] = False
    tags: list[str] = Field(default_factory=list, max_length=0)


def _row(conn: Connection[Any], image_id: str) -> tuple[Any, ...] | None:
    return conn.execute("SELECT status, owner, disk_format FROM images WHERE image_id = %s",
                        (image_id,)).fetchone()


def _owned_row(app: AppState, ctx: Context, image_id: str) -> tuple[Any, ...]:
    with app.pool.connection() as conn:
        return _owned(conn, ctx, image_id)


def _owned(conn: Connection[Any], ctx: Context, image_id: str) -> tuple[Any, ...]:
    """The image's (status, owner, disk_format), if the caller may change it; 404 / 403."""
    row = _row(conn, image_id)
    if row is None or (row[1] != ctx.project_id and not ctx.is_admin):
        raise ApiError(404, f"No image found with ID {image_id}")
    return row


@router.post("/v2/images", status_code=201, summary="Create an image record (queued)",
             responses={403: {"description": "public or community needs an admin"},
                        409: {"description": "the id is taken"}})
def create_image(body: ImageCreate, request: Request, ctx: Auth) -> dict[str, Any]:
    if body.visibility in ("public", "community"):
        require_admin(ctx, f"publicize_image ({body.visibility})")
    if (body.disk_format in AMAZON or body.container_format in AMAZON) and \
            body.disk_format != body.container_format:
        raise ApiError(400, "Invalid mix of disk and container formats. When setting a disk "
                            "or container format to one of 'aki', 'ari', or 'ami', the "
                            "container and disk formats must match.")
    properties = dict(body.model_extra or {})
    if any(not isinstance(v, str) for v in properties.values()):
        raise ApiError(400, "Image properties must be strings.")
    image_id = str(body.id or uuid.uuid4())
    app = state_of(request)
    with facts.owner_lock(app, f"image/{image_id}") as conn:
        if _row(conn, image_id) is not None:
            raise ApiError(409, f"Image with identifier {image_id} already exists!")
        facts.publish(app, [("ImageRegistered", image_id, payloads.ImageRegistered(
            image_id=image_id, name=body.name or "", status="queued",
            disk_format=body.disk_format or "raw", container_format=body.container_format
            or "bare", size=0, checksum="", min_disk=body.min_disk, min_ram=body.min_ram,
            location="", visibility=body.visibility, properties=properties,
            owner=ctx.project_id))], lambda c: _row(c, image_id) is not None, conn)
    now = datetime.now(UTC)
    return dict(image_view({
        "image_id": image_id, "name": body.name or "", "status": "queued",
        "disk_format": body.disk_format or "raw", "container_format": body.container_format
        or "bare", "size": 0, "checksum": "", "min_disk": body.min_disk,
        "min_ram": body.min_ram, "visibility": body.visibility, "properties": properties,
        "owner": ctx.project_id, "os_hash_value": None, "virtual_size": None,
        "created_at": now, "updated_at": now}))


def _store(app: AppState) -> Path:
    store = app.settings.home / "images"
    store.mkdir(parents=True, exist_ok=True)
    return store


def _inspect(path: Path) -> tuple[str, int | None]:
    """(format, virtual size) as qemu-img sees the data; 'raw' when it knows no header."""
    found = subprocess.run(["qemu-img", "info", "--output", "json", str(path)],
                           capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        return "raw", None
    info = json.loads(found.stdout)
    return str(info.get("format", "raw")), info.get("virtual-size")


@router.put("/v2/images/{image_id}/file", status_code=204, response_class=Response,
            summary="Upload an image's data (queued -> active)",
            responses={400: {"description": "the data is not of the image's disk format"},
                       409: {"description": "the image already has data"},
                       413: {"description": "over the size cap"}})
async def upload_image(image_id: str, request: Request, ctx: Auth) -> Response:
    app = state_of(request)
    status, _owner, disk_format = await run_in_threadpool(_owned_row, app, ctx, image_id)
    if status != "queued":
        raise ApiError(409, f"Image status transition from {status} to saving is not "
                            "allowed")
    # a file per upload: two racing uploads each publish the checksum of their own file
    target = _store(app) / f"{image_id}.{uuid.uuid4().hex[:8]}"
    partial = target.parent / f"{target.name}.part"
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    try:
        with open(partial, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > IMAGE_SIZE_CAP:
                    raise ApiError(413, f"Image exceeds the storage quota: more than "
                                        f"{IMAGE_SIZE_CAP} bytes.")
                md5.update(chunk)
                sha512.update(chunk)
                out.write(chunk)
        found, virtual = await run_in_threadpool(_inspect, partial)
        if found != ("raw" if disk_format in AMAZON else disk_format):
            raise ApiError(400, f"Image format detection failed: the data is {found}, the "
                                f"image says {disk_format}.")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    uploaded = payloads.ImageUploaded(
        image_id=image_id, size=size, checksum=md5.hexdigest(),
        os_hash_value=sha512.hexdigest(), virtual_size=virtual, location=str(target))
    await run_in_threadpool(facts.publish, app, [("ImageUploaded", image_id, uploaded)],
                            lambda c: (_row(c, image_id) or ("",))[0] == "active")
    return Response(status_code=204)


@router.delete("/v2/images/{image_id}", status_code=204, response_class=Response,
               summary="Delete an image (its data too)",
               responses={404: {"description": "no such image of yours"}})
def delete_image(image_id: str, request: Request, ctx: Auth) -> Response:
    app = state_of(request)
    with app.pool.connection() as conn:
        row = _owned(conn, ctx, image_id)
    if row[1] is None:  # the cloud's own images (the bootstrap's)
        require_admin(ctx, "delete_image")
    facts.publish(app, [("ImageDeleted", image_id, payloads.ImageDeleted(image_id=image_id))],
                  lambda c: _row(c, image_id) is None)
    for data in _store(app).glob(f"{image_id}.*"):
        data.unlink(missing_ok=True)
    return Response(status_code=204)
