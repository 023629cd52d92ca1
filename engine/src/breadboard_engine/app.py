"""The HTTP protocol 1.0 surface (see docs/protocol.md). Field names follow the upstream BreadBoard engine."""

from __future__ import annotations

import hmac
import json
import os
import time

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import realtime, streaming
from .errors import (
    CommandNotImplemented,
    InvalidCommand,
    ResumeWindowExceeded,
    SessionClosed,
    SessionNotFound,
    StorageFailed,
)
from .manager import SessionManager
from .protocol import (
    CommandRequest,
    CommandResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    ErrorBody,
    Health,
    InputRequest,
    InputResponse,
    Ready,
    ResumeWindowExceededBody,
    SessionState,
    ShutdownResponse,
    Status,
)
from .providers import ReplayRefused, short_error
from .ray_runtime import RayRuntime
from .settings import Settings
from .version import PROTOCOL_VERSION, engine_version


def error(status: int, code: str, detail, path: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody.emit({"error": code, "detail": detail, "path": path}), status_code=status)


STATUS_CODES = {401: "unauthorized", 404: "not_found", 409: "conflict", 413: "too_large"}


class BearerAuth:
    """Pure ASGI middleware (BaseHTTPMiddleware would buffer and slow the SSE streams): every route needs the token,
    the WebSocket one too: in the Authorization header, or (a browser cannot set headers on a WebSocket) as the
    subprotocol `bearer.<token>` offered alongside `breadboard.v1`."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    def _authorized(self, scope) -> bool:
        given = b""
        protocols = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
            elif name == b"sec-websocket-protocol":
                protocols = value
        # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
        if len(given) > 7 and given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:], self.token):
            return True
        if scope["type"] == "websocket":
            prefix = realtime.BEARER_SUBPROTOCOL_PREFIX.encode()
            for offered in protocols.split(b","):
                offered = offered.strip()
                if offered.startswith(prefix) and hmac.compare_digest(offered[len(prefix) :], self.token):
                    return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            return await self.app(scope, receive, send)
        response = error(401, "unauthorized", "missing or wrong bearer token", scope.get("path"))
        response.headers["WWW-Authenticate"] = "Bearer"
        if scope["type"] == "http":
            return await response(scope, receive, send)
        await deny_websocket(scope, receive, send, response)


async def deny_websocket(scope, receive, send, response: JSONResponse) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (401 and the error envelope) where the server can send one
    (the ASGI denial-response extension), else by closing it before it opens (the server answers 403)."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": response.status_code, "headers": response.raw_headers}
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 while it is read: a Content-Length over the limit before any
    of it is, a chunked body as soon as the count passes it, so an oversized request costs the engine at most the
    limit. (FastAPI's own max_body_size answers in plain text, outside the app's error handlers.)"""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # Raised inside the route's body read: FastAPI passes HTTPException through to the app's handler.
                raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes (BREADBOARD_MAX_BODY_BYTES)"

    async def _refuse(self, scope, receive, send):
        await error(413, "too_large", self._detail(), scope.get("path"))(scope, receive, send)


class Identity:
    def __init__(self, settings: Settings, started_at: float):
        self.started_at = started_at
        self.doc = {
            "protocol_version": PROTOCOL_VERSION,
            "version": engine_version(),
            "engine_version": engine_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
            "started_at_unix": started_at,
            "pid": os.getpid(),
            "instance_id": settings.instance_id,
        }


