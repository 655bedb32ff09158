"""The HTTP/JSON gateway (aiohttp): the player's and browser's way into the control plane.

Per request: a request id (the caller's ``X-Request-Id`` when well-formed, else a
new one; echoed, and forwarded to the services), CORS headers, a per-client
token-bucket rate limit (by access token, else by address), bearer-token
verification (locally, with identity's public keys) on routes that need it, the
JSON body (bounded in size, media type and nesting: body.py) mapped onto the RPC's
request message, and every failure answered
as JSON ``{"error": {code, status, message, field, requestId, retryAfterMs}}`` with the
HTTP code of the gRPC status. Routes and the OpenAPI document come from one table.

A refusal worth retrying (429, 503) says when: ``retryAfterMs`` in the body, to the
millisecond, and ``Retry-After`` in whole seconds (rounded up, as RFC 9110 counts) for
clients that read only the header. The hint is the token bucket's own wait for the rate
limit, a shedding service's ``grpc-retry-pushback-ms`` (jittered about its queue's drain
time), or, when the refusal came with none, a jittered default. Players may come back
after ``retryAfterMs``: it is part of the API (the OpenAPI document's ``Error``), so
the load rig's player honours it as any player may.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST

from kernel import workers
from kernel.config import GatewaySettings, parse
from kernel.heap import settle_heap
from kernel.http.cors import ANY_ORIGIN, GATEWAY
from kernel.loop import run
from kernel.objectstore import open_store
from kernel.outage import OutageLog
from kernel.ratelimit import TokenBuckets
from kernel.rpc import jsonmap
from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import (
    FIELD_METADATA_KEY,
    InvalidArgument,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from kernel.rpc.resilience import render_metrics
from kernel.rpc.resilience.backoff import pushback_s
from kernel.rpc.resilience.tracing import http_server_span
from kernel.rpc.server import credential_verifier
from kernel.rpc.telemetry import start_tracing
from services.gateway import body, steering, webapp
from services.gateway.errors import HTTP_OF, STATUS_OF_HTTP, error_response, retry_hint_s
from services.gateway.openapi import UPLOAD_PATH, document
from services.gateway.routes import ROUTES, STUBS, Route
from services.gateway.uploads import Uploads

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096  # (capped by net.core.somaxconn)
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_KEY = web.RequestKey("request_id", str)
CLIENT_REQUEST_ID_KEY = web.RequestKey("client_request_id", str)  # "" unless the caller gave one
ROUTE_KEY = web.RequestKey("route", Route)


def new_request_id() -> str:
    """32 random hex digits, as a UUID4's hex, without building the UUID (5 us -> 0.6 us)."""
    return os.urandom(16).hex()


