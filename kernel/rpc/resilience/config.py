"""The client half's settings, one frozen value shared by every dependency of a process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernel.rpc.resilience.backoff import Backoff
from kernel.rpc.resilience.balancer import Outliers


@dataclass(frozen=True)
class ResilienceConfig:
    margin_s: float = 0.005  # kept back from the inbound deadline for the way back
    min_attempt_s: float = 0.002  # no attempt is started with less time than this
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    budget_ratio: float = 0.1
    budget_window_s: float = 10.0
    budget_min_retries: int = 3
    bulkhead_size: int = 64
    bulkhead_wait_s: float = 0.05
    breaker: dict[str, Any] = field(default_factory=dict)  # CircuitBreaker keyword arguments
    hedging: bool = True
    outliers: Outliers = field(default_factory=Outliers)
    health_interval_s: float = 1.0
    stream_timeout_s: float = 300.0
    registry_target: str = "127.0.0.1:50051"
    resolve_retry_s: float = 1.0  # a failed registry watch is tried again after this
