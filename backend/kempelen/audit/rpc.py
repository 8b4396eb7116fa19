"""Raw JSON-RPC over httpx, batched: the auditor's only window on the chain.

web3.py costs ~0.5 ms per decoded log; the auditor reads hundreds of thousands,
so it speaks JSON-RPC itself and decodes with eth-abi (kempelen.protocol.events).
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from kempelen.audit.model import AuditError

BATCH_LIMIT = 200  # requests per JSON-RPC batch: large enough to amortize HTTP, small enough for any node


class RpcError(AuditError):
    """The node answered a request with an error."""


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def call_data(signature: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (selector(signature) + abi_encode(types, args)).hex()


def decode_result(types: list[str], result: str) -> tuple:
    return abi_decode(types, bytes.fromhex(result[2:]))


class Rpc:
    """One JSON-RPC endpoint; every failure becomes a one-line AuditError."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise AuditError(f"--rpc must be an http(s) URL, got {url!r}")
        self.url = url
        self._client = httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def _post(self, body: Any) -> Any:
        self.requests += 1
        try:
            response = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise AuditError(f"cannot reach JSON-RPC at {self.url}: {type(exc).__name__} {exc}") from None
        if response.status_code != 200:
            raise AuditError(f"JSON-RPC at {self.url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise AuditError(f"JSON-RPC at {self.url} did not answer JSON") from None

    def call(self, method: str, *params: Any) -> Any:
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        if not isinstance(reply, dict):
            raise AuditError(f"JSON-RPC at {self.url} sent a malformed reply to {method}")
        if "error" in reply:
            raise RpcError(f"{method} failed: {_error_text(reply['error'])}")
        return reply.get("result")

    def batch(self, calls: list[tuple[str, list]], *, allow_errors: bool = False) -> list[Any]:
        """Results in order; with allow_errors, a failed call yields an RpcError instead of raising."""
        results: list[Any] = []
        for start in range(0, len(calls), BATCH_LIMIT):
            chunk = calls[start : start + BATCH_LIMIT]
            first = next(self._ids)
            body = [
                {"jsonrpc": "2.0", "id": first + i, "method": method, "params": params}
                for i, (method, params) in enumerate(chunk)
            ]
            self._ids = itertools.count(first + len(chunk))
            reply = self._post(body)
            if not isinstance(reply, list):
                raise AuditError(f"JSON-RPC at {self.url} does not support batch requests")
            by_id = {item.get("id"): item for item in reply if isinstance(item, dict)}
            for i, (method, _params) in enumerate(chunk):
                item = by_id.get(first + i)
                if item is None or "error" in item:
                    error = RpcError(f"{method} failed: {_error_text((item or {}).get('error'))}")
                    if not allow_errors:
                        raise error
                    results.append(error)
                else:
                    results.append(item.get("result"))
        return results

    def eth_call(self, to: str, data: str, block: int) -> str:
        return self.call("eth_call", {"to": to, "data": data}, hex(block))


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or "no reply")
