"""The gateway's routes, declared once: the app serves them and the OpenAPI document
describes them, both from this table.

A route names the RPC it calls and where each request field comes from: the JSON
body (proto3 JSON mapping, camelCase), a path variable, a query parameter, or the
caller's account (from the verified token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from livemesh.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from livemesh.channels.v1 import channels_pb2, channels_pb2_grpc
from livemesh.identity.v1 import identity_pb2, identity_pb2_grpc
from livemesh.playback.v1 import playback_pb2, playback_pb2_grpc
from livemesh.profile.v1 import profile_pb2, profile_pb2_grpc
from livemesh.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from livemesh.search.v1 import search_pb2, search_pb2_grpc

# service key -> generated stub class
STUBS: dict[str, Any] = {
    "identity": identity_pb2_grpc.IdentityServiceStub,
    "catalog": catalog_pb2_grpc.CatalogServiceStub,
    "search": search_pb2_grpc.SearchServiceStub,
    "profile": profile_pb2_grpc.ProfileServiceStub,
    "recommend": recommend_pb2_grpc.RecommendationServiceStub,
    "playback": playback_pb2_grpc.PlaybackServiceStub,
    "channels": channels_pb2_grpc.ChannelServiceStub,
}

MY_PROFILE = "{account}/profiles/{}"  # a path variable under the caller's own account


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    service: str
    rpc: str
    request: type[Message]
    response: type[Message]
    summary: str
    auth: bool = False
    body: bool = False  # the JSON body is the request message (path/query fields override)
    body_field: str = ""  # ... or one field of it
    path_fields: dict[str, tuple[str, str]] = field(default_factory=dict)  # var -> (field, fmt)
    query: dict[str, str] = field(default_factory=dict)  # query parameter -> request field
    account_field: str = ""  # request field set to the caller's account name

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.rpc}"


PAGE = {"pageSize": "page_size", "pageToken": "page_token"}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts:signUp", "identity", "SignUp", identity_pb2.SignUpRequest,
          identity_pb2.SignUpResponse, "Create an account; returns an access token", body=True),
    Route("POST", "/v1/accounts:signIn", "identity", "SignIn", identity_pb2.SignInRequest,
          identity_pb2.SignInResponse, "Exchange email and password for an access token",
          body=True),
    Route("GET", "/v1/titles", "catalog", "ListTitles", catalog_pb2.ListTitlesRequest,
          catalog_pb2.ListTitlesResponse, "List catalog titles",
          query={"parent": "parent", "kind": "kind", **PAGE}),
    Route("GET", "/v1/titles/{title}", "catalog", "GetTitle", catalog_pb2.GetTitleRequest,
          catalog_pb2.GetTitleResponse, "Get one title",
          path_fields={"title": ("name", "titles/{}")}),
    Route("GET", "/v1/search", "search", "SearchTitles", search_pb2.SearchTitlesRequest,
          search_pb2.SearchTitlesResponse, "Search titles (ranked, prefix match)",
          query={"q": "query", **PAGE}),
    Route("GET", "/v1/channels", "channels", "ListChannels", channels_pb2.ListChannelsRequest,
          channels_pb2.ListChannelsResponse, "List live channels", query=dict(PAGE)),
    Route("GET", "/v1/channels/{channel}", "channels", "GetChannel",
          channels_pb2.GetChannelRequest, channels_pb2.GetChannelResponse,
          "Get a live channel and its live status",
          path_fields={"channel": ("name", "channels/{}")}),
    Route("GET", "/v1/profiles", "profile", "ListProfiles", profile_pb2.ListProfilesRequest,
          profile_pb2.ListProfilesResponse, "List the caller's profiles", auth=True,
          account_field="parent", query=dict(PAGE)),
    Route("POST", "/v1/profiles", "profile", "CreateProfile", profile_pb2.CreateProfileRequest,
          profile_pb2.CreateProfileResponse, "Create a profile in the caller's account",
          auth=True, body=True, account_field="parent"),
    Route("GET", "/v1/profiles/{profile}", "profile", "GetProfile",
          profile_pb2.GetProfileRequest, profile_pb2.GetProfileResponse,
          "Get one of the caller's profiles", auth=True,
          path_fields={"profile": ("name", MY_PROFILE)}),
    Route("PATCH", "/v1/profiles/{profile}", "profile", "UpdateProfile",
          profile_pb2.UpdateProfileRequest, profile_pb2.UpdateProfileResponse,
          "Change fields of a profile named in updateMask", auth=True, body=True,
          path_fields={"profile": ("profile.name", MY_PROFILE)}),
    Route("POST", "/v1/profiles/{profile}/views", "profile", "RecordView",
          profile_pb2.RecordViewRequest, profile_pb2.RecordViewResponse,
          "Record that the profile watched a title", auth=True, body=True,
          path_fields={"profile": ("parent", MY_PROFILE)}),
    Route("GET", "/v1/profiles/{profile}/views", "profile", "ListViews",
          profile_pb2.ListViewsRequest, profile_pb2.ListViewsResponse,
          "The profile's viewing history, newest first", auth=True, query=dict(PAGE),
          path_fields={"profile": ("parent", MY_PROFILE)}),
    Route("GET", "/v1/profiles/{profile}/recommendations", "recommend", "ListRecommendations",
          recommend_pb2.ListRecommendationsRequest, recommend_pb2.ListRecommendationsResponse,
          "Recommendations for the profile", auth=True, query={"pageSize": "page_size"},
          path_fields={"profile": ("parent", MY_PROFILE)}),
    Route("POST", "/v1/playback:start", "playback", "StartPlayback",
          playback_pb2.StartPlaybackRequest, playback_pb2.StartPlaybackResponse,
          "Press play: signed manifest URLs on ranked edges", auth=True, body=True),
    Route("POST", "/v1/playback/{session}:heartbeat", "playback", "HeartbeatPlayback",
          playback_pb2.HeartbeatPlaybackRequest, playback_pb2.HeartbeatPlaybackResponse,
          "Keep a playback session alive", auth=True, body=True,
          path_fields={"session": ("name", "playbackSessions/{}")}),
    Route("POST", "/v1/playback/{session}:stop", "playback", "StopPlayback",
          playback_pb2.StopPlaybackRequest, playback_pb2.StopPlaybackResponse,
          "End a playback session", auth=True, body=True,
          path_fields={"session": ("name", "playbackSessions/{}")}),
)
