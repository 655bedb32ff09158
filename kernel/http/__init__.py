"""The HTTP wire contract shared by every livemesh server (DESIGN.md §5).

One of each: the cross-origin policy (:mod:`.cors`), the ``/time`` answer
(:mod:`.time`), the hold signal between tiers (:mod:`.hold`), the short error
answer (:mod:`.errors`), and the lean data-plane server (:mod:`.server`).  The
origin, the gateway and WHIP ingest stay aiohttp applications; they take the
policy and the shapes from here.
"""
