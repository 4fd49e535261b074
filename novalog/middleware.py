"""The API's own middleware, one plain ASGI layer: request ids, microversions, body limits.

It was three `@app.middleware("http")` functions. Starlette runs each of those through
BaseHTTPMiddleware (a task group, memory streams and a response re-streamed per
layer): in a burst of POSTs that was about a third of the API's CPU. This one wraps
`send` to add headers and replays the body it has read, nothing more. What it does,
outermost first:

1. oslo's RequestId: a fresh req-<uuid> per request, the caller's well-formed
   X-OpenStack-Request-ID as the global one, both bound for the log lines and events
   the request causes; one log line per request (Nova's requestlog); the id answered
   in X-OpenStack-Request-ID (and X-Compute-Request-ID on the compute API).
2. Nova's microversion headers on /compute: checked (406 / 400), then echoed.
3. Bodies: NUL characters refused anywhere (Postgres text cannot hold one), a body
   over MAX_BODY_BYTES refused before it is parsed; image data is streamed (its own cap).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders

from novalog import request_ids
from novalog.request_ids import RequestIds
from novalog.web import MAX_BODY_BYTES, ApiError, compute_microversion, digits, dotted, error_body

log = logging.getLogger("novalog.api.requestlog")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


NUL_ESCAPE = re.compile(rb"\\u0000", re.IGNORECASE)


def has_nul(body: bytes) -> bool:
    """Whether a JSON body holds a NUL in any string (as the escape \\u0000, or raw)."""
    if b"\x00" in body:
        return True
    if not NUL_ESCAPE.search(body):
        return False
    try:
        return _nul_in(json.loads(body))
    except ValueError:
        return False  # not JSON: the route's own parsing says so


def _nul_in(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    return False


class ApiMiddleware:
    """The three layers above, as one ASGI app around the FastAPI one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        ids = RequestIds(request_ids.new_request_id(),
                         request_ids.valid_request_id(headers.get("x-openstack-request-id")))
        added = {"X-OpenStack-Request-ID": ids.request_id}
        if path.startswith("/compute"):
            added["X-Compute-Request-ID"] = ids.request_id
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(raw=list(message.get("headers", [])))
                for name, value in added.items():
                    out[name] = value
                message = {**message, "headers": out.raw}
            await send(message)

        started = time.monotonic()
        with request_ids.bound(ids):
            await self._microversions(scope, receive, send_with_headers, headers, added)
            client = scope.get("client")
            log.info('%s "%s %s" status: %d time: %.4f', client[0] if client else "-",
                     scope["method"], path, status, time.monotonic() - started)

    async def _microversions(self, scope: MutableMapping[str, Any], receive: Receive,
                             send: Send, headers: Headers, added: dict[str, str]) -> None:
        if scope["path"].startswith("/compute"):
            try:
                version = dotted(compute_microversion(headers))
            except ApiError as exc:
                await _error(exc.status, exc.message, scope, receive, send)
                return
            added["OpenStack-API-Version"] = f"compute {version}"
            added["X-OpenStack-Nova-API-Version"] = version
            added["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        await self._limit_body(scope, receive, send, headers)

    async def _limit_body(self, scope: MutableMapping[str, Any], receive: Receive, send: Send,
                          headers: Headers) -> None:
        path: str = scope["path"]
        if b"%00" in scope.get("query_string", b"") or "\x00" in path:
            await _error(400, "NUL characters are not allowed in a request.", scope, receive,
                         send)
            return
        if scope["method"] == "PUT" and path.startswith("/image/") and path.endswith("/file"):
            await self.app(scope, receive, send)  # image data: streamed, with its own cap
            return
        length = headers.get("content-length")
        size = int(length) if length and digits(length) else None
        if size is not None and size > MAX_BODY_BYTES:
            await _error(400, f"Request body too large: {size} bytes, the limit is "
                              f"{MAX_BODY_BYTES} bytes.", scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if len(body) > MAX_BODY_BYTES:
            await _error(400, f"Request body too large: {len(body)} bytes, the limit is "
                              f"{MAX_BODY_BYTES} bytes.", scope, receive, send)
            return
        if has_nul(body):
            await _error(400, "NUL characters are not allowed in a request.", scope, receive,
                         send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


async def _error(status: int, message: str, scope: MutableMapping[str, Any],
                 receive: Receive, send: Send) -> None:
    await JSONResponse(error_body(status, message), status_code=status)(scope, receive, send)
