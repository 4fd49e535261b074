"""os-keypairs, the writing half: create (generated or imported) and delete, as Nova 2.1.

A key pair belongs to its user. Nova 2.1 generates an RSA 2048 key when no public key
is given and answers with the private half once, never stored; an imported key must
parse as an OpenSSH public key. The fingerprint is Nova's: the MD5 of the key blob,
colon-separated. Each change is a catalog fact (KeypairCreated / KeypairDeleted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Request, Response
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from novalog.web import ApiError, Auth, state_of
from producers import facts
from schemas import payloads

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

NAME = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")  # Nova 2.1's keypair name
KEY_PAIRS_QUOTA = 100  # Nova's default quota.key_pairs, per user


class KeypairCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    public_key: str | None = Field(default=None, max_length=16384)


class KeypairBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keypair: KeypairCreate


class CreatedKeypair(TypedDict, total=False):
    name: str
    public_key: str
    fingerprint: str
    user_id: str
    private_key: str


class CreatedKeypairView(TypedDict):
    keypair: CreatedKeypair


def fingerprint(public_key: str) -> str:
    """Nova's ssh fingerprint; ApiError 400 when the key does not parse."""
    try:
        serialization.load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (ValueError, IndexError, binascii.Error, TypeError):
        raise ApiError(400, "Keypair data is invalid: failed to generate fingerprint") \
            from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate() -> tuple[str, str]:
    """(private key PEM, public key in OpenSSH form), as Nova made them before 2.92."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} Generated-by-Nova"


@router.post("/os-keypairs", summary="Create (generate) or import a key pair",
             responses={400: {"description": "bad name or key"},
                        403: {"description": "over the key_pairs quota"},
                        409: {"description": "the name is taken"}})
def create_keypair(body: KeypairBody, request: Request, ctx: Auth) -> CreatedKeypairView:
    name = body.keypair.name
    if not NAME.match(name):
        raise ApiError(400, "Keypair data is invalid: Keypair name contains unsafe "
                            "characters")
    private = None
    public = body.keypair.public_key
    if public is None:
        private, public = generate()
    public = public.strip()
    print_ = fingerprint(public)
    app = state_of(request)
    with facts.owner_lock(app, ctx.user_id) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM keypairs WHERE user_id = %s",
                                            (ctx.user_id,)).fetchall()}
        if name in names:
            raise ApiError(409, f"Key pair '{name}' already exists.")
        if len(names) >= KEY_PAIRS_QUOTA:
            raise ApiError(403, "Quota exceeded, too many key pairs.")
        facts.publish(app, [("KeypairCreated", f"{ctx.user_id}/{name}", payloads.KeypairCreated(
            name=name, user_id=ctx.user_id, public_key=public, fingerprint=print_,
            type="ssh"))], lambda c: _exists(c, ctx.user_id, name), conn)
    view: CreatedKeypair = {"name": name, "public_key": public, "fingerprint": print_,
                            "user_id": ctx.user_id}
    if private is not None:
        view["private_key"] = private
    return {"keypair": view}


def _exists(conn: Connection[Any], user_id: str, name: str) -> bool:
    return conn.execute("SELECT 1 FROM keypairs WHERE user_id = %s AND name = %s",
                        (user_id, name)).fetchone() is not None


@router.delete("/os-keypairs/{name}", status_code=202, response_class=Response,
               summary="Delete one of one's key pairs (202, as Nova 2.1)",
               responses={404: {"description": "no such key pair of yours"}})
def delete_keypair(name: str, request: Request, ctx: Auth) -> Response:
    app = state_of(request)
    with facts.owner_lock(app, ctx.user_id) as conn:
        if not _exists(conn, ctx.user_id, name):
            raise ApiError(404, f"Keypair {name} not found for user {ctx.user_id}")
        facts.publish(app, [("KeypairDeleted", f"{ctx.user_id}/{name}",
                             payloads.KeypairDeleted(user_id=ctx.user_id, name=name))],
                      lambda c: not _exists(c, ctx.user_id, name), conn)
    return Response(status_code=202)
