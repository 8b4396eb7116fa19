"""Where logs come from: a small ABC, and raw JSON-RPC polling over one keep-alive connection.

Raw `eth_getLogs` + kempelen.protocol.events decodes ~35x faster than web3's contract events.
Ranges adapt: they grow while answers stay small, and halve when the node refuses a range
(providers cap results or response size, each with its own error wording).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import httpx

from kempelen.indexer.errors import RangeTooLarge, RpcError

# Phrases nodes and providers use when a log query is too big (geth, erigon, Alchemy, Infura,
# QuickNode, anvil): retrying the same range cannot succeed, a smaller one can.
_TOO_LARGE_HINTS = (
    "query returned more than", "too many", "limit exceeded", "range is too large", "exceed",
    "block range", "response size", "timeout", "timed out", "max results",
)


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: str
    parent_hash: str


class LogSource(ABC):
    """What the runner needs from a chain; a subscription source would implement the same."""

    @abstractmethod
    def chain_id(self) -> int: ...

    @abstractmethod
    def head(self) -> int:
        """The newest block number."""

    @abstractmethod
    def block(self, number: int) -> BlockRef | None:
        """The canonical block at `number` now, None if the chain is shorter."""

    @abstractmethod
    def logs(self, from_block: int, to_block: int) -> list[dict]:
        """Raw logs of the watched contracts in [from_block, to_block], in chain order."""

    def wait_for_head(self, current: int, timeout: float, stop: threading.Event) -> int:
        """Wait until the head passes `current`, `timeout` runs out or `stop` is set."""
        deadline = time.monotonic() + timeout
        while True:
            head = self.head()
            remaining = deadline - time.monotonic()
            if head > current or remaining <= 0 or stop.wait(min(0.2, remaining)):
                return head


class RangeSizer:
    """Picks the next eth_getLogs block range from what the previous ones returned."""

    def __init__(self, initial: int = 2_000, minimum: int = 1, maximum: int = 100_000,
                 target_logs: int = 10_000):
        self.size = max(minimum, min(initial, maximum))
        self.minimum, self.maximum, self.target_logs = minimum, maximum, target_logs

    def fetched(self, blocks: int, logs: int) -> None:
        """Aim the next range at `target_logs`, growing at most 2x: density changes over time."""
        if logs:
            ideal = blocks * self.target_logs // logs
            self.size = max(self.minimum, min(self.maximum, 2 * self.size, ideal))
        elif blocks >= self.size:
            self.size = min(self.maximum, 2 * self.size)

    def refused(self, blocks: int) -> None:
        if blocks <= self.minimum:
            raise RpcError(f"the node refuses eth_getLogs even for {blocks} block(s)")
        self.size = max(self.minimum, min(self.size, blocks) // 2)


class JsonRpcSource(LogSource):
    """eth_getLogs polling over httpx (one keep-alive connection), filtered by contract."""

    def __init__(self, rpc_url: str, addresses: list[str], *, timeout: float = 30.0):
        self.rpc_url = rpc_url
        self.addresses = [a.lower() for a in addresses]
        self._client = httpx.Client(timeout=timeout, headers={"content-type": "application/json"})
        self._next_id = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JsonRpcSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *params):
        self._next_id += 1
        try:
            reply = self._client.post(self.rpc_url, json={
                "jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)})
        except httpx.TimeoutException:
            raise RangeTooLarge(f"{method} timed out at {self.rpc_url}") from None
        except httpx.HTTPError as exc:
            raise RpcError(f"no JSON-RPC answer at {self.rpc_url}: {type(exc).__name__}: {exc}") from None
        if reply.status_code in (413, 504):
            raise RangeTooLarge(f"{method}: HTTP {reply.status_code} from {self.rpc_url}")
        try:
            body = reply.json()
        except ValueError:
            raise RpcError(f"{self.rpc_url} answered {method} with HTTP {reply.status_code}, "
                           "not JSON-RPC") from None
        if "error" in body:
            message = str(body["error"].get("message", body["error"]))
            if method == "eth_getLogs" and any(h in message.lower() for h in _TOO_LARGE_HINTS):
                raise RangeTooLarge(f"{method}: {message}")
            raise RpcError(f"{method} failed at {self.rpc_url}: {message}")
        if "result" not in body:
            raise RpcError(f"{self.rpc_url} answered {method} without a result")
        return body["result"]

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int) -> BlockRef | None:
        found = self.call("eth_getBlockByNumber", hex(number), False)
        if found is None:
            return None
        return BlockRef(int(found["number"], 16), found["hash"], found["parentHash"])

    def logs(self, from_block: int, to_block: int) -> list[dict]:
        found = self.call("eth_getLogs", {
            "fromBlock": hex(from_block), "toBlock": hex(to_block), "address": self.addresses})
        if any(log.get("removed") for log in found):
            raise RpcError("eth_getLogs returned removed logs: the chain is reorganising, retry")
        return found
