"""Prometheus metrics of one relay process, in the text exposition format (no client library).

Each worker process counts its own requests; Prometheus sums them across scrapes of
each process (or the `process` label tells them apart behind one port).
"""

from __future__ import annotations

import bisect
import os
import time
from collections import defaultdict

from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.answers: dict[str, int] = defaultdict(int)  # accepted, duplicate, refused
        self.gauges: dict[str, callable] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        buckets = self.latency.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[route] += seconds

    def render(self) -> str:
        pid = os.getpid()
        out = ["# HELP kempelen_relay_requests_total HTTP requests by route and status.",
               "# TYPE kempelen_relay_requests_total counter"]
        for (method, route, status), count in sorted(self.requests.items()):
            out.append(f'kempelen_relay_requests_total{{process="{pid}",method="{method}",'
                       f'route="{route}",status="{status}"}} {count}')
        out += ["# HELP kempelen_relay_request_seconds Request latency.",
                "# TYPE kempelen_relay_request_seconds histogram"]
        for route, buckets in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f'kempelen_relay_request_seconds_bucket{{process="{pid}",route="{route}",'
                           f'le="{le}"}} {cumulative}')
            out.append(f'kempelen_relay_request_seconds_sum{{process="{pid}",route="{route}"}} '
                       f'{self.latency_sum[route]:.6f}')
            out.append(f'kempelen_relay_request_seconds_count{{process="{pid}",route="{route}"}} {cumulative}')
        out += ["# HELP kempelen_relay_answers_total Answers posted, by outcome.",
                "# TYPE kempelen_relay_answers_total counter"]
        for outcome, count in sorted(self.answers.items()):
            out.append(f'kempelen_relay_answers_total{{process="{pid}",outcome="{outcome}"}} {count}')
        for name, read in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f'{name}{{process="{pid}"}} {read()}']
        out.append(f'kempelen_relay_start_time_seconds{{process="{pid}"}} {self.started:.0f}')
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Times every request by its route template (not its raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
