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
from livemesh.experiments.v1 import experiments_pb2, experiments_pb2_grpc
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
    "experiments": experiments_pb2_grpc.ExperimentServiceStub,
}

MY_PROFILE = "{account}/profiles/{}"  # a path variable under the caller's own account
EXPERIMENT = {"experiment": ("name", "experiments/{}")}
PUBLICATION = {"publication": ("name", "vodPublications/{}")}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    service: str
    rpc: str
    request: type[Message]
    response: type[Message]
    summary: str
    auth: bool = False  # a viewer's access token, verified here
    operator: bool = False  # an operator credential, forwarded for the service to check
    body: bool = False  # the JSON body is the request message (path/query fields override)
    body_field: str = ""  # ... or one field of it
    path_fields: dict[str, tuple[str, str]] = field(default_factory=dict)  # var -> (field, fmt)
    query: dict[str, str] = field(default_factory=dict)  # query parameter -> request field
    account_field: str = ""  # request field set to the caller's account name

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.rpc}"

    def caller_field(self, field: str) -> str:
        """The name the HTTP caller knows a request field by, for a field a service names by
        its proto path: the query parameter or path variable it came from, else its JSON
        path in the body (``client_region`` -> ``clientRegion``); unknown paths as given."""
        for param, name in self.query.items():
            if name == field:
                return param
        for var, (path, _) in self.path_fields.items():
            if path == field:
                return var
        parts = field.split(".")
        if self.body_field and parts[0] == self.body_field:
            parts = parts[1:]
        descriptor = self.request.DESCRIPTOR
        if self.body_field:
            descriptor = descriptor.fields_by_name[self.body_field].message_type
        names = []
        for part in parts:
            fd = descriptor.fields_by_name.get(part) if descriptor is not None else None
            if fd is None:
                return field
            names.append(fd.json_name)
            descriptor = fd.message_type
        return ".".join(names) or field


