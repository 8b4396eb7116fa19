"""What the relay knows about batches: the escrow's `batch(id)` view and BatchCreated event, cached.

Batch terms that decide intake (requester, task count) never change, so they are read once;
the mutable part (funds, pending, deadline after an extension) is re-read after `ttl` seconds.
Reads are blocking JSON-RPC calls: async callers go through `aget`, which runs them in a
thread and shares one read between concurrent requests for the same batch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from kempelen.chain import artifacts
from kempelen.chain.contracts import Chain
from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID
from kempelen.protocol.events import EventDecoder
from kempelen.relay.errors import ChainUnavailable

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_UNKNOWN_TTL = 1.0  # an unknown id may be created any moment; do not cache its absence long


@dataclass(frozen=True)
class BatchInfo:
    batch_id: int
    requester: str
    token: str
    task_count: int
    answers_per_task: int
    reward: int
    relay_fee: int
    deadline: int
    review_window: int
    min_reputation: int
    funds: int
    pending: int

    def is_open(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) <= self.deadline

    def as_json(self, now: float | None = None) -> dict:
        """JSON-safe: uint128 amounts as decimal strings (JavaScript numbers lose them)."""
        return {
            "batch_id": self.batch_id, "requester": self.requester, "token": self.token,
            "task_count": self.task_count, "answers_per_task": self.answers_per_task,
            "reward": str(self.reward), "relay_fee": str(self.relay_fee), "deadline": self.deadline,
            "review_window": self.review_window, "min_reputation": self.min_reputation,
            "funds": str(self.funds), "pending": self.pending, "open": self.is_open(now),
        }


class BatchCatalog:
    """Cached reads of batches from one escrow."""

    def __init__(self, chain: Chain, ttl: float = 5.0) -> None:
        self.chain = chain
        self.ttl = ttl
        self._entries: dict[int, tuple[float, BatchInfo | None]] = {}
        self._manifests: dict[int, str] = {}
        self._inflight: dict[int, asyncio.Future] = {}
        self._decoder = EventDecoder(artifacts.load("TaskEscrow").abi)
        self._clock_offset = 0.0  # chain time - wall time, as of the last read

    def now(self) -> float:
        """The chain's clock, as deadlines are judged by it (a dev chain's clock may run ahead)."""
        return time.time() + self._clock_offset

    def get(self, batch_id: int, *, fresh: bool = False) -> BatchInfo | None:
        """The batch, or None if the escrow has no such id (blocking)."""
        cached = self._entries.get(batch_id)
        if cached and not fresh and time.monotonic() < cached[0]:
            return cached[1]
        try:
            info = self._read(batch_id)
        except Exception as exc:  # noqa: BLE001  (refused, timeout, RPC error: all mean "ask later")
            raise ChainUnavailable(f"cannot read batch {batch_id} from the chain "
                                   f"({type(exc).__name__}); retry") from None
        ttl = self.ttl if info is not None else _UNKNOWN_TTL
        self._entries[batch_id] = (time.monotonic() + ttl, info)
        return info

    def known(self, batch_id: int) -> BatchInfo | None:
        """The last read of a batch regardless of age (its immutable terms never go stale)."""
        cached = self._entries.get(batch_id)
        return cached[1] if cached else None

    async def aget(self, batch_id: int, *, fresh: bool = False) -> BatchInfo | None:
        cached = self._entries.get(batch_id)
        if cached and not fresh and time.monotonic() < cached[0]:
            return cached[1]
        pending = self._inflight.get(batch_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[batch_id] = future
        try:
            info = await asyncio.to_thread(self.get, batch_id, fresh=fresh)
            future.set_result(info)
            return info
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[batch_id]

    def count(self) -> int:
        """Batches ever created; ids run 1..count."""
        try:
            return self.chain.escrow.functions.batchCount().call()
        except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
            raise ChainUnavailable(f"cannot read the batch count ({type(exc).__name__}); retry") from None

    def manifest_cid(self, batch_id: int) -> str | None:
        """The manifest CID the batch was created with (from its BatchCreated event), if any."""
        if batch_id in self._manifests:
            return self._manifests[batch_id]
        reply = self._rpc("eth_getLogs", [{
            "address": self.chain.escrow.address,
            "fromBlock": hex(self.chain.deployment.deploy_block),
            "toBlock": "latest",
            "topics": [self._decoder.topics("BatchCreated"), "0x" + batch_id.to_bytes(32, "big").hex()],
        }])
        for event in self._decoder.decode_all(reply.get("result") or []):
            try:
                cid = str(CID.from_bytes(event.args["manifestCid"]))
            except InvalidCID:
                return None  # the requester put bytes on-chain that name no content
            self._manifests[batch_id] = cid
            return cid
        return None

    def _rpc(self, method: str, params: list) -> dict:
        try:
            return self.chain.w3.provider.make_request(method, params)
        except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
            raise ChainUnavailable(f"{method} failed ({type(exc).__name__}); retry") from None

    def _read(self, batch_id: int) -> BatchInfo | None:
        if not 0 < batch_id < 2**64:
            return None
        raw = self.chain.escrow.functions.batch(batch_id).call()
        self._clock_offset = self.chain.w3.eth.get_block("latest")["timestamp"] - time.time()
        (requester, deadline, review_window, answers_per_task, token, task_count,
         min_reputation, reward, relay_fee, funds, pending, _gold) = raw
        if requester == ZERO_ADDRESS:
            return None
        return BatchInfo(batch_id, requester, token, task_count, answers_per_task, reward,
                         relay_fee, deadline, review_window, min_reputation, funds, pending)
