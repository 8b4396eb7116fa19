"""The requester's side of Kempelen, shaped like the MTurk calls its users know.

create_batch ~ CreateHIT (+ funding), list_answers ~ ListAssignmentsForHIT,
approve/reject ~ ApproveAssignment/RejectAssignment, bonus ~ SendBonus,
block_worker ~ CreateWorkerBlock, extend ~ UpdateExpirationForHIT, reclaim returns
the unused deposit. Everything goes straight to the chain from the requester's own
wallet; payloads are pinned through a `Pinner` (the relay or a local store).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3.logs import DISCARD

from kempelen.chain.contracts import ETH, Chain
from kempelen.errors import KempelenError
from kempelen.protocol.cid import CID
from kempelen.protocol.manifest import BatchManifest, canonical_json
from kempelen.protocol.signing import permit_typed_data
from kempelen.protocol.tasksets import task_sets
from kempelen.sdk import settlement
from kempelen.sdk.amounts import to_base_units
from kempelen.sdk.history import AnswerRecord, batch_answers
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import Pinner
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.settlement import PostedSettlement, SettlementCandidate

Progress = Callable[[int, int], None]  # (done, total)


class BatchError(KempelenError):
    """A batch request the protocol would refuse, caught before spending gas."""


@dataclass(frozen=True)
class FundedBatch:
    batch_id: int
    token: str
    deposit: int
    manifest_cid: str
    task_cids: tuple[str, ...]
    tx_hash: str
    gold_cid: str | None = None
    gold_salt: str | None = None  # keep it: revealing the gold answers needs it


@dataclass(frozen=True)
class AnswerRef:
    worker: str
    task_index: int

    def as_tuple(self) -> tuple:
        return (to_checksum_address(self.worker), self.task_index)


def _refs(answers: Iterable[AnswerRef | AnswerRecord | tuple]) -> list[tuple]:
    refs = []
    for answer in answers:
        if isinstance(answer, tuple):
            answer = AnswerRef(*answer)
        refs.append((to_checksum_address(answer.worker), answer.task_index))
    if not refs:
        raise BatchError("no answers given")
    return refs


def _sets(refs: list[tuple]) -> list[tuple]:
    """The review call's task sets (ITaskEscrow.TaskSet: one per worker and 96-task group)."""
    try:
        return task_sets(refs)
    except ValueError as exc:
        raise BatchError(str(exc)) from None