PAGE = {"pageSize": "page_size", "pageToken": "page_token"}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/accounts:signUp",
        "identity",
        "SignUp",
        identity_pb2.SignUpRequest,
        identity_pb2.SignUpResponse,
        "Create an account; returns an access token",
        body=True,
    ),
    Route(
        "POST",
        "/v1/accounts:signIn",
        "identity",
        "SignIn",
        identity_pb2.SignInRequest,
        identity_pb2.SignInResponse,
        "Exchange email and password for an access token",
        body=True,
    ),
    Route(
        "GET",
        "/v1/titles",
        "catalog",
        "ListTitles",
        catalog_pb2.ListTitlesRequest,
        catalog_pb2.ListTitlesResponse,
        "List catalog titles",
        query={"parent": "parent", "kind": "kind", **PAGE},
    ),
    Route(
        "GET",
        "/v1/titles:batchGet",
        "catalog",
        "BatchGetTitles",
        catalog_pb2.BatchGetTitlesRequest,
        catalog_pb2.BatchGetTitlesResponse,
        "Get up to 100 titles in one call (`names=titles/a&names=titles/b`)",
        query={"names": "names"},
    ),
    Route(
        "GET",
        "/v1/titles/{title}",
        "catalog",
        "GetTitle",
        catalog_pb2.GetTitleRequest,
        catalog_pb2.GetTitleResponse,
        "Get one title",
        path_fields={"title": ("name", "titles/{}")},
    ),
    Route(
        "GET",
        "/v1/search",
        "search",
        "SearchTitles",
        search_pb2.SearchTitlesRequest,
        search_pb2.SearchTitlesResponse,
        "Search titles (ranked, prefix match)",
        query={"q": "query", **PAGE},
    ),
    Route(
        "GET",
        "/v1/channels",
        "channels",
        "ListChannels",
        channels_pb2.ListChannelsRequest,
        channels_pb2.ListChannelsResponse,
        "List live channels",
        query=dict(PAGE),
    ),
    Route(
        "GET",
        "/v1/channels/{channel}",
        "channels",
        "GetChannel",
        channels_pb2.GetChannelRequest,
        channels_pb2.GetChannelResponse,
        "Get a live channel and its live status",
        path_fields={"channel": ("name", "channels/{}")},
    ),
    Route(
        "GET",
        "/v1/profiles",
        "profile",
        "ListProfiles",
        profile_pb2.ListProfilesRequest,
        profile_pb2.ListProfilesResponse,
        "List the caller's profiles",
        auth=True,
        account_field="parent",
        query=dict(PAGE),
    ),
    Route(
        "POST",
        "/v1/profiles",
        "profile",
        "CreateProfile",
        profile_pb2.CreateProfileRequest,
        profile_pb2.CreateProfileResponse,
        "Create a profile in the caller's account",
        auth=True,
        body=True,
        account_field="parent",
    ),
    Route(
        "GET",
        "/v1/profiles/{profile}",
        "profile",
        "GetProfile",
        profile_pb2.GetProfileRequest,
        profile_pb2.GetProfileResponse,
        "Get one of the caller's profiles",
        auth=True,
        path_fields={"profile": ("name", MY_PROFILE)},
    ),
    Route(
        "PATCH",
        "/v1/profiles/{profile}",
        "profile",
        "UpdateProfile",
        profile_pb2.UpdateProfileRequest,
        profile_pb2.UpdateProfileResponse,
        "Change fields of a profile named in updateMask",
        auth=True,
        body=True,
        path_fields={"profile": ("profile.name", MY_PROFILE)},
    ),
    Route(
        "POST",
        "/v1/profiles/{profile}/views",
        "profile",
        "RecordView",
        profile_pb2.RecordViewRequest,
        profile_pb2.RecordViewResponse,
        "Record that the profile watched a title",
        auth=True,
        body=True,
        path_fields={"profile": ("parent", MY_PROFILE)},
    ),
    Route(
        "GET",
        "/v1/profiles/{profile}/views",
        "profile",
        "ListViews",
        profile_pb2.ListViewsRequest,
        profile_pb2.ListViewsResponse,
        "The profile's viewing history, newest first",
        auth=True,
        query=dict(PAGE),
        path_fields={"profile": ("parent", MY_PROFILE)},
    ),
    Route(
        "GET",
        "/v1/profiles/{profile}/recommendations",
        "recommend",
        "ListRecommendations",
        recommend_pb2.ListRecommendationsRequest,
        recommend_pb2.ListRecommendationsResponse,
        "Recommendations for the profile",
        auth=True,
        query={"pageSize": "page_size"},
        path_fields={"profile": ("parent", MY_PROFILE)},
    ),
    Route(
        "POST",
        "/v1/playback:start",
        "playback",
        "StartPlayback",
        playback_pb2.StartPlaybackRequest,
        playback_pb2.StartPlaybackResponse,
        "Press play: signed manifest URLs on ranked edges",
        auth=True,
        body=True,
    ),
    Route(
        "POST",
        "/v1/playback/{session}:heartbeat",
        "playback",
        "HeartbeatPlayback",
        playback_pb2.HeartbeatPlaybackRequest,
        playback_pb2.HeartbeatPlaybackResponse,
        "Keep a playback session alive",
        auth=True,
        body=True,
        path_fields={"session": ("name", "playbackSessions/{}")},
    ),
    Route(
        "POST",
        "/v1/playback/{session}:stop",
        "playback",
        "StopPlayback",
        playback_pb2.StopPlaybackRequest,
        playback_pb2.StopPlaybackResponse,
        "End a playback session",
        auth=True,
        body=True,
        path_fields={"session": ("name", "playbackSessions/{}")},
    ),
    Route(
        "POST",
        "/v1/channels",
        "channels",
        "CreateChannel",
        channels_pb2.CreateChannelRequest,
        channels_pb2.CreateChannelResponse,
        "Create a live channel (operator); its stream key is shown once",
        operator=True,
        body=True,
    ),
    Route(
        "POST",
        "/v1/channels/{channel}:rotateStreamKey",
        "channels",
        "RotateStreamKey",
        channels_pb2.RotateStreamKeyRequest,
        channels_pb2.RotateStreamKeyResponse,
        "Replace a channel's stream key (operator); the new key is shown once",
        operator=True,
        body=True,
        path_fields={"channel": ("name", "channels/{}")},
    ),
    Route(
        "POST",
        "/v1/channels/{channel}:end",
        "channels",
        "EndChannel",
        channels_pb2.EndChannelRequest,
        channels_pb2.EndChannelResponse,
        "End a live channel (operator)",
        operator=True,
        body=True,
        path_fields={"channel": ("name", "channels/{}")},
    ),
    Route(
        "GET",
        "/v1/edges",
        "playback",
        "ListEdges",
        playback_pb2.ListEdgesRequest,
        playback_pb2.ListEdgesResponse,
        "Every edge with its health, load and players' QoE windows (operator)",
        operator=True,
    ),
    Route(
        "POST",
        "/v1/vodPublications",
        "catalog",
        "PublishVodTitle",
        catalog_pb2.PublishVodTitleRequest,
        catalog_pb2.PublishVodTitleResponse,
        "Publish an uploaded source (POST /v1/vodUploads) as a movie: returns the "
        "publication to follow (operator)",
        operator=True,
        body=True,
    ),
    Route(
        "GET",
        "/v1/vodPublications/{publication}",
        "catalog",
        "GetVodPublication",
        catalog_pb2.GetVodPublicationRequest,
        catalog_pb2.GetVodPublicationResponse,
        "A publication's stage and fraction done, then its title or why it failed (operator)",
        operator=True,
        path_fields=PUBLICATION,
    ),
    Route(
        "GET",
        "/v1/experiments",
        "experiments",
        "ListExperiments",
        experiments_pb2.ListExperimentsRequest,
        experiments_pb2.ListExperimentsResponse,
        "List experiments (operator)",
        operator=True,
        query=dict(PAGE),
    ),
    Route(
        "POST",
        "/v1/experiments",
        "experiments",
        "CreateExperiment",
        experiments_pb2.CreateExperimentRequest,
        experiments_pb2.CreateExperimentResponse,
        "Define an experiment: its decision, cells and guardrails (operator)",
        operator=True,
        body=True,
    ),
    Route(
        "GET",
        "/v1/experiments/{experiment}",
        "experiments",
        "GetExperiment",
        experiments_pb2.GetExperimentRequest,
        experiments_pb2.GetExperimentResponse,
        "Get one experiment (operator)",
        operator=True,
        path_fields=EXPERIMENT,
    ),
    Route(
        "POST",
        "/v1/experiments/{experiment}:start",
        "experiments",
        "StartExperiment",
        experiments_pb2.StartExperimentRequest,
        experiments_pb2.StartExperimentResponse,
        "Start an experiment: press play assigns viewers to its cells (operator)",
        operator=True,
        body=True,
        path_fields=EXPERIMENT,
    ),
    Route(
        "POST",
        "/v1/experiments/{experiment}:stop",
        "experiments",
        "StopExperiment",
        experiments_pb2.StopExperimentRequest,
        experiments_pb2.StopExperimentResponse,
        "Stop an experiment, saying why (operator)",
        operator=True,
        body=True,
        path_fields=EXPERIMENT,
    ),
    Route(
        "GET",
        "/v1/experiments/{experiment}/readout",
        "experiments",
        "GetReadout",
        experiments_pb2.GetReadoutRequest,
        experiments_pb2.GetReadoutResponse,
        "Per-cell figures with 95 % intervals and the sample-ratio check (operator)",
        operator=True,
        path_fields=EXPERIMENT,
    ),
)
