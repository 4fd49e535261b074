"""os-keypairs, the reading half, from the projection: a user sees only their own.

Shapes are Nova 2.1's: the list wraps each entry in {"keypair": ...}; show adds
Nova's bookkeeping fields. The id is derived from (user, name), stable across replays.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from typing_extensions import TypedDict

from novalog.idempotency import stable_number
from novalog.views import zulu
from novalog.web import ApiError, Auth, state_of

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


class KeypairEntry(TypedDict):
    name: str
    public_key: str
    fingerprint: str


class KeypairWrapped(TypedDict):
    keypair: KeypairEntry


class Keypairs(TypedDict):
    keypairs: list[KeypairWrapped]


class KeypairView(TypedDict):
    id: int
    name: str
    public_key: str
    fingerprint: str
    user_id: str
    created_at: str
    updated_at: None
    deleted: bool
    deleted_at: None


class OneKeypair(TypedDict):
    keypair: KeypairView


@router.get("/os-keypairs", summary="One's key pairs")
def list_keypairs(request: Request, ctx: Auth) -> Keypairs:
    with state_of(request).pool.connection() as conn:
        rows = conn.execute("SELECT name, public_key, fingerprint FROM keypairs WHERE "
                            "user_id = %s ORDER BY name", (ctx.user_id,)).fetchall()
    return {"keypairs": [{"keypair": {"name": r[0], "public_key": r[1], "fingerprint": r[2]}}
                         for r in rows]}


@router.get("/os-keypairs/{name}", summary="One of one's key pairs",
            responses={404: {"description": "no such key pair of yours"}})
def show_keypair(name: str, request: Request, ctx: Auth) -> OneKeypair:
    with state_of(request).pool.connection() as conn:
        row = conn.execute("SELECT name, public_key, fingerprint, created_at FROM keypairs "
                           "WHERE user_id = %s AND name = %s", (ctx.user_id, name)).fetchone()
    if row is None:
        raise ApiError(404, f"Keypair {name} not found for user {ctx.user_id}")
    return {"keypair": {"id": stable_number(ctx.user_id, name), "name": row[0],
                        "public_key": row[1], "fingerprint": row[2], "user_id": ctx.user_id,
                        "created_at": zulu(row[3]), "updated_at": None, "deleted": False,
                        "deleted_at": None}}
