"""Passwords and tokens, as keystone keeps them; no HTTP here.

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

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from novalog.settings import Settings

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
    if settings.token_keys:
        return [k.encode() for k in settings.token_keys]
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


def seal(settings: Settings, secret: str) -> str:
    """A secret that must cross the log (a server's admin password, on its way to the
    config drive) without being readable there: Fernet with the deployment's keys."""
    return MultiFernet([Fernet(k) for k in load_keys(settings)]).encrypt(
        secret.encode()).decode()


def unseal(settings: Settings, sealed: str) -> str | None:
    """The secret, or None once no key of the deployment opens it (rotated away)."""
    try:
        return MultiFernet([Fernet(k) for k in load_keys(settings)]).decrypt(
            sealed.encode()).decode()
    except InvalidToken:
        return None


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
