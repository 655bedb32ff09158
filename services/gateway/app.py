"""The HTTP/JSON gateway (aiohttp): the player's and browser's way into the control plane.

Per request: a request id (the caller's ``X-Request-Id`` when well-formed, else a
new one; echoed, and forwarded to the services), CORS headers, a per-client
token-bucket rate limit (by access token, else by address), bearer-token
verification (locally, with identity's public keys) on routes that need it, the
JSON body mapped onto the RPC's request message, and every failure answered
as JSON ``{"error": {code, status, message, field, requestId}}`` with the HTTP
code of the gRPC status. Routes and the OpenAPI document come from one table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from livemesh.heap import settle_heap
from services.common import jsonmap
from services.common.auth import TokenVerifier, identity_key_loader
from services.common.clients import ChannelFactory
from services.common.errors import (
    FIELD_METADATA_KEY,
    InvalidArgument,
    ServiceError,
    Unauthenticated,
)
from services.common.process import parser_for, run
from services.gateway.openapi import document
from services.gateway.routes import ROUTES, STUBS, Route

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000  # (8080-8090 are the origin and edges of deploy/local.toml)
MAX_BODY_BYTES = 64 * 1024
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HTTP_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
STATUS_OF_HTTP = {404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT",
                  429: "RESOURCE_EXHAUSTED"}
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-Id",
    "Access-Control-Expose-Headers": "X-Request-Id, Retry-After",
    "Access-Control-Max-Age": "600",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_KEY = web.RequestKey("request_id", str)
CLIENT_REQUEST_ID_KEY = web.RequestKey("client_request_id", str)  # "" unless the caller gave one


class TokenBuckets:
    """Per-client token buckets: ``rate`` requests/s sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """0 when the request may pass, else the seconds until it could."""
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def new_request_id() -> str:
    """32 random hex digits, as a UUID4's hex, without building the UUID (5 us -> 0.6 us)."""
    return os.urandom(16).hex()


def error_response(status: int, code: str, message: str, request_id: str,
                   field: str | None = None, headers: dict[str, str] | None = None
                   ) -> web.Response:
    error: dict[str, Any] = {"code": status, "status": code, "message": message,
                             "requestId": request_id}
    if field:
        error["field"] = field
    return web.json_response({"error": error}, status=status, headers=headers)


