"""The one schema of livemesh's channel keys in Redis (DESIGN.md §4).

Every key of a channel carries the hash tag ``{channel}``, so a channel lives in
one Redis Cluster slot and a MULTI over its keys stays atomic there:

==================================  ==============================================
``lm:{ch}:config``                  the channel's configuration record (JSON)
``lm:{ch}:config:log``              stream, one entry per write of that record
``lm:{ch}:ended``                   set once the channel is ended (an entry on the log too)
``lm:{ch}:streamkey``               SHA-256 of the channel's current stream key
``lm:{ch}:ingest``                  hash: ingest's view of the broadcaster's feeds
                                    (``primary``, ``backup``, ``refused_backup``)
``lm:{ch}:epoch``                   the current epoch (JSON)
``lm:{ch}:epochs``                  hash epoch id -> epoch JSON (TTL window)
``lm:{ch}:pos:{epoch}``             hash rendition -> "segment:chunk:complete"
``lm:{ch}:init:{epoch}:{rep}``      init segment bytes
``lm:{ch}:seg:{epoch}:{rep}:{n}``   list of the chunk bytes of segment ``n``
``lm:{ch}:events``                  stream, one entry per published chunk
``lm:{ch}:owner:{epoch}``           hash "rep:n" -> "pipeline:generation" serving segment n
``lm:{ch}:alive:{p}``               pipeline ``p`` is running (short TTL, renewed per chunk)
``lm:{ch}:p:{p}:…``                 redundant pipeline ``p``'s own output (below)
==================================  ==============================================

A redundant pipeline ``p`` (``live/pipelines.py``) writes its own ``pos``, ``init`` and
``seg`` keys under ``lm:{ch}:p:{p}`` (:meth:`ChannelKeys.pipeline`), named as above, and
``lm:{ch}:p:{p}:defects:{epoch}``, a hash ``rep:n`` and ``rep:n:k`` -> the defect its
packager found in that segment and chunk; the served copy is in the keys above.

Keys of no one channel (no hash tag: each is one key, so one slot):

==================================  ==============================================
``lm:streamkeys``                   hash SHA-256(stream key) -> channel id
``lm:channels:mirrored``            set while Redis holds the channels service's copies
                                    (configuration records, key digests) of its database
``lm:chreq:{request_id}``           result of a mutating channels call (24 h)
==================================  ==============================================

Every key of an account's profiles carries the hash tag ``{acct}`` (profile service), so
a profile's MULTI (its history, its positions, the account's profile record, the
idempotency key of the call) stays in one slot:

==================================  ==============================================
``lm:pf:{acct}:profiles``           hash profile id -> Profile (JSON)
``lm:pf:{acct}:views:{profile}``    sorted set title -> view time (ms)
``lm:pf:{acct}:pos:{profile}``      hash title -> position (s)
``lm:pf:{acct}:req:{request_id}``   result of a mutating profile call (24 h)
==================================  ==============================================

The recommendation model and the playback sessions are written one key per command (or
in a non-transactional pipeline, which a cluster client splits per node), so their keys
need no hash tag (``<...>`` is a placeholder, not a tag):

==================================  ==============================================
``lm:rec:pop``                      sorted set title -> first views (popularity)
``lm:rec:co:<title>``               sorted set co-watched title -> times together
``lm:pb:s:<session_id>``            a PlaybackSession (protobuf binary), short TTL
``lm:pb:req:<request_id>``          session id a StartPlayback created (24 h)
==================================  ==============================================

Player QoE (CMCD through the edges; ``livemesh qoe`` aggregates it). One hash tag, so the
processor's commit (window counters plus the XACK of their entries) stays on one slot:

==================================  ==============================================
``lm:{qoe}:events``                 stream of QoE events (:mod:`kernel.qoe_event`)
``lm:{qoe}:sec:{start_s}``          hash ``dim=value|counter`` -> sum over a second
``lm:{qoe}:sids:{start_s}:{edge}``  HyperLogLog of the sessions the edge served that second
``lm:{qoe}:health:{edge}``          hash: the edge's QoE score and its parts,
                                    for the registry and steering to read
``lm:{qoe}:window_s``               the processors' window length, s (for readers of
                                    the seconds: the console's QoE history)
==================================  ==============================================

Experiments (``livemesh experiments``); an experiment's keys share the tag ``{exp:<id>}``:

==================================  ==============================================
``lm:{exp:<id>}:exposures``         stream of exposures (account, cell, session)
``lm:{exp:<id>}:units:{cell}``      set of the accounts exposed to the cell
``lm:{exp:<id>}:counts``            hash ``{cell}|{counter}`` -> exposures, QoE sums
``lm:expsid:<session>``             ``{id}|{cell}`` the session was exposed to (1 day)
==================================  ==============================================
"""

from __future__ import annotations

