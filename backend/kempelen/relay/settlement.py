"""Settlement mode at the relay: which batches hold their answers off-chain, what settlements paid.

A batch whose manifest declares `"settlement": {"fallbackAt": t}` is paid by its requester's
signed settlements (docs/settlement.md). Its answers are stored "held": the submitter must not
put them on-chain with submitAnswers while the requester may still settle them (`settle` would
revert with SettlementAnsweredDirectly). At the fallback time the submitter marks the answers a
settlement paid "settled" and sends the rest on the direct path: the safety valve. The escrow
keeps only a digest of each worker's settled words and skips a worker's answers while they are
sealed, so the submitter first opens them (`openSettled`, an "open" job) for each worker that has
some (kempelen.protocol.sealed, kempelen.chain.settled).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address

from kempelen.chain.contracts import Chain
from kempelen.chain.contracts import ChainUnavailable as KempelenChainUnavailable
from kempelen.chain.settled import SettledHistory, SettledOn
from kempelen.chain.settled import settled_history as _settled_history
from kempelen.errors import InvalidCID
from kempelen.ipfs.errors import ContentError
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import CID
from kempelen.protocol.manifest import BatchManifest, ManifestError
from kempelen.protocol.settlement import settled_words_of_event
from kempelen.protocol.signing import SettledWord, Settlement
from kempelen.relay.batches import BatchCatalog, BatchInfo
from kempelen.relay.errors import ChainUnavailable
from kempelen.relay.receipts import escrow_decoder

log = logging.getLogger("kempelen.relay.settlement")

SETTLEMENT_TYPE = "(uint64,uint32,bytes32,uint256,bytes,(address,uint32,uint256)[])"
SETTLE_SIGNATURE = f"settle({SETTLEMENT_TYPE},uint256[],bytes)"
OPEN_SETTLED_SIGNATURE = "openSettled(uint64,address,uint256[])"
CLAIM_MANY_SIGNATURE = "claimMany((uint64,address,uint256,bytes32[])[])"


class SettlementModes:
    """Per batch: the unix time until which its answers are held, or None (the direct path).

    Read once per batch and process from its manifest (content-addressed, so it never changes).
    A batch whose manifest this relay cannot read is treated as a direct batch: its requester
    pinned the manifest elsewhere, so it did not ask this relay to hold anything.
    """

    def __init__(self, catalog: BatchCatalog, store: ContentStore, margin_seconds: int) -> None:
        self.catalog = catalog
        self.store = store
        self.margin = margin_seconds
        self._fallback: dict[int, int | None] = {}

    def fallback_at(self, batch_id: int) -> int | None:
        """The manifest's fallbackAt (blocking: a log query and a store read the first time)."""
        if batch_id not in self._fallback:
            cid = self.catalog.manifest_cid(batch_id)  # ChainUnavailable propagates: never guess
            self._fallback[batch_id] = _manifest_fallback(self.store, cid)
        return self._fallback[batch_id]

    async def hold_until(self, batch: BatchInfo) -> int | None:
        """Until when a new answer of `batch` is held: the fallback time, but never later than
        `margin` before the deadline (the direct path needs time before it); None: do not hold."""
        if batch.batch_id in self._fallback:
            fallback = self._fallback[batch.batch_id]
        else:
            fallback = await asyncio.to_thread(self.fallback_at, batch.batch_id)
        if fallback is None:
            return None
        until = min(fallback, batch.deadline - self.margin)
        return until if until > self.catalog.now() else None


def _manifest_fallback(store: ContentStore, cid: str | None) -> int | None:
    if cid is None:
        return None
    try:
        return BatchManifest.from_json(store.get(cid)).settlement_fallback_at
    except ContentError:
        return None
    except (ManifestError, InvalidCID) as exc:
        log.warning("manifest %s is not a valid batch manifest (%s): direct path", cid, exc)
        return None


def settled_history(chain: Chain, batch_id: int) -> SettledHistory:
    """The batch's settled words (SettledBook: who has sealed or opened words) and where each
    answer its settlements paid was settled, from the escrow's AnswersSettled and
    SettledWordsOpened events; ChainUnavailable when the node does not answer."""
    try:
        return _settled_history(chain, batch_id)
    except KempelenChainUnavailable as exc:
        raise ChainUnavailable(str(exc)) from None


def settled_in_receipt(receipt, escrow: str, tx_hash: str) -> dict[tuple[str, int], SettledOn]:
    """The answers a mined settle transaction paid, from its AnswersSettled event (raw logs);
    restating entries (bits 0) pay nothing."""
    paid: dict[tuple[str, int], SettledOn] = {}
    for event in escrow_decoder().decode_all(receipt.logs):
        if event.address.lower() != escrow.lower() or event.name != "AnswersSettled":
            continue
        for word in settled_words_of_event(event.args["settled"]):
            for task_index in word.task_indexes():
                paid[(word.worker.lower(), task_index)] = SettledOn(receipt.block_number, tx_hash)
    return paid


@dataclass(frozen=True)
class PostedSettlement:
    """The latest SettlementPosted of a batch."""

    batch_id: int
    sequence: int
    root: bytes
    cumulative_total: int
    manifest_cid: str | None  # None when the bytes posted name no CID
    block_number: int
    tx_hash: str