class Requester:
    def __init__(self, chain: Chain, signer: Signer, pinner: Pinner):
        self.chain = chain
        self.signer = signer
        self.pinner = pinner

    # -- funding -----------------------------------------------------------------------------

    def decimals(self, token: str) -> int:
        address = self.chain.token_address(token)
        return 18 if address == ETH else self.chain.token(address).functions.decimals().call()

    def create_batch(
        self,
        tasks: Sequence[dict | bytes],
        reward: str,
        *,
        token: str = "ETH",
        answers_per_task: int = 1,
        relay_fee: str = "0",
        deadline: int = 7 * 24 * 3600,
        review_window: int = 3 * 24 * 3600,
        min_reputation: int = 0,
        title: str = "",
        instructions: str = "",
        labels: Sequence[str] = (),
        assignment_seconds: int = 600,
        gold: Sequence[dict] | None = None,
        settlement_fallback: int | None = None,
        progress: Progress | None = None,
    ) -> FundedBatch:
        """Pin every task payload and the manifest, fund the escrow, return the new batch.

        deadline and review_window are durations in seconds (deadline counted from now).
        settlement_fallback (seconds from now, before the deadline) makes it a settlement-mode
        batch: relays hold its answers for `settle` until then, and put the answers no settlement
        paid on the direct path after it (docs/settlement.md).
        """
        if not tasks:
            raise BatchError("a batch needs at least one task")
        if settlement_fallback is not None and not 0 < settlement_fallback < deadline:
            raise BatchError("the settlement fallback must come after now and before the deadline "
                             f"({settlement_fallback}s is not within 0..{deadline}s)")
        if not 1 <= answers_per_task <= 255:
            raise BatchError("answers per task must be between 1 and 255")
        token_address = self.chain.token_address(token)
        decimals = self.decimals(token)
        reward_units = to_base_units(reward, decimals)
        fee_units = to_base_units(relay_fee, decimals)
        if reward_units == 0:
            raise BatchError("reward must be more than zero")

        task_cids = []
        for done, task in enumerate(tasks, 1):
            payload = task if isinstance(task, bytes) else canonical_json(task)
            task_cids.append(str(self.pinner.pin(payload)))
            if progress:
                progress(done, len(tasks))
        now = self._now()
        manifest = BatchManifest(title=title, task_cids=tuple(task_cids), instructions=instructions,
                                 assignment_seconds=assignment_seconds, labels=tuple(labels),
                                 settlement_fallback_at=now + settlement_fallback if settlement_fallback else None)
        manifest_cid = self.pinner.pin(manifest.to_json(), kind="manifest")

        gold_cid = gold_salt = None
        commitment = bytes(32)
        if gold:
            gold_cid = self.pinner.pin(canonical_json({"format": "kempelen/gold/1", "answers": list(gold)}))
            salt = os.urandom(32)
            commitment = keccak(gold_cid.to_bytes() + salt)
            gold_salt = "0x" + salt.hex()

        deposit = len(tasks) * answers_per_task * (reward_units + fee_units)
        terms = (token_address, len(tasks), answers_per_task, reward_units, fee_units,
                 now + deadline, review_window, min_reputation,
                 commitment, manifest_cid.to_bytes())
        receipt = self._fund(terms, token_address, deposit)
        (created,) = self.chain.escrow.events.BatchCreated().process_receipt(receipt, errors=DISCARD)
        return FundedBatch(
            batch_id=created.args.batchId, token=token_address, deposit=deposit,
            manifest_cid=str(manifest_cid), task_cids=tuple(task_cids),
            tx_hash=receipt.transactionHash.hex(),
            gold_cid=str(gold_cid) if gold_cid else None, gold_salt=gold_salt,
        )

    def _fund(self, terms: tuple, token_address: str, deposit: int):
        escrow = self.chain.escrow
        if token_address == ETH:
            self._require_balance(token_address, deposit)
            return self.chain.transact(self.signer.private_key, escrow.functions.createBatch(terms), value=deposit)
        self._require_balance(token_address, deposit)
        token = self.chain.token(token_address)
        allowance = token.functions.allowance(self.signer.address, escrow.address).call()
        if allowance < deposit:
            # One transaction where the token has an EIP-2612 permit: multicall([permitDeposit,
            # createBatch]), both run as this requester (Multicall delegatecalls; not payable, so
            # ERC-20 only). permitDeposit ignores a failed permit: createBatch then reverts on the
            # allowance, and nothing is spent but gas.
            permit = self._sign_permit(token, deposit)
            if permit is not None:
                calls = [escrow.encode_abi("permitDeposit", args=[token.address, deposit, *permit]),
                         escrow.encode_abi("createBatch", args=[terms])]
                return self.chain.transact(self.signer.private_key,
                                           escrow.functions.multicall([bytes.fromhex(c[2:]) for c in calls]))
            self.chain.transact(self.signer.private_key, token.functions.approve(escrow.address, deposit))
        return self.chain.transact(self.signer.private_key, escrow.functions.createBatch(terms))

    def _require_balance(self, token_address: str, amount: int) -> None:
        have = self.wallet_balance(token_address)
        if have < amount:
            raise BatchError(f"not enough balance: the deposit needs {amount} base units, "
                             f"the wallet {self.signer.address} holds {have}")

    def _sign_permit(self, token, value: int) -> tuple | None:
        try:
            nonce = token.functions.nonces(self.signer.address).call()
            name = token.functions.name().call()
        except Exception:  # the token has no EIP-2612 permit
            return None
        deadline = self.chain.w3.eth.get_block("latest")["timestamp"] + 3600  # the chain's clock
        typed = permit_typed_data(name, self.chain.chain_id, token.address, self.signer.address,
                                  self.chain.escrow.address, value, nonce, deadline)
        signed = Account.sign_typed_data(self.signer.private_key, full_message=typed)
        return (deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))

    # -- review ------------------------------------------------------------------------------

    def list_answers(self, batch_id: int, status: str | None = None) -> list[AnswerRecord]:
        """Answers of the batch as the chain records them, optionally of one status
        (pending, approved, rejected, released)."""
        answers = batch_answers(self.chain, batch_id)
        return [a for a in answers if status is None or a.status == status]

    def approve(self, batch_id: int, answers: Iterable) -> str:
        call = self.chain.escrow.functions.approve(batch_id, _sets(_refs(answers)))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def reject(self, batch_id: int, answers: Iterable, reason: str) -> str:
        """Reject with a reason a person can read; the reason is pinned and its CID goes on-chain."""
        refs = _refs(answers)
        sets = _sets(refs)
        if not reason.strip():
            raise BatchError("a rejection needs a reason")
        reason_cid = self.pinner.pin(canonical_json({
            "format": "kempelen/rejection/1", "batch_id": batch_id, "reason": reason,
            "answers": [{"worker": w, "task_index": t} for w, t in refs]}), kind="reason")
        call = self.chain.escrow.functions.reject(batch_id, sets, reason_cid.to_bytes())
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def release(self, batch_id: int, answers: Iterable) -> str:
        call = self.chain.escrow.functions.release(batch_id, _sets(_refs(answers)))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def bonus(self, batch_id: int, worker: str, amount: str, reason: str) -> str:
        batch = self.batch(batch_id)
        units = to_base_units(amount, self.decimals(batch["token"]))
        reason_cid = self.pinner.pin(canonical_json({"format": "kempelen/bonus/1", "reason": reason}), kind="reason")
        call = self.chain.escrow.functions.bonus(batch_id, to_checksum_address(worker), units,
                                                 reason_cid.to_bytes())
        if batch["token"] == ETH:
            return self.chain.transact(self.signer.private_key, call, value=units).transactionHash.hex()
        token = self.chain.token(batch["token"])
        self.chain.transact(self.signer.private_key, token.functions.approve(self.chain.escrow.address, units))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def block_worker(self, worker: str, reason: str) -> str:
        reason_cid = self.pinner.pin(canonical_json({"format": "kempelen/block/1", "reason": reason}), kind="reason")
        call = self.chain.escrow.functions.blockWorker(to_checksum_address(worker), reason_cid.to_bytes())
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def unblock_worker(self, worker: str) -> str:
        call = self.chain.escrow.functions.unblockWorker(to_checksum_address(worker))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def extend(self, batch_id: int, *, deadline: int | None = None, answers_per_task: int | None = None,
               top_up: str = "0") -> str:
        """Later deadline (seconds from now), more answers per task, more funds."""
        batch = self.batch(batch_id)
        new_deadline = self._now() + deadline if deadline else batch["deadline"]
        units = to_base_units(top_up, self.decimals(batch["token"]))
        call = self.chain.escrow.functions.extend(
            batch_id, max(new_deadline, batch["deadline"]), answers_per_task or batch["answersPerTask"], units)
        if batch["token"] == ETH:
            return self.chain.transact(self.signer.private_key, call, value=units).transactionHash.hex()
        if units:
            token = self.chain.token(batch["token"])
            self.chain.transact(self.signer.private_key, token.functions.approve(self.chain.escrow.address, units))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    def reclaim(self, batch_id: int) -> int:
        """Take back the unused deposit (after the deadline, once nothing awaits review)."""
        receipt = self.chain.transact(self.signer.private_key, self.chain.escrow.functions.reclaim(batch_id))
        (event,) = self.chain.escrow.events.BatchReclaimed().process_receipt(receipt, errors=DISCARD)
        return event.args.amount

    def reveal_gold(self, batch: FundedBatch) -> str:
        if not batch.gold_cid or not batch.gold_salt:
            raise BatchError(f"batch {batch.batch_id} has no gold answers to reveal")
        call = self.chain.escrow.functions.revealGold(
            batch.batch_id, CID.parse(batch.gold_cid).to_bytes(), bytes.fromhex(batch.gold_salt[2:]))
        return self.chain.transact(self.signer.private_key, call).transactionHash.hex()

    # -- settlement (docs/settlement.md) -----------------------------------------------------

    def settle(self, batch_id: int, answers: Iterable | None = None, *,
               approve: Callable[[SettlementCandidate], bool] | None = None, via_relay: bool = False,
               relay: RelayClient | None = None, progress: Callable[[str], None] | None = None) -> PostedSettlement:
        """Pay held answers of a settlement-mode batch with one signed settlement.

        Pulls the signed answers the relay holds (not settled, not on the direct path); pays
        `answers` ((worker, task) pairs, each must be such an answer) or else every one `approve`
        accepts (default: all); builds and pins the manifest, signs it, and posts it with a
        transaction from this key (or, `via_relay`, has the relay post it and earn the relay
        fees). The relay is `relay` or the RelayPinner's. Raises SettlementError before any
        transaction if the escrow would refuse it.
        """
        return settlement.settle(self, batch_id, answers=answers, approve=approve, via_relay=via_relay,
                                 relay=relay, progress=progress)

    # -- state -------------------------------------------------------------------------------

    def _now(self) -> int:
        """Durations count from the chain's clock: the one the escrow compares deadlines with."""
        return self.chain.w3.eth.get_block("latest")["timestamp"]

    def batch(self, batch_id: int) -> dict:
        names = [o["name"] for o in self.chain.escrow.get_function_by_name("batch").abi["outputs"][0]["components"]]
        values = self.chain.escrow.functions.batch(batch_id).call()
        batch = dict(zip(names, values))
        if batch["requester"] == ETH:
            raise BatchError(f"unknown batch {batch_id}")
        return batch

    def balance(self, token: str = "ETH") -> dict[str, int]:
        """Base units in `token`: in the wallet, and unallocated in this requester's batches."""
        address = self.chain.token_address(token)
        locked = 0
        for batch_id in range(1, self.chain.escrow.functions.batchCount().call() + 1):
            batch = self.batch(batch_id)
            if batch["requester"] == self.signer.address and batch["token"] == address:
                locked += batch["funds"]  # unallocated, reclaimable after the deadline
        return {"wallet": self.wallet_balance(token), "unallocated_in_batches": locked}

    def wallet_balance(self, token: str = "ETH") -> int:
        address = self.chain.token_address(token)
        if address == ETH:
            return self.chain.w3.eth.get_balance(self.signer.address)
        return self.chain.token(address).functions.balanceOf(self.signer.address).call()

    def export(self, batch_id: int, format: str = "rows", fetch: Callable[[str], bytes] | None = None):
        """One record per answer: task index and CID, worker, answer CID, status, and the answer
        itself when `fetch` (CID -> verified bytes, e.g. `self.pinner.fetch`) is given;
        format="jsonl" returns them as JSON Lines text, "rows" as dicts."""
        if format not in ("rows", "jsonl"):
            raise BatchError(f"unknown export format {format!r}: use jsonl or rows")
        manifest_cid = self.manifest_cid(batch_id)
        task_cids = BatchManifest.from_json(fetch(manifest_cid)).task_cids if fetch else ()
        rows = []
        for answer in self.list_answers(batch_id):
            row = {"batch_id": batch_id, "task_index": answer.task_index,
                   "task_cid": task_cids[answer.task_index] if task_cids else None,
                   "worker": answer.worker, "answer_cid": answer.answer_cid, "status": answer.status,
                   "reason_cid": answer.reason_cid, "submitted_tx": answer.submitted_tx}
            if fetch:
                row["answer"] = fetch(answer.answer_cid).decode("utf-8", errors="replace")
            rows.append(row)
        return "".join(json.dumps(row) + "\n" for row in rows) if format == "jsonl" else rows

    def manifest_cid(self, batch_id: int) -> str:
        event_filter = self.chain.escrow.events.BatchCreated.create_filter(
            from_block=self.chain.deployment.deploy_block, argument_filters={"batchId": batch_id})
        entries = event_filter.get_all_entries()
        if not entries:
            raise BatchError(f"unknown batch {batch_id}")
        return str(CID.from_bytes(entries[0].args.manifestCid))
