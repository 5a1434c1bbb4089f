"""Body size limits, enforced before the body is read into memory; the access log."""

from __future__ import annotations

import logging
import time

from starlette.exceptions import HTTPException

from app.errors import problem_body


class BodyLimitMiddleware:
    """Refuse bodies over a limit with 413: by Content-Length when given, else while streaming.
    Upload routes get their own, larger limits: (path prefix, limit) pairs, the first that
    matches applies."""

    def __init__(self, app, default_limit: int, upload_limits: tuple[tuple[str, int], ...]):
        self.app = app
        self.default_limit = default_limit
        self.upload_limits = upload_limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = next((limit for prefix, limit in self.upload_limits if path.startswith(prefix)), self.default_limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _reject(send, 400, "Bad request", "Content-Length is not a number.", "bad-request")
                if declared > limit:
                    return await _too_large(send, limit)
        received = 0
        response_started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(send, limit)


class _BodyTooLarge(HTTPException):
    """Raised from `receive`. An HTTPException, because FastAPI turns any other error raised while
    it reads a body into a 400; this one it re-raises, and the app's handler answers 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than {limit} bytes.")


async def _too_large(send, limit: int):
    await _reject(send, 413, "Payload too large", f"The request body is larger than {limit} bytes.", "payload-too-large")


async def _reject(send, status: int, title: str, detail: str, slug: str):
    import json

    body = json.dumps(problem_body(status, title, detail, slug)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})


access_log = logging.getLogger("obliviate.access")


class AccessLogMiddleware:
    """One line per request with the route template (`/v1/erasure-requests/{request_id}`), never
    the raw path or query string, which may carry an identifier. Replaces uvicorn's access log,
    which is turned off wherever the server is started."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<no route>"
            access_log.info("%s %s %d %.1fms", scope.get("method", "-"), template, status,
                            (time.perf_counter() - started) * 1000)
