"""Profile service: profiles, preferences and viewing history of an account.

Redis plays the Cassandra role of the seed architecture, with a read-through
cache in front (the EVCache role). A caller reaches only its own account's
profiles: the access token is verified locally and its account must be the
resource's, else PERMISSION_DENIED.

An account's keys (:class:`kernel.keys.ProfileKeys`) share one Redis Cluster slot, so
each MULTI here is one slot's. A first view of a title also feeds the recommendation
model, whose keys are in other slots: that update follows the MULTI, on its own
(:func:`services.recommend.model.record_first_view` says why that is enough).

A view's score is its time in ms, made strictly greater than the profile's newest
(by ``TIE_STEP_MS``, a microsecond, when two views share a millisecond): the sorted set
breaks equal scores by the title's bytes, which put two views of one millisecond in
alphabetical rather than viewing order. The whole milliseconds stay the view's time.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import cast

import grpc
from google.protobuf import json_format
from redis.exceptions import RedisError

from kernel.config import ProfileSettings
from kernel.keys import ProfileKeys
from kernel.rpc import access, validate
from kernel.rpc.auth import Principal, TokenVerifier, authenticate, identity_key_loader
from kernel.rpc.cache import ReadThroughCache
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import FailedPrecondition, InvalidArgument, NotFound
from kernel.rpc.process import Service, connect_redis, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.profile.v1 import profile_pb2 as pb
from livemesh.profile.v1 import profile_pb2_grpc as pb_grpc
from services.catalog.service import title_name
from services.recommend import model

log = logging.getLogger(__name__)
MAX_PROFILES = 5
IDEMPOTENCY_TTL_S = 24 * 3600
TIE_STEP_MS = 0.001  # how much newer than the newest view a view's score is at least
LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")
RATINGS = ("", "G", "PG", "PG-13", "R", "NC-17")
UPDATABLE = (
    "display_name",
    "preferences",
    "preferences.language",
    "preferences.maturity_rating",
    "preferences.autoplay",
)


def _check_preferences(prefs: pb.Preferences, field: str) -> None:
    if prefs.language and not LANGUAGE.match(prefs.language):
        raise InvalidArgument(f"{field}.language", "must be a BCP 47 tag such as en or pt-BR")
    if prefs.maturity_rating not in RATINGS:
        allowed = ", ".join(RATINGS[1:])
        raise InvalidArgument(f"{field}.maturity_rating", f"must be one of {allowed}")


def _copy_preferences(path: str, source: pb.Preferences, target: pb.Preferences) -> None:
    if path == "preferences":
        target.CopyFrom(source)
        return
    attr = path.split(".", 1)[1]
    setattr(target, attr, getattr(source, attr))


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    def __init__(self, redis_url: str, verifier: TokenVerifier, cache_ttl_s: float = 5.0) -> None:
        self.redis = connect_redis(redis_url)
        self.verifier = verifier
        self.cache: ReadThroughCache[dict[str, pb.Profile]] = ReadThroughCache(cache_ttl_s)

    # -- helpers --------------------------------------------------------------------

    async def _caller_account(
        self, context: grpc.aio.ServicerContext, account_id: str
    ) -> Principal:
        principal = await authenticate(context, self.verifier)
        principal.require_account(f"accounts/{account_id}")
        return principal

    async def _profiles(self, account_id: str) -> dict[str, pb.Profile]:
        async def load() -> dict[str, pb.Profile]:
            raw = await self.redis.hgetall(ProfileKeys(account_id).profiles)
            return {
                str(pid): json_format.Parse(text, pb.Profile()) for pid, text in sorted(raw.items())
            }

        return await self.cache.get(account_id, load)

    async def _profile(
        self, name: str, field: str, context: grpc.aio.ServicerContext
    ) -> tuple[str, str, pb.Profile]:
        account_id, profile_id = validate.parse_name(name, field, "accounts", "profiles")
        await self._caller_account(context, account_id)
        profile = (await self._profiles(account_id)).get(profile_id)
        if profile is None:
            raise NotFound(f"{name} not found")
        return account_id, profile_id, profile

    async def _store(self, account_id: str, profile_id: str, profile: pb.Profile) -> None:
        await self.redis.hset(
            ProfileKeys(account_id).profiles,
            profile_id,
            json_format.MessageToJson(profile, indent=None),
        )
        self.cache.invalidate(account_id)

    async def _replay(self, account_id: str, request_id: str) -> str | None:
        if not request_id:
            return None
        done = await self.redis.get(ProfileKeys(account_id).request(request_id))
        return str(done) if done is not None else None

    async def _remember(self, account_id: str, request_id: str, result: str) -> None:
        if request_id:
            key = ProfileKeys(account_id).request(request_id)
            await self.redis.set(key, result, ex=IDEMPOTENCY_TTL_S)

    # -- profiles -------------------------------------------------------------------

    @access.viewer
    async def CreateProfile(
        self, request: pb.CreateProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateProfileResponse:
        (account_id,) = validate.parse_name(request.parent, "parent", "accounts")
        request_id = validate.request_id(request.request_id)
        display_name = validate.text(request.profile.display_name, "profile.display_name", 1, 50)
        _check_preferences(request.profile.preferences, "profile.preferences")
        profile_id = request.profile_id and validate.resource_id(request.profile_id, "profile_id")
        await self._caller_account(context, account_id)
        earlier = await self._replay(account_id, request_id)
        if earlier is not None:
            _, _, profile = await self._profile(earlier, "parent", context)
            return pb.CreateProfileResponse(profile=profile)
        profiles = await self._profiles(account_id)
        if len(profiles) >= MAX_PROFILES:
            raise FailedPrecondition(f"an account has at most {MAX_PROFILES} profiles")
        profile_id = profile_id or f"p{secrets.token_hex(4)}"
        if profile_id in profiles:
            raise InvalidArgument("profile_id", "is taken in this account")
        profile = pb.Profile(
            name=f"accounts/{account_id}/profiles/{profile_id}", display_name=display_name
        )
        profile.preferences.CopyFrom(request.profile.preferences)
        now = time.time_ns()
        profile.create_time.FromNanoseconds(now)
        profile.update_time.FromNanoseconds(now)
        await self._store(account_id, profile_id, profile)
        await self._remember(account_id, request_id, profile.name)
        return pb.CreateProfileResponse(profile=profile)

    @access.viewer
    async def GetProfile(
        self, request: pb.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProfileResponse:
        _, _, profile = await self._profile(request.name, "name", context)
        return pb.GetProfileResponse(profile=profile)

    @access.viewer
    async def ListProfiles(
        self, request: pb.ListProfilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProfilesResponse:
        (account_id,) = validate.parse_name(request.parent, "parent", "accounts")
        size = validate.page_size(request.page_size, MAX_PROFILES, 20)
        offset = validate.offset_from_token(request.page_token)
        await self._caller_account(context, account_id)
        found = list((await self._profiles(account_id)).values())[offset : offset + size + 1]
        token = validate.next_offset_token(offset, size, len(found))
        return pb.ListProfilesResponse(profiles=found[:size], next_page_token=token)

    @access.viewer
    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProfileResponse:
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask", "name at least one field to change")
        for path in paths:
            if path not in UPDATABLE:
                raise InvalidArgument("update_mask", f"cannot update {path[:64]!r}")
        validate.request_id(request.request_id)
        if "display_name" in paths:
            validate.text(request.profile.display_name, "profile.display_name", 1, 50)
        _check_preferences(request.profile.preferences, "profile.preferences")
        account_id, profile_id, current = await self._profile(
            request.profile.name, "profile.name", context
        )
        updated = pb.Profile()
        updated.CopyFrom(current)
        for path in paths:
            if path == "display_name":
                updated.display_name = request.profile.display_name.strip()
            else:
                _copy_preferences(path, request.profile.preferences, updated.preferences)
        updated.update_time.FromNanoseconds(time.time_ns())
        await self._store(account_id, profile_id, updated)
        return pb.UpdateProfileResponse(profile=updated)

    @access.viewer
    async def DeleteProfile(
        self, request: pb.DeleteProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteProfileResponse:
        validate.request_id(request.request_id)
        account_id, profile_id = validate.parse_name(request.name, "name", "accounts", "profiles")
        await self._caller_account(context, account_id)
        keys = ProfileKeys(account_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.profiles, profile_id)
            pipe.delete(keys.views(profile_id), keys.positions(profile_id))
            await pipe.execute()
        self.cache.invalidate(account_id)
        return pb.DeleteProfileResponse()

    # -- viewing history ------------------------------------------------------------

    @access.viewer
    async def RecordView(
        self, request: pb.RecordViewRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordViewResponse:
        title = title_name(request.view.title, "view.title")
        if request.view.position_seconds < 0:
            raise InvalidArgument("view.position_seconds", "must not be negative")
        request_id = validate.request_id(request.request_id)
        account_id, profile_id, _ = await self._profile(request.parent, "parent", context)
        keys = ProfileKeys(account_id)
        view = pb.View(title=title, position_seconds=request.view.position_seconds)
        now_ms = int(time.time() * 1000)
        view.view_time.FromMilliseconds(now_ms)
        if request_id and not await self.redis.set(
            keys.request(request_id), title, nx=True, ex=IDEMPOTENCY_TTL_S
        ):
            return pb.RecordViewResponse(view=view)  # a retry: recorded already
        rows = cast(
            list[tuple[str, float]],
            await self.redis.zrevrange(keys.views(profile_id), 0, -1, withscores=True),
        )
        history = [str(t) for t, _ in rows]
        score = max(float(now_ms), rows[0][1] + TIE_STEP_MS) if rows else float(now_ms)
        view.view_time.FromMilliseconds(int(score))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.views(profile_id), {title: score})
            pipe.hset(keys.positions(profile_id), title, view.position_seconds)
            added, _ = await pipe.execute()
        if added:  # the title joined the history now, in this call and no other
            await self._count_first_view(title, history)
        return pb.RecordViewResponse(view=view)

    async def _count_first_view(self, title: str, history: list[str]) -> None:
        """Feed the recommendation model; the view is recorded whatever happens here:
        failing the call would only make its caller retry a view the model would not
        count again (see record_first_view), so a failure is logged, not raised."""
        try:
            await model.record_first_view(self.redis, title, history)
        except RedisError as error:
            log.warning("recommendation model not updated for %s: %r", title, error)

    @access.viewer
    async def ListViews(
        self, request: pb.ListViewsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListViewsResponse:
        size = validate.page_size(request.page_size, 50, 100)
        offset = validate.offset_from_token(request.page_token)
        account_id, profile_id, _ = await self._profile(request.parent, "parent", context)
        keys = ProfileKeys(account_id)
        rows = cast(
            list[tuple[str, float]],
            await self.redis.zrevrange(
                keys.views(profile_id), offset, offset + size, withscores=True
            ),
        )
        titles = [str(t) for t, _ in rows]
        positions = await self.redis.hmget(keys.positions(profile_id), titles) if titles else []
        views = []
        for (title, when), position in zip(rows[:size], positions, strict=False):
            view = pb.View(title=str(title), position_seconds=int(position or 0))
            view.view_time.FromMilliseconds(int(when))
            views.append(view)
        token = validate.next_offset_token(offset, size, len(rows))
        return pb.ListViewsResponse(views=views, next_page_token=token)


class ProfileService(Service):
    def __init__(self, redis_url: str, verifier: TokenVerifier) -> None:
        self.servicer = ProfileServicer(redis_url, verifier)

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["ProfileService"].full_name,
                self.servicer,
                pb_grpc.add_ProfileServiceServicer_to_server,
                viewers=self.servicer.verifier,
            )
        ]

    async def close(self) -> None:
        await self.servicer.redis.aclose()


async def build(settings: ProfileSettings, factory: RpcChannelFactory) -> Service:
    verifier = TokenVerifier(identity_key_loader(factory, settings.identity_target))
    return ProfileService(settings.required_redis_url(), verifier)


def main(argv: list[str] | None = None) -> int:
    return service_main(ProfileSettings, argv, build, needs_redis=True)
