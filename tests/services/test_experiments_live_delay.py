"""The live-delay decision end to end: press play asks the experiment service for the
viewer's cell, the session keeps its target latency, GetSteering hands it to the gateway
and the session's MPD aims at it (ServiceDescription/Latency@target)."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree

from kernel.keys import experiment_session
from kernel.ports import free_port
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.tokens import TokenSigner, new_keys
from livemesh.experiments.v1 import experiments_pb2 as epb
from livemesh.experiments.v1 import experiments_pb2_grpc as epb_grpc
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.playback.v1 import playback_pb2_grpc as pb_grpc
from services.catalog.service import CatalogService
from services.channels.service import ChannelService
from services.experiments.allocation import cell_index
from services.experiments.service import ExperimentService
from services.gateway.app import Gateway, build_app
from services.gateway.live_delay import with_target_latency
from services.gateway.steering import MPD_NS
from services.playback.live_delay import LiveDelay
from services.playback.service import PlaybackService, PlaybackServicer
from services.registry.service import RegistryService
from tests.services.conftest import Metadata, Presenting, SignUp, Start
from tests.test_mpd import dash_schema, mpd_tree  # noqa: F401  (dash_schema: a fixture)

NS = {"d": MPD_NS}
CELLS = {"control": "1000", "fast": "500"}
QUIET_S = 0.5


def latency(mpd: bytes) -> dict[str, str]:
    (element,) = etree.fromstring(mpd).findall("d:ServiceDescription/d:Latency", NS)
    return dict(element.attrib)


@pytest.mark.parametrize("target", [500, 1000, 300])
def test_the_session_mpd_aims_at_the_cell_latency(
    target: int,
    dash_schema: etree.XMLSchema,  # noqa: F811
) -> None:
    channel_mpd = etree.tostring(mpd_tree())
    before = latency(channel_mpd)
    after = latency(with_target_latency(channel_mpd, target))
    assert after["target"] == str(target)
    assert int(after["min"]) == min(int(before["min"]), target)
    assert int(after["max"]) == max(int(before["max"]), target)
    assert dash_schema.validate(etree.fromstring(with_target_latency(channel_mpd, target)))
    # no experiment: the channel's MPD untouched
    assert with_target_latency(channel_mpd, 0) == channel_mpd


async def playback(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    redis_url: str,
    database_url: str,
    experiments: str,
    origin_url: str = "http://origin.example:8081",
) -> tuple[pb_grpc.PlaybackServiceStub, PlaybackServicer, str]:
    """Playback on loopback (with catalog, channels and registry): its stub, servicer and
    address."""
    catalog, channels, registry = (
        await start(CatalogService()),
        await start(ChannelService(redis_url, database_url)),
        await start(RegistryService()),
    )
    servicer = PlaybackServicer(
        redis_url,
        verifier,
        factory,
        catalog=catalog.target,
        channels=channels.target,
        registry=registry.target,
        signer=TokenSigner.from_spec(new_keys()),
        origin_url=origin_url,
        cache_ttl_s=0,
        experiments=experiments,
    )
    running = await start(PlaybackService(servicer))
    stub = pb_grpc.PlaybackServiceStub(grpc.aio.insecure_channel(running.target))
    return stub, servicer, running.target


async def test_press_play_takes_the_viewers_cell_and_logs_its_exposure(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
    operator_auth: Metadata,
) -> None:
    service = ExperimentService(redis_url, database_url, viewers=verifier)
    experiments = await start(service)
    operator: epb_grpc.ExperimentServiceStub = Presenting(  # type: ignore[assignment]
        epb_grpc.ExperimentServiceStub(grpc.aio.insecure_channel(experiments.target)),
        operator_auth,
    )
    stub, servicer, _ = await playback(
        start, factory, verifier, redis_url, database_url, experiments.target
    )
    servicer.live_delay.quiet_s = 0  # (asked on every press: the quiet spell is tested below)
    viewer = await sign_up("viewer@example.org")
    press_play = pb.StartPlaybackRequest(content="channels/demo")

    # no experiment runs: the channel's own target
    started = await stub.StartPlayback(press_play, metadata=viewer.auth)
    assert started.session.target_latency_ms == 0

    definition = epb.Experiment(display_name="Live delay", decision="live-delay")
    definition.cells.extend(epb.Cell(name=n, weight=1, value=v) for n, v in CELLS.items())
    await operator.CreateExperiment(
        epb.CreateExperimentRequest(experiment_id="ld", experiment=definition)
    )
    experiment = (
        await operator.StartExperiment(epb.StartExperimentRequest(name="experiments/ld"))
    ).experiment
    cell = experiment.cells[cell_index(experiment.salt, viewer.account, [1, 1])].name

    started = await stub.StartPlayback(press_play, metadata=viewer.auth)
    session = started.session
    assert session.target_latency_ms == int(CELLS[cell])
    steering = await stub.GetSteering(pb.GetSteeringRequest(name=session.name))
    assert steering.target_latency_ms == int(CELLS[cell])
    # the exposure: the account counted in its cell, the session's QoE events routed there
    readout = await operator.GetReadout(epb.GetReadoutRequest(name="experiments/ld"))
    assert {c.cell: c.accounts for c in readout.cells} == {n: int(n == cell) for n in CELLS}
    session_id = session.name.split("/", 1)[1]
    assert await redis.get(experiment_session(session_id)) == f"ld|{cell}".encode()

    await operator.StopExperiment(
        epb.StopExperimentRequest(name="experiments/ld", reason="decided")
    )
    again = await stub.StartPlayback(press_play, metadata=viewer.auth)
    assert again.session.target_latency_ms == 0


async def test_a_viewer_may_ask_only_for_its_own_cell(
    start: Start,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(ExperimentService(redis_url, database_url, viewers=verifier))
    stub = epb_grpc.ExperimentServiceStub(grpc.aio.insecure_channel(running.target))
    alice, bob = await sign_up("alice@example.org"), await sign_up("bob@example.org")
    own = await stub.AssignCell(
        epb.AssignCellRequest(decision="live-delay", account=alice.account), metadata=alice.auth
    )
    assert not own.in_experiment
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.AssignCell(
            epb.AssignCellRequest(decision="live-delay", account=bob.account),
            metadata=alice.auth,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_press_play_goes_on_without_the_experiment_service(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis_url: str,
    database_url: str,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    stub, _, _ = await playback(start, factory, verifier, redis_url, database_url, nobody)
    viewer = await sign_up("viewer@example.org")
    started = await stub.StartPlayback(
        pb.StartPlaybackRequest(content="channels/demo"), metadata=viewer.auth
    )
    assert started.session.target_latency_ms == 0
    assert started.session.manifest_urls


async def test_while_no_experiment_runs_press_play_asks_once_per_quiet_spell(
    start: Start,
    factory: RpcChannelFactory,
    sign_up: SignUp,
    verifier: TokenVerifier,
    redis_url: str,
    database_url: str,
    operator_auth: Metadata,
) -> None:
    running = await start(ExperimentService(redis_url, database_url, viewers=verifier))
    operator: epb_grpc.ExperimentServiceStub = Presenting(  # type: ignore[assignment]
        epb_grpc.ExperimentServiceStub(grpc.aio.insecure_channel(running.target)), operator_auth
    )
    viewer = await sign_up("viewer@example.org")
    delay = LiveDelay(factory, running.target, quiet_s=QUIET_S)
    assert await delay.target_ms(viewer.token, viewer.account, "s1") == 0  # none runs
    definition = epb.Experiment(display_name="Live delay", decision="live-delay")
    definition.cells.extend(epb.Cell(name=n, weight=1, value=v) for n, v in CELLS.items())
    await operator.CreateExperiment(
        epb.CreateExperimentRequest(experiment_id="ld", experiment=definition)
    )
    await operator.StartExperiment(epb.StartExperimentRequest(name="experiments/ld"))
    # within the quiet spell: not asked (so nothing is exposed)
    assert await delay.target_ms(viewer.token, viewer.account, "s2") == 0
    readout = await operator.GetReadout(epb.GetReadoutRequest(name="experiments/ld"))
    assert sum(c.accounts for c in readout.cells) == 0
    await asyncio.sleep(QUIET_S)  # (the spell is a time: it passes)
    assert await delay.target_ms(viewer.token, viewer.account, "s3") in (500, 1000)
    readout = await operator.GetReadout(epb.GetReadoutRequest(name="experiments/ld"))
    assert sum(c.accounts for c in readout.cells) == 1


async def test_the_gateway_serves_the_session_an_mpd_aiming_at_its_cell(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis_url: str,
    database_url: str,
    operator_auth: Metadata,
    http: aiohttp.ClientSession,
) -> None:
    channel_mpd = etree.tostring(mpd_tree(), xml_declaration=True, encoding="UTF-8")

    async def any_mpd(request: web.Request) -> web.Response:  # the edge the session was given
        return web.Response(body=channel_mpd, content_type="application/dash+xml")

    edge_app = web.Application()
    edge_app.router.add_get("/{path:.*}", any_mpd)
    edge = TestServer(edge_app, host="127.0.0.1")
    await edge.start_server()
    try:
        running = await start(ExperimentService(redis_url, database_url, viewers=verifier))
        operator: epb_grpc.ExperimentServiceStub = Presenting(  # type: ignore[assignment]
            epb_grpc.ExperimentServiceStub(grpc.aio.insecure_channel(running.target)),
            operator_auth,
        )
        definition = epb.Experiment(display_name="Live delay", decision="live-delay")
        definition.cells.extend(epb.Cell(name=n, weight=1, value=v) for n, v in CELLS.items())
        await operator.CreateExperiment(
            epb.CreateExperimentRequest(experiment_id="ld", experiment=definition)
        )
        await operator.StartExperiment(epb.StartExperimentRequest(name="experiments/ld"))
        stub, _, target = await playback(
            start, factory, verifier, redis_url, database_url, running.target,
            origin_url=f"http://127.0.0.1:{edge.port}",
        )  # fmt: skip
        gateway = TestServer(
            build_app(Gateway(factory, {"playback": target}, verifier)), host="127.0.0.1"
        )
        await gateway.start_server()
        try:
            viewer = await sign_up("viewer@example.org")
            session = (
                await stub.StartPlayback(
                    pb.StartPlaybackRequest(content="channels/demo"), metadata=viewer.auth
                )
            ).session
            assert session.target_latency_ms in (500, 1000)
            session_id = session.name.split("/", 1)[1]
            url = f"http://127.0.0.1:{gateway.port}/v1/sessions/{session_id}/manifest.mpd"
            async with http.get(url) as resp:
                assert resp.status == 200, await resp.text()
                served = await resp.read()
            assert latency(served)["target"] == str(session.target_latency_ms)
            assert latency(channel_mpd)["target"] != latency(served)["target"]
        finally:
            await gateway.close()
    finally:
        await edge.close()
