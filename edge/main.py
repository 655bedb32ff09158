"""``livemesh edge``: run an edge or shield cache node until SIGINT (stop) or SIGTERM (drain)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from edge.config import NodeConfig
from edge.node import EdgeNode
from edge.qoe import QoeConfig
from edge.upstream import UpstreamConfig
from kernel.config import ConfigError, EdgeSettings, parse
from kernel.heap import settle_heap
from kernel.http.server import Limits
from kernel.loop import run

log = logging.getLogger("edge")


def node_config(settings: EdgeSettings) -> NodeConfig:
    """The node's config from its settings (a node needs a parent or a fallback, and URL-token
    keys unless it serves without tokens: :class:`ConfigError` names the setting)."""
    if not settings.parent and not settings.fallback:
        raise SystemExit("livemesh edge: give at least one --parent")
    keys = settings.token_keys if settings.no_tokens else settings.required_token_keys()
    return NodeConfig(
        name=settings.name or f"edge-{settings.port}",
        upstream=UpstreamConfig(
            parents=tuple(settings.parent),
            fallbacks=tuple(settings.fallback),
            head_timeout_s=settings.head_timeout,
            hold_s=settings.hold,
            hold_margin_s=settings.hold_margin,
            stall_timeout_s=settings.stall_timeout,
        ),
        limits=Limits(head_timeout_s=settings.client_head_timeout),
        cache_bytes=settings.cache_bytes,
        tokens_required=not settings.no_tokens,
        token_keys=keys,
        admin_key=settings.admin_key,
        allowed_hosts=tuple(settings.allowed_host),
        negative_ttl_max_s=settings.negative_ttl,
        mpd_stale_s=settings.mpd_stale,
        drain_timeout_s=settings.drain_timeout,
        registry=settings.registry,
        tier=settings.tier,
        region=settings.region,
        public_url=settings.public_url,
        capacity_connections=settings.capacity,
        qoe=qoe_config(settings),
    )


def qoe_config(settings: EdgeSettings) -> QoeConfig | None:
    """Where the node's QoE events go, when it sends them (they need a Redis)."""
    if settings.qoe == "off":
        return None
    return QoeConfig(
        redis_url=settings.required_redis_url(),
        batch=settings.qoe_batch,
        flush_s=settings.qoe_flush_ms / 1000,
        ring=settings.qoe_ring,
    )


async def serve(config: NodeConfig, host: str, port: int) -> None:
    node = EdgeNode(config)
    bound = await node.start(host, port)
    log.info(
        "%s listening on http://%s:%d (parents %s, fallbacks %s)",
        config.name,
        host,
        bound,
        ",".join(config.upstream.parents) or "-",
        ",".join(config.upstream.fallbacks) or "-",
    )
    stop = asyncio.Event()
    how = {"drain": False}
    loop = asyncio.get_running_loop()

    def on_signal(drain: bool) -> None:
        how["drain"] = drain
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_signal, False)
    loop.add_signal_handler(signal.SIGTERM, on_signal, True)
    settle_heap()
    print(f"READY {config.name} http://{host}:{bound}", flush=True)
    await stop.wait()
    if how["drain"]:
        log.info("draining")
        await node.drain()
    await node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livemesh edge", description="Run an edge or shield cache node."
    )
    settings = parse(EdgeSettings, argv, parser)[0].settings
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        config = node_config(settings)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    run(serve(config, settings.host, settings.port), settings.uvloop)
    return 0