STREAM_KEYS = "lm:streamkeys"
CHANNELS_MIRRORED = "lm:channels:mirrored"
POPULAR_TITLES = "lm:rec:pop"
QOE_EVENTS = "lm:{qoe}:events"
QOE_GROUP = "qoe"  # the processors' consumer group on QOE_EVENTS
QOE_WINDOW_S = "lm:{qoe}:window_s"


def qoe_second(start_s: int) -> str:
    """The QoE counters of the second that starts at ``start_s`` (s since the epoch); a
    window's figures are the sums of its seconds."""
    return f"lm:{{qoe}}:sec:{start_s}"


def qoe_sessions(start_s: int, edge: str) -> str:
    """HyperLogLog of the sessions (CMCD sid) ``edge`` served in the second that starts at
    ``start_s``; a window's distinct sessions are the PFCOUNT of its seconds' keys."""
    return f"lm:{{qoe}}:sids:{start_s}:{edge}"


def qoe_health(edge: str) -> str:
    """An edge's QoE health: ``score`` (0..1) and the figures it is made of."""
    return f"lm:{{qoe}}:health:{edge}"


def channel_request(request_id: str) -> str:
    """Where the channels service remembers a mutating call's result, for its retries."""
    return f"lm:chreq:{request_id}"


class ChannelKeys:
    """Names of one channel's keys; the only place they are spelled out."""

    def __init__(self, channel: str) -> None:
        self.prefix = f"lm:{{{channel}}}"

    @property
    def config(self) -> str:
        return f"{self.prefix}:config"

    @property
    def config_log(self) -> str:
        return f"{self.prefix}:config:log"

    @property
    def ended(self) -> str:
        return f"{self.prefix}:ended"

    @property
    def stream_key(self) -> str:
        return f"{self.prefix}:streamkey"

    @property
    def ingest(self) -> str:
        """Ingest's view of the broadcaster's feeds (a hash: primary, backup, refused_backup)."""
        return f"{self.prefix}:ingest"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def epochs(self) -> str:
        return f"{self.prefix}:epochs"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def position(self, epoch: str) -> str:
        return f"{self.prefix}:pos:{epoch}"

    def init(self, epoch: str, rep: str) -> str:
        return f"{self.prefix}:init:{epoch}:{rep}"

    def segment(self, epoch: str, rep: str, number: int) -> str:
        return f"{self.prefix}:seg:{epoch}:{rep}:{number}"

    def owners(self, epoch: str) -> str:
        return f"{self.prefix}:owner:{epoch}"

    def alive(self, pipeline: str) -> str:
        return f"{self.prefix}:alive:{pipeline}"

    def pipeline(self, pipeline: str) -> ChannelKeys:
        """The keys a redundant pipeline publishes its own output under (same hash tag)."""
        keys = ChannelKeys.__new__(ChannelKeys)
        keys.prefix = f"{self.prefix}:p:{pipeline}"
        return keys

    def defects(self, epoch: str) -> str:
        """Only under a pipeline's keys: what its packager found wrong in its own output."""
        return f"{self.prefix}:defects:{epoch}"


class ProfileKeys:
    """Names of one account's profile keys, all in the account's slot.

    The kind of key comes before the profile or request id, so no id can make one
    kind's name another's (a profile named ``req``, a request id ``views``)."""

    def __init__(self, account: str) -> None:
        self.prefix = f"lm:pf:{{{account}}}"

    @property
    def profiles(self) -> str:
        return f"{self.prefix}:profiles"

    def views(self, profile: str) -> str:
        return f"{self.prefix}:views:{profile}"

    def positions(self, profile: str) -> str:
        return f"{self.prefix}:pos:{profile}"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:req:{request_id}"


def co_watched(title: str) -> str:
    """The recommendation model's row of titles watched together with ``title``."""
    return f"lm:rec:co:{title}"


def playback_session(session_id: str) -> str:
    return f"lm:pb:s:{session_id}"


def playback_request(request_id: str) -> str:
    """Where playback remembers which session a StartPlayback created, for its retries."""
    return f"lm:pb:req:{request_id}"


# Experiments (services/experiments). An experiment's keys share one hash tag, so an
# exposure's stream entry and its unit and count updates are one MULTI on one slot.
EXPERIMENTS_QOE_GROUP = "experiments"  # its consumer group on QOE_EVENTS


def experiment_exposures(experiment_id: str) -> str:
    """Stream of an experiment's exposures (account, cell, session), append-only."""
    return f"lm:{{exp:{experiment_id}}}:exposures"


def experiment_units(experiment_id: str, cell: str) -> str:
    """Set of the accounts exposed to ``cell``: the units the readout counts."""
    return f"lm:{{exp:{experiment_id}}}:units:{cell}"


def experiment_counts(experiment_id: str) -> str:
    """Hash ``{cell}|{counter}`` -> sum: exposures and the cell's QoE sums."""
    return f"lm:{{exp:{experiment_id}}}:counts"


def experiment_session(session: str) -> str:
    """``{experiment_id}|{cell}`` a session was exposed to (its QoE events count there)."""
    return f"lm:expsid:{session}"