def create_app(
    settings: Settings, manager: SessionManager, ray: RayRuntime, started_at: float, request_exit
) -> FastAPI:
    identity = Identity(settings, started_at)
    app = FastAPI(title="BreadBoard engine", version=identity.doc["engine_version"])
    health_body = json.dumps(Health.emit({"status": "ok", **identity.doc})).encode()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = STATUS_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_request")
        return error(exc.status_code, code, exc.detail, request.url.path)

    @app.exception_handler(Exception)
    async def unhandled_error(request: Request, exc: Exception):
        # Starlette still logs the traceback after this answer; the client gets the envelope, never a plain 500.
        return error(500, "internal", f"internal error: {short_error(exc)}", request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # default=str: pydantic puts the raised ValueError in `ctx`, which upstream failed to serialise (a 500).
        errors = json.loads(json.dumps(exc.errors(), default=str))
        return error(422, "invalid_request", {"errors": errors}, request.url.path)

    @app.get("/health")
    async def health():
        return Response(health_body, media_type="application/json")

    @app.get("/ready")
    async def ready():
        ray_status = ray.status()
        is_ready = manager.store_open and ray_status["state"] in ("connected", "off", "pending")
        return Ready.emit({"status": "ok", "ready": is_ready, **identity.doc, "ray": ray_status})

    async def status():
        doc = {
            "status": "ok",
            "uptime_s": time.time() - identity.started_at,
            **identity.doc,
            "ray": ray.status(),
            **manager.status(),
        }
        return Status.emit(doc)

    app.get("/status")(status)
    app.get("/v1/status")(status)

    @app.post("/v1/sessions")
    async def create_session(body: CreateSessionRequest):
        try:
            session = manager.create(body.task, body.config_path, body.metadata, body.provider)
        except ValueError as exc:
            return error(400, "invalid_request", str(exc), "/v1/sessions")
        except StorageFailed as exc:
            return error(507, "internal", str(exc), "/v1/sessions")
        created = {
            "session_id": session.id,
            "status": session.row.status,
            "created_at": session.row.created_at,
            "logging_dir": None,
        }
        return CreateSessionResponse.emit(created)

    @app.get("/v1/sessions")
    async def list_sessions():
        return [s.summary() for s in manager.list()]

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request):
        try:
            return manager.get(session_id).summary()
        except SessionNotFound:
            return error(404, "not_found", "session not found", request.url.path)

    @app.get("/v1/sessions/{session_id}/state")
    async def get_state(session_id: str, request: Request):
        try:
            return SessionState.emit(await manager.state(session_id))
        except SessionNotFound:
            return error(404, "not_found", "session not found", request.url.path)

    @app.websocket("/v1/realtime")
    async def realtime_bus(websocket: WebSocket):
        await realtime.serve(websocket, manager)

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    async def delete_session(session_id: str, request: Request):
        try:
            await manager.delete(session_id)
        except SessionNotFound:
            return error(404, "not_found", "session not found", request.url.path)
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/input", status_code=202)
    async def post_input(session_id: str, body: InputRequest, request: Request):
        try:
            manager.post_input(session_id, body.content, body.input_id)
        except SessionNotFound:
            return error(404, "not_found", "session not found", request.url.path)
        except SessionClosed as exc:
            return error(409, "conflict", str(exc), request.url.path)
        except ReplayRefused as exc:
            return error(400, "invalid_request", str(exc), request.url.path)
        answer = {"status": "accepted"} if body.input_id is None else {"status": "accepted", "input_id": body.input_id}
        return JSONResponse(InputResponse.emit(answer), status_code=202)

    @app.post("/v1/sessions/{session_id}/command", status_code=202)
    async def post_command(session_id: str, body: CommandRequest, request: Request):
        path = request.url.path
        try:
            detail = await manager.command(session_id, body.command, body.payload or {})
        except SessionNotFound:
            return error(404, "not_found", "session not found", path)
        except SessionClosed as exc:
            return error(409, "conflict", str(exc), path)
        except InvalidCommand as exc:
            return error(400, "invalid_request", str(exc), path)
        except CommandNotImplemented as exc:
            return error(501, "not_implemented", f"this engine does not implement the command {exc}", path)
        return JSONResponse(CommandResponse.emit({"status": "accepted", "detail": detail}), status_code=202)

    @app.get("/v1/sessions/{session_id}/events")
    async def events(
        session_id: str,
        request: Request,
        replay: bool = False,
        limit: int | None = None,
        from_id: str | None = None,
        from_seq: str | None = None,
    ):
        try:
            session = manager.get(session_id)
        except SessionNotFound:
            return error(404, "not_found", "session not found", request.url.path)
        resume_from = from_id or from_seq or request.headers.get("last-event-id")
        try:
            after = manager.resolve_resume(session, resume_from)
        except ResumeWindowExceeded as exc:
            body = {
                "error": "resume_window_exceeded",
                "detail": "resume window exceeded or event id not found",
                "path": request.url.path,
                "last_event_id": exc.last_event_id,
                "last_seq": exc.last_seq,
            }
            return JSONResponse(ResumeWindowExceededBody.emit(body), status_code=409)
        stream = streaming.follow(manager, session, after, replay or resume_from is not None, limit)
        return StreamingResponse(
            stream,
            media_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/shutdown", status_code=202)
    async def shutdown():
        request_exit()
        return JSONResponse(ShutdownResponse.emit({"status": "shutting_down", "pid": os.getpid()}), status_code=202)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.token:
        app.add_middleware(BearerAuth, token=settings.token)  # outermost: a stranger learns nothing, not even 413
    return app
