"""The cache node: edge and shield tiers in front of the origin (DESIGN.md §5).

Read in a request's order: :mod:`edge.main` (the ``livemesh edge`` command) builds a
:class:`edge.config.NodeConfig` and runs :class:`edge.node.EdgeNode`, which the data
plane's server (:mod:`kernel.http.server`) hands each request: :mod:`edge.access`
(Host, path, token) → the cache (:mod:`edge.store`, :mod:`edge.policy`) or a
:class:`edge.fill.Fill` from the parents (:mod:`edge.upstream`,
:mod:`edge.rendezvous`) → the answer (:mod:`edge.responses`, :mod:`edge.ranges`).
Beside it: the node's own subscribers (:mod:`edge.subscribers`), its metrics
(:mod:`edge.metrics`), the pre-positioning API (:mod:`edge.admin`) and its registry
membership (:mod:`edge.membership`).

A CMAF *chunk* is a piece of media; a *piece* is what one read of an HTTP body gave.
"""
