"""One log line when a dependency goes away and one when it is back, not one per request.

During an outage of the state store every request fails the same way; a stack trace
per request buries the one fact an operator needs (when it began, when it ended, how
many requests were refused) and costs CPU while the process should be recovering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# what a refused client is told to wait before trying again (HTTP Retry-After, seconds):
# the embedded server restarts in well under a second, a cluster fails over in a few
RETRY_AFTER_S = 2


class OutageLog:
    """Logs "began" at the first failure, "ended" at the first success after it, and at
    most one "still down" line per ``remind_s`` in between."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        remind_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.logger, self.remind_s, self.clock = what, logger, remind_s, clock
        self.down_since: float | None = None
        self.refused = 0
        self._reminded = 0.0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, reason: str) -> None:
        """A request failed because the dependency is unreachable (``reason``: how)."""
        now = self.clock()
        self.refused += 1
        if self.down_since is None:
            self.down_since = self._reminded = now
            self.logger.warning("%s unavailable, outage began: %s", self.what, reason)
        elif now - self._reminded >= self.remind_s:
            self._reminded = now
            self.logger.warning(
                "%s still unavailable after %.0f s (%d requests refused)",
                self.what,
                now - self.down_since,
                self.refused,
            )

    def succeeded(self) -> None:
        """A request went through: if an outage was on, it has ended (cheap when none is)."""
        if self.down_since is None:
            return
        self.logger.warning(
            "%s back, outage ended after %.1f s (%d requests refused)",
            self.what,
            self.clock() - self.down_since,
            self.refused,
        )
        self.down_since, self.refused = None, 0
