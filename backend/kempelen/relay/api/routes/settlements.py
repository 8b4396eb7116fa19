"""Settlements (docs/settlement.md): post a requester-signed settlement, read a batch's latest,
relay workers' claims, follow the transactions the relay sends for them."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from kempelen.errors import InvalidCID, KempelenError
from kempelen.ipfs.errors import ContentError
from kempelen.protocol.cid import CID
from kempelen.protocol.settlement import (
    SettlementManifest,
    SettlementManifestError,
    verify_manifest,
)
from kempelen.protocol.signing import SettledWord, Settlement, SignatureError, recover
from kempelen.relay import jobs
from kempelen.relay.api.deps import BatchIdPath, CurrentAddress, SessionDep, StateDep
from kempelen.relay.errors import (
    ChainUnavailable,
    InvalidContent,
    NotFound,
    RelayError,
    SignerMismatch,
)
from kempelen.relay.relayer import PackReverts, Relayer
from kempelen.relay.schemas import Address, Hex32, error_responses
from kempelen.relay.settlement import (
    claim_many_calldata,
    latest_settlement,
    settle_calldata,
    settled_history,
)
from kempelen.relay.state import RelayState
from kempelen.relay.tasks import batch_or_404

router = APIRouter(tags=["settlements"])

Uint256 = Annotated[str, Field(pattern=r"^[0-9]{1,78}$", description="decimal string")]
HexBytes = Annotated[str, Field(pattern=r"^0x([0-9a-fA-F]{2})*$", max_length=2 + 2 * 130)]
MAX_CLAIMS = 100


class NoRelayer(RelayError):
    """This relay runs without a relayer key: it relays answers to no one and sends nothing."""

    status_code = 403
    code = "no_relayer"


class Refused(RelayError):
    """The escrow would revert the call: `reason` names its error."""

    status_code = 409
    code = "refused_by_escrow"


class SettledWordBody(BaseModel):
    worker: Address
    word_index: int = Field(ge=0, lt=2**32)
    bits: Uint256


class SettlementBody(BaseModel):
    batch_id: int = Field(ge=1, lt=2**63)
    sequence: int = Field(ge=1, lt=2**32)
    root: Hex32
    cumulative_total: Uint256
    manifest_cid: str = Field(max_length=128)
    settled: list[SettledWordBody] = Field(
        description="the signed entries: the answers paid, and every earlier settled word of each sealed "
                    "worker paid restated with bits 0 (kempelen.protocol.sealed; optional for a worker whose "
                    "words were opened); `before` is not sent: the relay computes it from the batch's "
                    "AnswersSettled events when it sends the settlement")
    signature: HexBytes = Field(description="the requester's EIP-712 signature of the Settlement")

    def settlement(self) -> Settlement:
        try:
            manifest = CID.parse(self.manifest_cid).to_bytes()
        except InvalidCID as exc:
            raise InvalidContent(f"manifest_cid: {exc}", field="manifest_cid") from None
        return Settlement(self.batch_id, self.sequence, bytes.fromhex(self.root[2:]), int(self.cumulative_total),
                          manifest, tuple(SettledWord(to_checksum_address(w.worker), w.word_index, int(w.bits))
                                          for w in self.settled))


class ClaimBody(BaseModel):
    batch_id: int = Field(ge=1, lt=2**63)
    cumulative: Uint256
    proof: list[Hex32] = Field(max_length=64)


class ClaimsBody(BaseModel):
    claims: list[ClaimBody] = Field(min_length=1, max_length=MAX_CLAIMS)


def _relayer(state: RelayState) -> Relayer:
    key = state.settings.relayer_key
    if key is None:
        raise NoRelayer("this relay has no relayer key: it cannot send transactions; post on-chain yourself")
    return Relayer(state.chain, key.get_secret_value())


def _dry_run(relayer: Relayer, calldata: bytes) -> None:
    try:
        relayer.estimate_gas(calldata)
    except PackReverts as exc:
        raise Refused(f"the escrow would revert: {exc}", reason=str(exc)) from None
    except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
        raise ChainUnavailable(f"cannot check the call against the chain ({type(exc).__name__})") from None


def _manifest(state: RelayState, cid: str, what: str) -> SettlementManifest:
    try:
        return SettlementManifest.from_json(state.store.get(cid))
    except ContentError:
        raise InvalidContent(f"{what} {cid} is not stored at this relay: upload it first "
                             f"(POST /payloads?kind=settlement) so workers can fetch it",
                             field="manifest_cid") from None
    except SettlementManifestError as exc:
        raise InvalidContent(f"{what} {cid}: {exc}", field="manifest_cid") from None


def _check_settlement(state: RelayState, body: SettlementBody) -> tuple[Settlement, bytes]:
    settlement = body.settlement()
    batch = batch_or_404(state, body.batch_id)
    signature = bytes.fromhex(body.signature[2:])
    try:
        signer = recover(state.chain.domain.digest(settlement.struct_hash()), signature)
    except SignatureError as exc:
        raise InvalidContent(f"bad signature: {exc}", field="signature") from None
    if signer != batch.requester:
        raise SignerMismatch(f"the settlement is signed by {signer}, not by batch {batch.batch_id}'s requester "
                             f"{batch.requester}", recovered=signer, requester=batch.requester)
    manifest = _manifest(state, body.manifest_cid, "settlement manifest")
    posted = latest_settlement(state.chain, body.batch_id)
    previous = previous_cid = None
    if posted is not None and posted.manifest_cid is not None:
        previous_cid = posted.manifest_cid
        previous = _manifest(state, previous_cid, "the previous settlement's manifest")
    problems = verify_manifest(manifest, previous, settlement=settlement, domain=state.chain.domain,
                               reward=batch.reward, token=batch.token, task_count=batch.task_count,
                               previous_cid=previous_cid)
    if problems:
        raise InvalidContent("the settlement manifest does not verify: " + "; ".join(problems[:5]),
                             field="manifest_cid", problems=problems[:50])
    return settlement, signature


def _before(state: RelayState, settlement: Settlement) -> list[int]:
    """`settle`'s unsigned `before` from the batch's settled words on-chain. Refused: an answer
    already settled (409); for each sealed worker, entries that do not restate exactly its earlier
    words (the escrow would revert with SettlementPriorMismatch); a restating entry (bits 0) on a
    word where its worker has no settled bits (SettlementEmptyWord). An opened worker's words are
    stored (openSettled): the escrow checks its entries against them and ignores `before`, so its
    restating entries are optional, as in a settlement signed before the opening landed."""
    book = settled_history(state.chain, settlement.batch_id).book
    paid = [w for w in settlement.settled if w.bits]
    try:
        expected = book.restated(paid)
    except KempelenError as exc:
        raise Refused(f"the escrow would revert: {exc}", reason=str(exc)) from None
    opened = {to_checksum_address(w) for w in book.opened}
    sealed = tuple(w for w in settlement.settled if w.worker not in opened)
    if sealed != tuple(w for w in expected if w.worker not in opened):
        raise InvalidContent("the settled entries must restate every earlier settled word of each worker paid "
                             "whose words are sealed, with bits 0, and nothing else (SettledBook.restated in "
                             f"kempelen.protocol.sealed): {len(expected)} entries expected, "
                             f"{len(settlement.settled)} given", field="settled")
    for w in settlement.settled:
        if not w.bits and not book.of_worker(w.worker).get(w.word_index):
            raise InvalidContent(f"entry ({w.worker}, word {w.word_index}) has no bits and restates no settled word "
                                 "(the escrow would revert with SettlementEmptyWord)", field="settled")
    return book.before(settlement.settled)


@router.post("/settlements", status_code=202, responses=error_responses(401, 403, 404, 409, 422, 503))
def post_settlement(body: SettlementBody, state: StateDep, db: SessionDep) -> dict:
    """Queue a requester-signed settlement for the relay to post with `settle` (it earns the
    batch's relay fee per settled answer). Checked first: the requester's signature, the manifest
    (stored here, verifying against the settlement and the previous one), the restated entries
    and a dry run. The relay computes `settle`'s unsigned `before` from the chain's events, again
    when it sends the settlement."""
    relayer = _relayer(state)
    settlement, signature = _check_settlement(state, body)
    calldata = settle_calldata(settlement, _before(state, settlement), signature)
    _dry_run(relayer, calldata)
    job_id = jobs.add(db, state.chain_id, "settle", calldata, batch_id=body.batch_id)
    return {"job_id": job_id, "status": "queued"}


@router.get("/settlements/{batch_id}", responses=error_responses(404, 503))
def batch_settlement(batch_id: BatchIdPath, state: StateDep,
                     worker: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$",
                                                         description="also this worker's earnings")] = None) -> dict:
    """The batch's latest settlement, from the chain; with `worker`, its settled and claimed amounts."""
    batch_or_404(state, batch_id)
    posted = latest_settlement(state.chain, batch_id)
    if posted is None:
        raise NotFound(f"batch {batch_id} has no settlement yet")
    body = {"batch_id": batch_id, "sequence": posted.sequence, "root": "0x" + posted.root.hex(),
            "cumulative_total": str(posted.cumulative_total), "manifest_cid": posted.manifest_cid,
            "block_number": posted.block_number, "tx_hash": posted.tx_hash}
    if worker is not None:
        try:
            settled, claimed = state.chain.escrow.functions.earningsOf(batch_id, to_checksum_address(worker)).call()
        except Exception as exc:  # noqa: BLE001
            raise ChainUnavailable(f"cannot read earnings ({type(exc).__name__})") from None
        body["earnings"] = {"worker": to_checksum_address(worker), "settled": str(settled), "claimed": str(claimed)}
    return body


@router.post("/claims", status_code=202, responses=error_responses(401, 403, 409, 422, 503))
def post_claims(body: ClaimsBody, worker: CurrentAddress, state: StateDep, db: SessionDep) -> dict:
    """Queue claimMany of your earnings (the signed-in worker's) in settled batches.

    Claims are permissionless and only ever credit the worker, so no signature over the claim is
    needed: the Sign-In with Ethereum session is what limits this relay's gas to workers' own
    claims. A claim the escrow would refuse (wrong proof, nothing left to claim) is a 409."""
    relayer = _relayer(state)
    claims = [(c.batch_id, worker, int(c.cumulative), [bytes.fromhex(p[2:]) for p in c.proof]) for c in body.claims]
    if len({c[0] for c in claims}) != len(claims):
        raise InvalidContent("one claim per batch", field="claims")
    calldata = claim_many_calldata(claims)
    _dry_run(relayer, calldata)
    job_id = jobs.add(db, state.chain_id, "claim", calldata, requested_by=worker)
    return {"job_id": job_id, "status": "queued"}


@router.get("/jobs/{job_id}", responses=error_responses(404))
def job_status(job_id: Annotated[int, Path(ge=1, lt=2**63)], db: SessionDep) -> dict:
    """A relayed settlement or claim: queued -> sent (tx_hash) -> mined | failed (error)."""
    job = jobs.get(db, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job.as_json()
