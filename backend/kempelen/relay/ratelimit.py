"""Per-address token buckets: each address may post `rate` answers a second, bursts up to `burst`.

Kept in process memory: with N relay processes an address gets at most N times the rate,
which bounds abuse without a shared store on the hot path.
"""

from __future__ import annotations

import time

from kempelen.relay.errors import RateLimited

_MAX_TRACKED = 100_000  # forget idle addresses beyond this many, so memory stays bounded


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, updated)

    def take(self, address: str, now: float | None = None) -> None:
        """Spend one token of `address`, or raise RateLimited saying when to retry."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            retry_after = (1.0 - tokens) / self.rate
            self._buckets[address] = (tokens, now)
            raise RateLimited(f"{address} is over {self.rate:g} requests/s; retry in {retry_after:.2f}s",
                              retry_after=round(retry_after, 3))
        if len(self._buckets) >= _MAX_TRACKED and address not in self._buckets:
            self._forget_full(now)
        self._buckets[address] = (tokens - 1.0, now)

    def _forget_full(self, now: float) -> None:
        # An address whose bucket has refilled is indistinguishable from a new one.
        refill = self.burst / self.rate
        self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] < refill}
