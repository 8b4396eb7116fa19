"""Replication through any IPFS Pinning Service API provider (the ipfs/pinning-services-api-spec).

The service fetches the content itself over IPFS, from the `origins` we give it
(our node's multiaddrs) or the network; we only ask and poll. Bearer token auth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from kempelen.ipfs.errors import ReplicationError
from kempelen.protocol.cid import CID

PIN_STATES = ("queued", "pinning", "pinned", "failed")


@dataclass(frozen=True)
class PinStatus:
    requestid: str
    status: str
    cid: CID
    name: str | None = None
    delegates: tuple[str, ...] = ()
    info: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict) -> PinStatus:
        try:
            status = body["status"]
            if status not in PIN_STATES:
                raise ValueError(f"unknown pin status {status!r}")
            return cls(
                requestid=body["requestid"],
                status=status,
                cid=CID.parse(body["pin"]["cid"]),
                name=body["pin"].get("name"),
                delegates=tuple(body.get("delegates") or ()),
                info=dict(body.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplicationError(f"pinning service sent an unreadable PinStatus: {exc}") from None


class PinningService:
    """Client for one pinning service endpoint, e.g. `https://api.example/psa`."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}

    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._client.request(
                method, f"{self._endpoint}{path}", headers=self._headers, **kwargs
            )
        except httpx.HTTPError as exc:
            raise ReplicationError(f"pinning service {method} {path} failed: {exc}") from None
        if response.status_code not in (200, 202):
            raise ReplicationError(f"pinning service {method} {path}: {_failure(response)}")
        return response.json()

    def add_pin(
        self,
        cid: CID,
        *,
        name: str | None = None,
        origins: list[str] | None = None,
        meta: dict[str, str] | None = None,
    ) -> PinStatus:
        """`POST /pins`: ask the service to pin `cid`; returns the request's status."""
        body: dict = {"cid": str(cid)}
        if name is not None:
            body["name"] = name
        if origins:
            body["origins"] = origins
        if meta:
            body["meta"] = meta
        status = PinStatus.from_json(self._request("POST", "/pins", json=body))
        if status.cid.multihash != cid.multihash:
            raise ReplicationError(f"pinning service accepted {status.cid}, not {cid}")
        return status

    def get_pin(self, requestid: str) -> PinStatus:
        """`GET /pins/{requestid}`."""
        return PinStatus.from_json(self._request("GET", f"/pins/{requestid}"))

    def wait_pinned(
        self, requestid: str, *, timeout: float = 600.0, poll_interval: float = 2.0
    ) -> PinStatus:
        """Poll until `pinned`; raise on `failed` or when `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_pin(requestid)
            if status.status == "pinned":
                return status
            if status.status == "failed":
                raise ReplicationError(f"pinning service failed to pin {status.cid}: {status.info}")
            if time.monotonic() >= deadline:
                raise ReplicationError(f"{status.cid} still {status.status} after {timeout:.0f}s")
            time.sleep(poll_interval)

    def close(self) -> None:
        self._client.close()


def _failure(response: httpx.Response) -> str:
    # The spec's Failure body: {"error": {"reason": "...", "details": "..."}}.
    try:
        error = response.json()["error"]
        details = f": {error['details']}" if error.get("details") else ""
        return f"{response.status_code} {error['reason']}{details}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"
