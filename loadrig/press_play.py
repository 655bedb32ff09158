"""Pressing play: sign in (or reuse a token), ``StartPlayback`` through the gateway, and
press again as a player app does when the gateway refuses.

Apart from the player because it is the one step that speaks to the gateway (JSON over
aiohttp, refusals read for their retry hint) rather than to an edge.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from loadrig.player_context import PlayerContext
from loadrig.player_record import PlayerRecord

START_ATTEMPTS = 6  # presses of play refused without a hint before a viewer gives up
START_PATIENCE_S = 30.0  # how long a viewer told when to come back keeps pressing play
START_BACKOFF_S = 0.5


class PlayerError(Exception):
    """An edge or the gateway answered in a way a player cannot use (the message says how);
    ``retry_after_s``: when the answer said to try again (the gateway's documented
    ``retryAfterMs``, else its ``Retry-After``), which the next attempt waits for."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Started:
    """What press play answered: the ranked manifest URLs (none: the viewer gave up), the
    playback session's id (the player's CMCD ``sid``: per-cell QoE joins the session's
    experiment cell on it) and the live latency the session asks for (0: the channel's)."""

    urls: list[str] = field(default_factory=list)
    session_id: str = ""
    target_latency_s: float = 0.0


# what a failed press of play may raise: all of it worth another press
START_ERRORS = (aiohttp.ClientError, PlayerError, TimeoutError, OSError)  # worth a retry


def gateway_error(status: int, body: object) -> str:
    """What a gateway refusal says, as one error kind of the report: the status and the
    error body's message with its numbers as N ("concurrency limit 27" and "... 31" are
    one kind), e.g. ``gateway 429: overloaded: concurrency limit N``."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else str(body)
    return f"gateway {status}: " + re.sub(r"\d+", "N", message)[:80]


def retry_after_s(body: object, retry_after: str) -> float:
    """When a refused request may be sent again: the error body's ``retryAfterMs`` (the
    gateway's documented hint, to the millisecond), else the ``Retry-After`` header's
    seconds, else 0 (no hint)."""
    error = body.get("error") if isinstance(body, dict) else None
    hint = error.get("retryAfterMs") if isinstance(error, dict) else None
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint > 0:
        return float(hint) / 1000
    return float(retry_after) if retry_after.isdigit() else 0.0


async def _json(resp: aiohttp.ClientResponse) -> dict[str, object]:
    body = await resp.json(content_type=None)
    if resp.status != 200:
        raise PlayerError(
            gateway_error(resp.status, body),
            retry_after_s(body, resp.headers.get("Retry-After", "")),
        )
    assert isinstance(body, dict)
    return body


async def press_play(ctx: PlayerContext, index: int) -> Started:
    """Sign in (or reuse a token) and StartPlayback; what it answered."""
    account = index % len(ctx.tokens)
    token = ctx.tokens[account]
    if ctx.settings.signin_share and ctx.rng.random() < ctx.settings.signin_share:
        email, password = ctx.credentials[account]
        async with ctx.http.post(
            f"{ctx.gateway}/v1/accounts:signIn", json={"email": email, "password": password}
        ) as resp:
            token = str((await _json(resp))["accessToken"])
    async with ctx.http.post(
        f"{ctx.gateway}/v1/playback:start",
        json={"content": ctx.settings.content},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        session = (await _json(resp))["session"]
    assert isinstance(session, dict)
    urls = [str(u["url"]) for u in session.get("manifestUrls", [])]
    if not urls:
        raise PlayerError("StartPlayback returned no manifest URL")
    session_id = str(session.get("name", "")).rsplit("/", 1)[-1]
    target_ms = session.get("targetLatencyMs", 0)
    target_s = target_ms / 1000 if isinstance(target_ms, int | float) else 0.0
    return Started(urls, session_id, target_s)


async def press_until_answered(ctx: PlayerContext, rec: PlayerRecord) -> Started:
    """Press play until the gateway answers: a player app's retry. A refusal that says
    when to come back (the gateway's ``retryAfterMs``, which the gateway has jittered,
    or ``Retry-After``) is pressed again then, for up to ``START_PATIENCE_S``; one that
    does not, after exponential backoff with full jitter from the run's seeded random
    source, up to ``START_ATTEMPTS`` presses.  No URL when the viewer gave up, after
    the last wait, as before."""
    rng = ctx.rng

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        rec.errors[f"start: {type(exc).__name__}: {exc}"[:100]] += 1

    def backoff(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after_s if isinstance(exc, PlayerError) else 0.0
        if after > 0:
            return after
        return rng.uniform(0, START_BACKOFF_S * 2 ** (state.attempt_number - 1))

    def stop(state: RetryCallState) -> bool:
        """A refusal that said when to come back is followed for ``START_PATIENCE_S``
        (a player app shows "starting..." meanwhile); ``START_ATTEMPTS`` refusals that
        did not, and the viewer gives up."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, PlayerError) and exc.retry_after_s > 0:
            waited = state.seconds_since_start or 0.0  # (None only before an outcome)
            return waited + exc.retry_after_s > START_PATIENCE_S
        return state.attempt_number >= START_ATTEMPTS

    async def give_up(state: RetryCallState) -> Started:
        await asyncio.sleep(state.upcoming_sleep)
        return Started()

    presses = AsyncRetrying(
        stop=stop,
        wait=backoff,
        retry=retry_if_exception_type(START_ERRORS),
        after=note,
        retry_error_callback=give_up,
    )
    return await presses(press_play, ctx, rec.index)
