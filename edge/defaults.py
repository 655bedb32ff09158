"""The edge's defaults are its settings' (:class:`kernel.config.EdgeSettings`): a node
built in code (tests, benchmarks) starts from the same values as ``livemesh edge`` with
no flags, and each is written once, there."""

from __future__ import annotations

from kernel.config import EdgeSettings

# EdgeSettings() reads no layer (no file, environment or flag): the declared defaults only
DEFAULTS = EdgeSettings()