class Gateway:
    def __init__(
        self,
        factory: RpcChannelFactory,
        targets: dict[str, str],
        verifier: TokenVerifier,
        rate: float = 50.0,
        burst: float = 100.0,
        cors_origin: str = "*",
        uploads: Uploads | None = None,
    ) -> None:
        self.factory = factory
        self.uploads = uploads
        self.targets = targets
        self.verifier = verifier
        self.buckets = TokenBuckets(rate, burst)
        self.cors_origin = cors_origin
        self.cors_headers = GATEWAY.for_origin(cors_origin).all_headers()
        # per route: a service that is down is logged once per outage, not per request
        self.outages: dict[str, OutageLog] = {}
        self.manifests = steering.SessionManifests(
            lambda: self.factory.stub(STUBS["playback"], self.targets["playback"])
        )

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
            response = error_response(
                429,
                "RESOURCE_EXHAUSTED",
                "rate limit exceeded",
                request_id,
                retry_after_s=wait,
            )
        else:
            response = await self._answer(request, handler, request_id)
        response.headers["X-Request-Id"] = request_id
        if self.cors_origin != ANY_ORIGIN:
            response.headers["Vary"] = "Origin"
        response.headers.update(self.cors_headers)
        return response

    @staticmethod
    def _client(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        if auth:
            return "t:" + hashlib.sha256(auth.encode()).hexdigest()[:24]
        return f"ip:{request.remote}"

    async def _answer(
        self, request: web.Request, handler: Handler, request_id: str
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else request.path
        try:
            response = await handler(request)
        except body.BodyRejected as exc:
            return error_response(
                exc.status, STATUS_OF_HTTP[exc.status], exc.message, request_id, "body"
            )
        except ServiceError as exc:
            status = HTTP_OF.get(exc.code, 500)
            return error_response(
                status,
                exc.code.name,
                exc.message,
                request_id,
                exc.field,
                retry_hint_s(status, None),
            )
        except grpc.aio.AioRpcError as exc:
            trailing = exc.trailing_metadata() or ()
            field = str(dict(trailing).get(FIELD_METADATA_KEY) or "")
            status = HTTP_OF.get(exc.code(), 500)
            message = exc.details() or exc.code().name
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._outage(path).failed(message)
            elif status >= 500:
                log.warning("request %s: %s %s", request_id, exc.code().name, message)
            if field and ROUTE_KEY in request:
                field, message = _as_caller_names(request[ROUTE_KEY], field, message)
            return error_response(
                status,
                exc.code().name,
                message,
                request_id,
                field or None,
                retry_hint_s(status, pushback_s(trailing)),
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(
                exc.status, STATUS_OF_HTTP.get(exc.status, "UNKNOWN"), exc.reason, request_id
            )
        except Exception:
            log.exception("request %s failed", request_id)
            return error_response(500, "INTERNAL", "internal error", request_id)
        if (known := self.outages.get(path)) is not None:
            known.succeeded()
        return response

    def _outage(self, path: str) -> OutageLog:
        """The outage log of the service behind route ``path``, made at its first outage."""
        if path not in self.outages:
            self.outages[path] = OutageLog(f"the service of {path}", log)
        return self.outages[path]

    # -- routes -----------------------------------------------------------------------

    def handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            request[ROUTE_KEY] = route
            metadata: list[tuple[str, str]] = [("x-request-id", request[REQUEST_ID_KEY])]
            account = ""
            if route.auth:
                token = bearer(request)
                account = (await self.verifier.verify(token)).account
                metadata.append(("authorization", f"Bearer {token}"))
            elif route.operator:  # the service checks the operator credential itself
                metadata.append(("authorization", f"Bearer {bearer(request)}"))
            message = await build_request(route, request, account)
            stub = self.factory.stub(STUBS[route.service], self.targets[route.service])
            reply = await getattr(stub, route.rpc)(message, metadata=tuple(metadata))
            if route.rpc == "StartPlayback" and reply.session.manifest_urls:
                session_id = reply.session.name.split("/", 1)[1]
                reply.session.steered_manifest_url = steering.session_urls(
                    steering.gateway_base(request), session_id
                ).mpd
            return web.json_response(jsonmap.to_dict(reply))

        return handle

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/vodUploads`` (:mod:`services.gateway.uploads`); 503 where this gateway
        was given no object store."""
        token = bearer(request)
        if self.uploads is None:
            raise Unavailable("this gateway takes no VOD uploads (no object store)")
        return await self.uploads.upload(request, token)


def traced(route: Route, handler: Handler) -> Handler:
    """``handler`` inside the request's SERVER span: the token check's and the RPC's spans
    are its children, one trace per request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        with http_server_span(route.method, route.path):
            return await handler(request)

    return handle


def _as_caller_names(route: Route, field: str, message: str) -> tuple[str, str]:
    """A service's refusal ("client_region: ...") in the names the caller sent."""
    named = route.caller_field(field)
    if message.startswith(f"{field}: "):
        message = f"{named}: {message.removeprefix(f'{field}: ')}"
    return named, message


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("missing bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


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
        target = getattr(message, route.body_field) if route.body_field else message
        body.fill(await body.read_json(request), target)
    for var, (path, fmt) in route.path_fields.items():
        _set_path(message, path, fmt.format(request.match_info[var], account=account))
    fields = route.request.DESCRIPTOR.fields_by_name
    for param, name in route.query.items():
        values = request.query.getall(param, [])
        if fields[name].is_repeated:  # `names=a&names=b`
            getattr(message, name).extend(_query_value(fields[name], param, v) for v in values)
        elif values:
            setattr(message, name, _query_value(fields[name], param, values[0]))
    if route.account_field:
        setattr(message, route.account_field, account)
    if "request_id" in fields and not getattr(message, "request_id"):  # noqa: B009
        message.request_id = request[CLIENT_REQUEST_ID_KEY]  # type: ignore[attr-defined]
    return message


async def handle_openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def handle_metrics(request: web.Request) -> web.Response:
    """The client layer's metrics (attempts, retries, hedges, breakers, bulkheads...) of
    every call the gateway makes, in the Prometheus text format."""
    return web.Response(body=render_metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})


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
        return web.json_response(
            {"ready": ready, "services": services}, status=200 if ready else 503
        )

    return handle


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[gateway.edge_middleware], client_max_size=body.MAX_BODY_BYTES
    )
    for route in ROUTES:
        app.router.add_route(route.method, route.path, traced(route, gateway.handler(route)))
    app.router.add_get("/v1/sessions/{session}/manifest.mpd", gateway.manifests.manifest)
    app.router.add_get("/v1/sessions/{session}/master.m3u8", gateway.manifests.playlist)
    app.router.add_get("/v1/sessions/{session}/steering", gateway.manifests.steering)
    app.router.add_post(UPLOAD_PATH, gateway.upload)
    app.router.add_get("/openapi.json", handle_openapi)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/readyz", readiness_handler(gateway))
    webapp.mount(app)
    return app


def targets_from(args: argparse.Namespace) -> dict[str, str]:
    return {service: getattr(args, f"{service}_target") for service in STUBS}


async def serve(args: argparse.Namespace) -> None:
    from kernel.rpc.server import termination_signal

    factory = RpcChannelFactory()
    verifier = TokenVerifier(identity_key_loader(factory, args.identity_target))
    store = open_store(args.vod_store)
    uploads = Uploads(store, args.vod_max_bytes, credential_verifier(), verifier)
    gateway = Gateway(
        factory, targets_from(args), verifier, args.rate, args.burst, args.cors_origin, uploads
    )
    runner = web.AppRunner(build_app(gateway))
    await runner.setup()
    size = workers.count(args.workers)
    try:
        # a kick-off's 2,000 connections in a second queue for accept() (as the data plane's
        # server lets them, kernel/http/server.py): past aiohttp's 128 the kernel drops a
        # SYN, and the viewer's client sends it again only a second later
        site = web.TCPSite(
            runner, args.host, args.port, backlog=LISTEN_BACKLOG, reuse_port=size > 1
        )
        await site.start()
        port = runner.addresses[0][1]  # the bound port, also when --port 0
        async with workers.group(size, port) as group:
            settle_heap()
            stopped = termination_signal()
            print(f"gateway: http://{args.host}:{port}", flush=True)
            await group.serve(stopped)
    finally:
        await runner.cleanup()
        await gateway.manifests.close()
        await store.close()
        await factory.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh gateway", description="the HTTP/JSON gateway")
    settings = parse(GatewaySettings, argv, parser)[0].settings
    logging.basicConfig(level=settings.log_level)
    tracing = start_tracing("gateway", settings)
    # serve() still reads an argparse-style namespace: the same names as the settings
    try:
        run(serve(argparse.Namespace(**settings.model_dump())), settings.uvloop)
    except workers.WorkerDied as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")
    finally:
        if tracing is not None:
            tracing.shutdown()  # the last batch of spans leaves before the process does
    return 0
