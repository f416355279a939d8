"""Token buckets per principal: a steady rate with bursts, refusing with the wait until the next token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from grid_scheduler.service.auth.config import RateConfig


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Per replica: with N replicas behind a balancer a principal gets up to N times the rate."""

    def __init__(self, rate_for: Callable[[str], RateConfig], clock: Callable[[], float] = time.monotonic) -> None:
        self._rate_for = rate_for
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, principal: str) -> float:
        """0.0 if the call may go ahead, else the seconds until it could."""
        rate = self._rate_for(principal)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(principal)
            if bucket is None:
                bucket = self._buckets[principal] = _Bucket(float(rate.burst), now)
            bucket.tokens = min(float(rate.burst), bucket.tokens + (now - bucket.at) * rate.requests_per_s)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate.requests_per_s