def latest_settlement(chain: Chain, batch_id: int) -> PostedSettlement | None:
    event = chain.escrow.events.SettlementPosted()
    try:
        logs = chain.w3.eth.get_logs({
            "address": chain.escrow.address, "topics": [event.topic, "0x" + batch_id.to_bytes(32, "big").hex()],
            "fromBlock": chain.deployment.deploy_block, "toBlock": "latest",
        })
    except Exception as exc:  # noqa: BLE001
        raise ChainUnavailable(f"cannot read the settlements of batch {batch_id} ({type(exc).__name__})") from None
    if not logs:
        return None
    raw = logs[-1]
    args = event.process_log(raw).args
    try:
        cid = str(CID.from_bytes(bytes(args.manifestCid)))
    except InvalidCID:
        cid = None
    return PostedSettlement(batch_id, args.sequence, bytes(args.root), args.cumulativeTotal, cid,
                            raw["blockNumber"], "0x" + bytes(raw["transactionHash"]).hex())


def settle_calldata(settlement: Settlement, before: list[int], signature: bytes) -> bytes:
    """ABI-encoded `settle(settlement, before, signature)`."""
    body = abi_encode([SETTLEMENT_TYPE, "uint256[]", "bytes"], [settlement.as_tuple(), list(before), signature])
    return keccak(text=SETTLE_SIGNATURE)[:4] + body


def settle_of(calldata: bytes) -> tuple[Settlement, list[int], bytes]:
    """(settlement, before, signature) of a `settle` calldata (the inverse of settle_calldata)."""
    if calldata[:4] != keccak(text=SETTLE_SIGNATURE)[:4]:
        raise ValueError("not a settle call")
    try:
        (batch_id, sequence, root, total, cid, settled), before, signature = abi_decode(
            [SETTLEMENT_TYPE, "uint256[]", "bytes"], calldata[4:])
    except DecodingError as exc:
        raise ValueError(f"malformed settle: {exc}") from None
    words = tuple(SettledWord(to_checksum_address(w), i, b) for w, i, b in settled)
    return Settlement(batch_id, sequence, bytes(root), total, bytes(cid), words), list(before), bytes(signature)


def open_settled_calldata(batch_id: int, worker: str, words: list[int]) -> bytes:
    """ABI-encoded `openSettled(batchId, worker, words)`."""
    body = abi_encode(["uint64", "address", "uint256[]"], [batch_id, to_checksum_address(worker), list(words)])
    return keccak(text=OPEN_SETTLED_SIGNATURE)[:4] + body


def open_settled_of(calldata: bytes) -> tuple[int, str, list[int]]:
    """(batch id, worker, words) of an `openSettled` calldata."""
    if calldata[:4] != keccak(text=OPEN_SETTLED_SIGNATURE)[:4]:
        raise ValueError("not an openSettled call")
    try:
        batch_id, worker, words = abi_decode(["uint64", "address", "uint256[]"], calldata[4:])
    except DecodingError as exc:
        raise ValueError(f"malformed openSettled: {exc}") from None
    return batch_id, to_checksum_address(worker), list(words)


CLAIMS_TYPE = "(uint64,address,uint256,bytes32[])[]"
MAX_MERGED_CLAIMS = 100  # ~40k gas each: a merged claimMany stays far below a block's gas


def claim_many_calldata(claims: list[tuple[int, str, int, list[bytes]]]) -> bytes:
    """ABI-encoded `claimMany(claims)`; each claim is (batch id, worker, cumulative, proof)."""
    values = [(batch_id, to_checksum_address(worker), cumulative, list(proof))
              for batch_id, worker, cumulative, proof in claims]
    return keccak(text=CLAIM_MANY_SIGNATURE)[:4] + abi_encode([CLAIMS_TYPE], [values])


def claims_of(calldata: bytes) -> list[tuple[int, str, int, list[bytes]]]:
    """The claims of a `claimMany` calldata (the inverse of claim_many_calldata)."""
    if calldata[:4] != keccak(text=CLAIM_MANY_SIGNATURE)[:4]:
        raise ValueError("not a claimMany call")
    try:
        (values,) = abi_decode([CLAIMS_TYPE], calldata[4:])
    except DecodingError as exc:  # not a ValueError: callers would see the submitter's loop fail
        raise ValueError(f"malformed claimMany: {exc}") from None
    return [(batch_id, to_checksum_address(worker), cumulative, list(proof))
            for batch_id, worker, cumulative, proof in values]


def merge_claims(queued: list) -> tuple[list, bytes]:
    """The claim jobs (relay/jobs.py Job, oldest first) that share one claimMany, and its calldata.

    Takes the oldest job and every later one that fits: at most MAX_MERGED_CLAIMS claims and no
    (batch, worker) twice, since a second claim of the same earnings would revert the whole call.
    Claims are permissionless and each only credits its own worker, so sharing a transaction
    changes nobody's payment; it spreads the 21,000-gas base and calldata overhead over all of
    them (docs/benchmarks.md: ~37k gas per first-time claim instead of ~60k).
    """
    taken, claims, seen = [], [], set()
    for job in queued:
        try:
            mine = claims_of(job.calldata)
        except ValueError:
            continue  # not a claimMany: it can only go alone
        keys = {(batch_id, worker.lower()) for batch_id, worker, _, _ in mine}
        if taken and (keys & seen or len(claims) + len(mine) > MAX_MERGED_CLAIMS):
            continue
        taken.append(job)
        claims += mine
        seen |= keys
    return taken, claim_many_calldata(claims)
