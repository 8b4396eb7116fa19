"""The settlement path of the SDK (docs/settlement.md): a requester settles the answers a relay
holds for its batch in one signed settlement; workers claim their cumulative earnings with proofs.

`Requester.settle` and `Worker.claim` call into this module. Everything is checked here before a
transaction is sent: a settlement that the escrow would refuse (an answer already on the direct
path or settled, not enough funds) raises SettlementError naming the answer or the amount.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3.logs import DISCARD

from kempelen.chain.contracts import Chain
from kempelen.chain.settled import SettledHistory, settled_history
from kempelen.errors import KempelenError
from kempelen.ipfs.unixfs import file_cid
from kempelen.protocol.cid import CID
from kempelen.protocol.settlement import (
    ManifestAnswer,
    NotInSettlement,
    SettlementManifest,
    build_settlement,
    claim_for,
)
from kempelen.protocol.signing import Settlement, sign
from kempelen.sdk.history import batch_answers
from kempelen.sdk.relay_client import RelayClient

Progress = Callable[[str], None]


class SettlementError(KempelenError):
    """A settlement or claim the escrow would refuse, caught before any transaction."""


@dataclass(frozen=True)
class SettlementCandidate:
    """A signed answer the relay holds for the batch's settlement (not settled, not direct)."""

    worker: str
    task_index: int
    answer_digest: bytes
    signature: bytes
    payload: bytes
    payload_cid: str
    receipt_id: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.worker.lower(), self.task_index)

    @property
    def value(self) -> object:
        """The answer as the worker gave it (JSON if it parses, else text)."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload.decode(errors="replace")

    def manifest_answer(self) -> ManifestAnswer:
        return ManifestAnswer(self.worker, self.task_index, self.answer_digest, self.signature)


@dataclass(frozen=True)
class PostedSettlement:
    """A settlement on-chain: what it paid, where its manifest is."""

    batch_id: int
    sequence: int
    manifest_cid: str
    answers: int
    amount: int  # rewards moved to the claimable pool
    relay_fees: int  # to whoever posted it
    tx_hash: str
    manifest: SettlementManifest


@dataclass(frozen=True)
class EarningsClaim:
    batch_id: int
    worker: str
    cumulative: int
    proof: tuple[bytes, ...]
    claimed_before: int

    @property
    def amount(self) -> int:
        """What this claim credits: cumulative - already claimed."""
        return self.cumulative - self.claimed_before

    def as_tuple(self) -> tuple:
        """The ABI tuple of ISettlement.EarningsClaim."""
        return (self.batch_id, to_checksum_address(self.worker), self.cumulative, list(self.proof))

    def as_json(self) -> dict:
        return {"batch_id": self.batch_id, "cumulative": str(self.cumulative),
                "proof": ["0x" + p.hex() for p in self.proof]}


@dataclass(frozen=True)
class ClaimResult:
    claims: tuple[EarningsClaim, ...]
    tx_hash: str

    @property
    def credited(self) -> int:
        return sum(c.amount for c in self.claims)


# ------------------------------------------------------------------------------ the chain's record


@dataclass(frozen=True)
class SettlementRecord:
    """One SettlementPosted event."""

    batch_id: int
    sequence: int
    root: bytes
    cumulative_total: int
    manifest_cid: str | None
    tx_hash: str


def settlement_records(chain: Chain, batch_id: int | None = None) -> list[SettlementRecord]:
    """SettlementPosted events, oldest first, of one batch or of all."""
    event = chain.escrow.events.SettlementPosted()
    topics = [event.topic] + (["0x" + batch_id.to_bytes(32, "big").hex()] if batch_id is not None else [])
    logs = chain.w3.eth.get_logs({"address": chain.escrow.address, "topics": topics,
                                  "fromBlock": chain.deployment.deploy_block, "toBlock": "latest"})
    records = []
    for raw in logs:
        args = event.process_log(raw).args
        try:
            cid = str(CID.from_bytes(bytes(args.manifestCid)))
        except KempelenError:
            cid = None
        records.append(SettlementRecord(args.batchId, args.sequence, bytes(args.root), args.cumulativeTotal, cid,
                                        "0x" + bytes(raw["transactionHash"]).hex()))
    return records


def load_manifest(fetch: Callable[[str], bytes], cid: str) -> SettlementManifest:
    """A settlement manifest by CID; `fetch` must verify content against the CID (the SDK's do)."""
    return SettlementManifest.from_json(fetch(cid))


# ------------------------------------------------------------------------------ requesters


def candidates(relay: RelayClient, chain: Chain, batch_id: int,
               history: SettledHistory | None = None) -> tuple[list[SettlementCandidate], dict]:
    """The relay's held answers of the batch that neither a settlement nor the direct path has
    taken, and why each other answer is out ((worker lower, task) -> reason). A worker whose
    settled words were opened (SettledWordsOpened) is settled like any other: the escrow checks
    its entries against its stored words. `history`: the batch's settlements on-chain (read if not
    given)."""
    direct = {(a.worker.lower(), a.task_index): a.status for a in batch_answers(chain, batch_id)}
    if history is None:
        history = settled_history(chain, batch_id)
    found, excluded = [], {}
    for row in relay.signed_answers(batch_id):
        key = (row["worker"].lower(), row["task_index"])
        if key in history.paid or row["status"] == "settled":
            excluded[key] = "already settled"
        elif key in direct:
            excluded[key] = f"on the direct path (status {direct[key]})"
        elif row["status"] != "held":
            excluded[key] = f"not held for settlement at the relay (status {row['status']})"
        else:
            found.append(SettlementCandidate(
                to_checksum_address(row["worker"]), row["task_index"], bytes.fromhex(row["answer_digest"][2:]),
                bytes.fromhex(row["signature"][2:]), base64.b64decode(row["payload"]), row["payload_cid"], row["receipt_id"]))
    for key, status in direct.items():
        excluded.setdefault(key, f"on the direct path (status {status})")
    for key in history.paid:
        excluded.setdefault(key, "already settled")
    return found, excluded


def choose(found: list[SettlementCandidate], excluded: dict, answers: Iterable | None,
           approve: Callable[[SettlementCandidate], bool] | None) -> list[SettlementCandidate]:
    """The answers to pay: those named (each must be a candidate), else every candidate `approve`
    accepts (default: all)."""
    if answers is None:
        return [c for c in found if approve is None or approve(c)]
    by_key = {c.key: c for c in found}
    chosen = []
    for answer in answers:
        worker, task_index = (answer if isinstance(answer, tuple) else (answer.worker, answer.task_index))
        key = (str(worker).lower(), int(task_index))
        if key in by_key:
            chosen.append(by_key[key])
            continue
        reason = excluded.get(key, "not at the relay")
        raise SettlementError(f"cannot settle the answer of {to_checksum_address(worker)} to task {task_index}: "
                              f"{reason}")
    return chosen


def settle(requester, batch_id: int, *, answers: Iterable | None = None,
           approve: Callable[[SettlementCandidate], bool] | None = None, via_relay: bool = False,
           relay: RelayClient | None = None, progress: Progress | None = None) -> PostedSettlement:
    """See Requester.settle."""
    say = progress or (lambda _message: None)
    chain = requester.chain
    batch = requester.batch(batch_id)
    if batch["requester"] != requester.signer.address:
        raise SettlementError(f"batch {batch_id} belongs to {batch['requester']}, not to {requester.signer.address}")
    relay = relay or getattr(requester.pinner, "client", None)
    if relay is None:
        raise SettlementError("settling reads the signed answers from a relay: pass relay=RelayClient(...)")

    history = settled_history(chain, batch_id)
    book = history.book
    found, excluded = candidates(relay, chain, batch_id, history)
    chosen = choose(found, excluded, answers, approve)
    say(f"{len(found)} answers held for settlement, {len(chosen)} chosen")
    if not chosen:
        raise SettlementError(f"nothing to settle in batch {batch_id}: " + (
            "no held answer was chosen" if found else
            "no held answer is waiting at the relay (a batch is held for settlement only if its manifest "
            "declares a settlement fallback, and only until then)"))
    needed = len(chosen) * (batch["reward"] + batch["relayFee"])
    if needed > batch["funds"]:
        raise SettlementError(f"batch {batch_id} holds {batch['funds']} base units; settling {len(chosen)} answers "
                              f"needs {needed} (reward + relay fee each): settle fewer or top up with extend")

    records = settlement_records(chain, batch_id)
    previous = previous_cid = None
    if records:
        previous_cid = records[-1].manifest_cid
        if previous_cid is None:
            raise SettlementError(f"the last settlement of batch {batch_id} names no manifest CID")
        previous = load_manifest(requester.pinner.fetch, previous_cid)
    unsigned, manifest = build_settlement(
        previous, [c.manifest_answer() for c in chosen], domain=chain.domain, batch_id=batch_id,
        token=batch["token"], reward=batch["reward"], cid_of=file_cid, previous_cid=previous_cid,
        sequence=(records[-1].sequence + 1) if records else 1)
    expected = CID.from_bytes(unsigned.manifest_cid)
    try:
        # The signed entries restate every earlier word of each sealed worker paid (bits 0 where
        # nothing is new): the escrow checks the unsigned `before` against the worker's digest. An
        # opened worker's entries are only its new words: the escrow reads its stored words and
        # ignores `before` for it, so an openSettled landing before this is mined costs gas only.
        settlement = manifest.settlement(expected, book)
    except KempelenError as exc:  # an answer settled meanwhile
        raise SettlementError(f"cannot settle batch {batch_id}: {exc}") from None
    restated = sum(1 for w in settlement.settled if not w.bits)
    pinned = requester.pinner.pin(manifest.to_json(), kind="settlement")
    if pinned != expected:
        raise SettlementError(f"the store gave the manifest CID {pinned}, not {expected}: it does not add "
                              f"content as `ipfs add` does (raw leaves, CIDv1)")
    say(f"manifest {expected} pinned: sequence {settlement.sequence}, {len(chosen)} answers, "
        f"cumulative total {settlement.cumulative_total}"
        + (f", {restated} earlier settled words restated" if restated else ""))
    signature = sign(chain.domain.digest(settlement.struct_hash()), requester.signer.private_key)
    tx_hash = _post_settlement(chain, requester.signer.private_key, settlement, book.before(settlement.settled),
                               signature, via_relay, relay, say)
    return PostedSettlement(batch_id, settlement.sequence, str(expected), len(chosen),
                            len(chosen) * batch["reward"], len(chosen) * batch["relayFee"], tx_hash, manifest)


def _post_settlement(chain: Chain, key: str, settlement: Settlement, before: list[int], signature: bytes,
                     via_relay: bool, relay: RelayClient, say: Progress) -> str:
    """Sends `settle(settlement, before, signature)`, or has the relay send it: the relay computes
    `before` itself from the chain's events when it sends (docs/relay.md), so the body carries
    only what the requester signed."""
    if via_relay:
        body = {"batch_id": settlement.batch_id, "sequence": settlement.sequence,
                "root": "0x" + settlement.root.hex(), "cumulative_total": str(settlement.cumulative_total),
                "manifest_cid": str(CID.from_bytes(settlement.manifest_cid)),
                "settled": [{"worker": w.worker, "word_index": w.word_index, "bits": str(w.bits)}
                            for w in settlement.settled],
                "signature": "0x" + signature.hex()}
        job = relay.post_settlement(body)
        say(f"relay queued the settlement as job {job['job_id']}")
        return relay.wait_job(job["job_id"])["tx_hash"]
    receipt = chain.transact(key, chain.escrow.functions.settle(settlement.as_tuple(), before, signature))
    events = chain.escrow.events.SettlementPosted().process_receipt(receipt, errors=DISCARD)
    if not events:
        raise SettlementError(f"transaction {receipt.transactionHash.hex()} posted no settlement")
    return "0x" + bytes(receipt.transactionHash).hex()


# ------------------------------------------------------------------------------ workers


def claims_of(worker, batch_ids: Iterable[int] | None) -> list[EarningsClaim]:
    """The worker's claimable earnings: per batch, the leaf of its latest settlement, minus what
    was claimed. Batches named in `batch_ids` must have something to claim; discovered ones
    (from the chain's settlements, or the relay's receipts without a chain) are skipped if not."""
    explicit = batch_ids is not None
    ids = sorted(set(batch_ids)) if explicit else _settled_batches(worker)
    found = []
    for batch_id in ids:
        try:
            claim = _claim_in(worker, batch_id)
        except SettlementError:
            if explicit:
                raise
            continue
        found.append(claim)
    return found


def _settled_batches(worker) -> list[int]:
    if worker.chain is not None:
        return sorted({r.batch_id for r in settlement_records(worker.chain)})
    return sorted({a["batch_id"] for a in worker.relay.my_answers() if a["status"] == "settled"})


def _claim_in(worker, batch_id: int) -> EarningsClaim:
    me = worker.address
    if worker.chain is not None:
        records = settlement_records(worker.chain, batch_id)
        if not records:
            raise SettlementError(f"batch {batch_id} has no settlement")
        root, cid = records[-1].root, records[-1].manifest_cid
        _, claimed = worker.chain.escrow.functions.earningsOf(batch_id, me).call()
    else:
        posted = worker.relay.settlement(batch_id, worker=me)
        if posted is None:
            raise SettlementError(f"batch {batch_id} has no settlement")
        root, cid = bytes.fromhex(posted["root"][2:]), posted["manifest_cid"]
        claimed = int(posted["earnings"]["claimed"])
    if cid is None:
        raise SettlementError(f"the latest settlement of batch {batch_id} names no manifest")
    manifest = load_manifest(worker.relay.fetch, cid)
    if manifest.root != root or manifest.batch_id != batch_id:
        raise SettlementError(f"manifest {cid} does not match the settlement posted for batch {batch_id}")
    try:
        cumulative, proof = claim_for(manifest, me)
    except NotInSettlement:
        raise SettlementError(f"{me} earned nothing in the settlements of batch {batch_id}") from None
    if cumulative <= claimed:
        raise SettlementError(f"{me} already claimed its {cumulative} base units in batch {batch_id}")
    return EarningsClaim(batch_id, me, cumulative, tuple(proof), claimed)


def claim(worker, batch_ids: Iterable[int] | None = None, *, via_relay: bool = False,
          sender=None) -> ClaimResult:
    """See Worker.claim."""
    claims = claims_of(worker, batch_ids)
    if not claims:
        raise SettlementError(f"nothing to claim for {worker.address}")
    if via_relay:
        job = worker.relay.post_claims([c.as_json() for c in claims])
        return ClaimResult(tuple(claims), worker.relay.wait_job(job["job_id"])["tx_hash"])
    if worker.chain is None:
        raise SettlementError("claiming on-chain needs the chain (pass chain=) or via_relay=True")
    key = (sender or worker.signer).private_key
    receipt = worker.chain.transact(key, worker.chain.escrow.functions.claimMany([c.as_tuple() for c in claims]))
    return ClaimResult(tuple(claims), "0x" + bytes(receipt.transactionHash).hex())