class Gateway:
    def __init__(self, factory: ChannelFactory, targets: dict[str, str], verifier: TokenVerifier,
                 rate: float = 50.0, burst: float = 100.0, cors_origin: str = "*") -> None:
        self.factory = factory
        self.targets = targets
        self.verifier = verifier
        self.buckets = TokenBuckets(rate, burst)
        self.cors_origin = cors_origin

    # -- middlewares ------------------------------------------------------------------

    @web.middleware
    async def edge_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id, CORS, rate limit and the JSON error body, around every route."""
        given = request.headers.get("X-Request-Id", "")
        request_id = given if REQUEST_ID.match(given) else new_request_id()
        request[REQUEST_ID_KEY] = request_id
        request[CLIENT_REQUEST_ID_KEY] = given if given == request_id else ""
        response: web.StreamResponse
        if request.method == "OPTIONS":
            response = web.Response(status=204)
        elif (wait := self.buckets.take(self._client(request))) > 0:
            response = error_response(429, "RESOURCE_EXHAUSTED", "rate limit exceeded",
                                      request_id,
                                      headers={"Retry-After": str(max(1, round(wait)))})
        else:
            response = await self._answer(request, handler, request_id)
        response.headers["X-Request-Id"] = request_id
        response.headers["Access-Control-Allow-Origin"] = self.cors_origin
        if self.cors_origin != "*":
            response.headers["Vary"] = "Origin"
        response.headers.update(CORS_HEADERS)
        return response

    @staticmethod
    def _client(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        if auth:
            return "t:" + hashlib.sha256(auth.encode()).hexdigest()[:24]
        return f"ip:{request.remote}"

    async def _answer(self, request: web.Request, handler: Handler, request_id: str
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServiceError as exc:
            return error_response(HTTP_OF.get(exc.code, 500), exc.code.name, exc.message,
                                  request_id, exc.field)
        except grpc.aio.AioRpcError as exc:
            field = dict(exc.trailing_metadata() or ()).get(FIELD_METADATA_KEY)
            status = HTTP_OF.get(exc.code(), 500)
            message = exc.details() or exc.code().name
            if status >= 500:
                log.warning("request %s: %s %s", request_id, exc.code().name, message)
            return error_response(status, exc.code().name, message, request_id,
                                  str(field) if field else None)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, STATUS_OF_HTTP.get(exc.status, "UNKNOWN"),
                                  exc.reason, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return error_response(500, "INTERNAL", "internal error", request_id)

    # -- routes -----------------------------------------------------------------------

    def handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            metadata: list[tuple[str, str]] = [("x-request-id", request[REQUEST_ID_KEY])]
            account = ""
            if route.auth:
                token = bearer(request)
                account = (await self.verifier.verify(token)).account
                metadata.append(("authorization", f"Bearer {token}"))
            message = await build_request(route, request, account)
            stub = self.factory.stub(STUBS[route.service], self.targets[route.service])
            reply = await getattr(stub, route.rpc)(message, metadata=tuple(metadata))
            return web.json_response(jsonmap.to_dict(reply))

        return handle


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("missing bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def _parse_error_field(text: str) -> str:
    for pattern in (r'no field named "(\w+)"', r"Failed to parse (\w+) field"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return "body"


def _set_path(message: Message, path: str, value: str) -> None:
    *parents, last = path.split(".")
    target = message
    for part in parents:
        target = getattr(target, part)
    setattr(target, last, value)


def _query_value(fd: FieldDescriptor, param: str, text: str) -> Any:
    if fd.type == FieldDescriptor.TYPE_INT32:
        if not re.fullmatch(r"-?\d{1,10}", text) or not -(2**31) <= int(text) < 2**31:
            raise InvalidArgument(param, "must be an integer")
        return int(text)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        value = fd.enum_type.values_by_name.get(text)
        if value is None:
            raise InvalidArgument(param, f"must be one of {', '.join(fd.enum_type.values_by_name)}")
        return value.number
    return text


async def build_request(route: Route, request: web.Request, account: str) -> Message:
    """The RPC's request message from the body, path, query and caller."""
    message = route.request()
    if route.body and request.can_read_body:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(await request.content.read(MAX_BODY_BYTES + 1) or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument("body", "is not JSON") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("body", "must be a JSON object")
        target = getattr(message, route.body_field) if route.body_field else message
        try:
            jsonmap.parse_dict(data, target)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise InvalidArgument(_parse_error_field(str(exc)), str(exc)[:200]) from exc
    for var, (path, fmt) in route.path_fields.items():
        _set_path(message, path, fmt.format(request.match_info[var], account=account))
    fields = route.request.DESCRIPTOR.fields_by_name
    for param, name in route.query.items():
        if param in request.query:
            setattr(message, name, _query_value(fields[name], param, request.query[param]))
    if route.account_field:
        setattr(message, route.account_field, account)
    if "request_id" in fields and not getattr(message, "request_id"):  # noqa: B009
        message.request_id = request[CLIENT_REQUEST_ID_KEY]  # type: ignore[attr-defined]
    return message


async def handle_openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness_handler(gateway: Gateway) -> Handler:
    """200 when every service behind the gateway answers its health check SERVING, else 503
    naming the ones that do not (what a launcher waits for before announcing the gateway)."""

    async def check(target: str) -> str:
        stub = health_pb2_grpc.HealthStub(gateway.factory.channel(target))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def handle(request: web.Request) -> web.StreamResponse:
        names = sorted(gateway.targets)
        states = await asyncio.gather(*(check(gateway.targets[n]) for n in names))
        services = dict(zip(names, states, strict=True))
        ready = all(state == "SERVING" for state in states)
        return web.json_response({"ready": ready, "services": services},
                                 status=200 if ready else 503)

    return handle


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[gateway.edge_middleware],
                          client_max_size=MAX_BODY_BYTES)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, gateway.handler(route))
    app.router.add_get("/openapi.json", handle_openapi)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", readiness_handler(gateway))
    return app


def targets_from(args: argparse.Namespace) -> dict[str, str]:
    return {service: getattr(args, f"{service}_target") for service in STUBS}


async def serve(args: argparse.Namespace) -> None:
    from services.common.server import wait_for_termination_signal

    factory = ChannelFactory()
    verifier = TokenVerifier(identity_key_loader(factory, args.identity_target))
    gateway = Gateway(factory, targets_from(args), verifier, args.rate, args.burst,
                      args.cors_origin)
    runner = web.AppRunner(build_app(gateway))
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = runner.addresses[0][1]  # the bound port, also when --port 0
        settle_heap()
        print(f"gateway: http://{args.host}:{port}", flush=True)
        await wait_for_termination_signal()
    finally:
        await runner.cleanup()
        await factory.close()


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("gateway")
    parser.set_defaults(port=int(os.environ.get("LIVEMESH_GATEWAY_PORT", DEFAULT_PORT)))
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per client")
    parser.add_argument("--burst", type=float, default=100.0, help="burst per client")
    parser.add_argument("--cors-origin", default="*", help="allowed browser origin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LIVEMESH_LOG_LEVEL", "INFO"))
    run(serve(args))
    return 0
