"""A small client of novalog's own API, for the CLI verbs (and the tests that act like users).

Credentials follow OpenStack's variables: OS_USERNAME, OS_PASSWORD,
OS_PROJECT_NAME (dev defaults admin / admin / admin); the endpoint is
NOVALOG_API_URL, by default the local API of `novalog up`.
"""

from __future__ import annotations

import os
from typing import Any, Literal, overload

import httpx

from novalog.settings import Settings
from novalog.views import FlavorView, ImageView, NetworkView, ServerView


class ApiFailure(Exception):
    """The API answered with an error; the message is the API's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class NovalogClient:
    def __init__(self, base_url: str, username: str, password: str, project: str,
                 timeout: float = 30.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)
        self.credentials = (username, password, project)
        self._token: str | None = None
        self._project_id = ""

    @classmethod
    def from_env(cls, settings: Settings) -> NovalogClient:
        env = os.environ
        return cls(env.get("NOVALOG_API_URL") or f"http://{settings.api_host}:{settings.api_port}",
                   env.get("OS_USERNAME", "admin"), env.get("OS_PASSWORD", "admin"),
                   env.get("OS_PROJECT_NAME", "admin"))

    def token(self) -> str:
        if self._token is None:
            user, password, project = self.credentials
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": password, "domain": {"name": "Default"}}}},
                "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
            response = self.http.post("/identity/v3/auth/tokens", json=body)
            self._check(response)
            self._token = response.headers["X-Subject-Token"]
            self._project_id = response.json()["token"]["project"]["id"]
        return self._token

    @property
    def project_id(self) -> str:
        """The token's project (Block Storage paths name it)."""
        self.token()
        return self._project_id

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
            message = next(iter(body.values()))["message"]
        except (ValueError, StopIteration, KeyError, TypeError, AttributeError):
            message = response.text[:300]
        raise ApiFailure(response.status_code, message)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**kwargs.pop("headers", {}), "X-Auth-Token": self.token()}
        response = self.http.request(method, path, headers=headers, **kwargs)
        self._check(response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    @overload
    def find(self, kind: Literal["flavor"], ref: str) -> FlavorView: ...
    @overload
    def find(self, kind: Literal["image"], ref: str) -> ImageView: ...
    @overload
    def find(self, kind: Literal["network"], ref: str) -> NetworkView: ...
    @overload
    def find(self, kind: Literal["server"], ref: str) -> ServerView: ...

    def find(self, kind: str, ref: str) -> FlavorView | ImageView | NetworkView | ServerView:
        """A flavor, image, network or server by id or exact name (one match, else an error)."""
        paths = {"flavor": ("/compute/v2.1/flavors/detail", "flavors"),
                 "image": ("/image/v2/images", "images"),
                 "network": ("/networking/v2.0/networks", "networks"),
                 "server": ("/compute/v2.1/servers/detail", "servers")}
        path, key = paths[kind]
        if kind == "server":  # by id first, as the OpenStack clients do (any project, admin)
            try:
                by_id: ServerView = self.get(f"/compute/v2.1/servers/{ref}")["server"]
                return by_id
            except ApiFailure as exc:
                if exc.status != 404:
                    raise
        items: list[FlavorView | ImageView | NetworkView | ServerView] = self.get(path)[key]
        matches = [i for i in items if ref in (i["id"], i["name"])]
        if not matches:
            raise ApiFailure(404, f"No {kind} with a name or ID of '{ref}' exists.")
        if len(matches) > 1 and not any(i["id"] == ref for i in matches):
            raise ApiFailure(409, f"More than one {kind} exists with the name '{ref}'.")
        return next((i for i in matches if i["id"] == ref), matches[0])
