"""The demo catalog every fresh store starts with; it includes the live channel ``demo``."""

from __future__ import annotations

from typing import Any

from livemesh.catalog.v1 import catalog_pb2 as pb

K = pb.TitleKind


def _title(
    title_id: str,
    kind: pb.TitleKind,
    display: str,
    synopsis: str,
    genres: list[str],
    year: int,
    **extra: Any,
) -> pb.Title:
    return pb.Title(
        name=f"titles/{title_id}",
        kind=kind,
        display_title=display,
        synopsis=synopsis,
        genres=genres,
        release_year=year,
        maturity_rating=str(extra.pop("rating", "PG-13")),
        required_entitlement=str(extra.pop("entitlement", "plan/standard")),
        **extra,
    )


def demo_titles() -> list[pb.Title]:
    titles = [
        _title(
            "demo",
            K.TITLE_KIND_LIVE_EVENT,
            "Livemesh Demo Live",
            "The demo live channel: a test card with a running clock, streamed in LL-DASH.",
            ["live", "technology"],
            2026,
            live_channel="channels/demo",
            entitlement="live",
            rating="G",
        ),
        _title(
            "midnight-harbor",
            K.TITLE_KIND_MOVIE,
            "Midnight Harbor",
            "A harbour pilot uncovers a smuggling ring during the longest night of winter.",
            ["thriller", "drama"],
            2019,
            duration_seconds=6840,
        ),
        _title(
            "harbor-lights",
            K.TITLE_KIND_MOVIE,
            "Harbor Lights",
            "Two rival lighthouse keepers fall in love across a stormy bay.",
            ["romance", "drama"],
            2016,
            duration_seconds=6120,
        ),
        _title(
            "orbital-decay",
            K.TITLE_KIND_MOVIE,
            "Orbital Decay",
            "A repair crew races a failing space station back to Earth.",
            ["science-fiction", "thriller"],
            2022,
            duration_seconds=7380,
        ),
        _title(
            "quiet-orchard",
            K.TITLE_KIND_MOVIE,
            "The Quiet Orchard",
            "Three generations of a family keep an apple orchard alive through drought.",
            ["drama", "family"],
            2014,
            duration_seconds=5940,
            rating="PG",
        ),
        _title(
            "signal-lost",
            K.TITLE_KIND_MOVIE,
            "Signal Lost",
            "A radio astronomer hears a message from a probe lost decades ago.",
            ["science-fiction", "mystery"],
            2021,
            duration_seconds=6600,
        ),
        _title(
            "paper-tigers",
            K.TITLE_KIND_MOVIE,
            "Paper Tigers",
            "An origami club enters a national contest and finds its courage.",
            ["comedy", "family"],
            2018,
            duration_seconds=5400,
            rating="PG",
        ),
        _title(
            "cold-front",
            K.TITLE_KIND_MOVIE,
            "Cold Front",
            "Storm chasers follow the storm of the century across the plains.",
            ["action", "documentary"],
            2020,
            duration_seconds=5700,
        ),
        _title(
            "premiere-night",
            K.TITLE_KIND_MOVIE,
            "Premiere Night",
            "A film festival thriller, shown first to premium members.",
            ["thriller"],
            2026,
            duration_seconds=6300,
            entitlement="plan/premium",
        ),
        _title(
            "deep-current",
            K.TITLE_KIND_SERIES,
            "Deep Current",
            "An ocean research vessel and the secrets of its crew.",
            ["drama", "science-fiction"],
            2023,
        ),
    ]
    for season in (1, 2):
        season_id = f"deep-current-s{season}"
        titles.append(
            _title(
                season_id,
                K.TITLE_KIND_SEASON,
                f"Deep Current: Season {season}",
                f"Season {season} of Deep Current.",
                ["drama"],
                2022 + season,
                parent="titles/deep-current",
                season_number=season,
            )
        )
        for episode in (1, 2, 3):
            titles.append(
                _title(
                    f"{season_id}e{episode}",
                    K.TITLE_KIND_EPISODE,
                    f"Deep Current S{season}E{episode}",
                    f"Episode {episode} of season {season}: the vessel dives deeper.",
                    ["drama"],
                    2022 + season,
                    parent=f"titles/{season_id}",
                    season_number=season,
                    episode_number=episode,
                    duration_seconds=2700,
                )
            )
    return titles
