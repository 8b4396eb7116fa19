"""The submitter: gets every acknowledged answer on-chain exactly once, in submitAnswers transactions.

One loop, one relayer key, one active process per database and chain (leader.py). Each
transaction is recorded, with its answers marked "submitted", in one database transaction
*before* it is broadcast; so whatever the moment of a crash, the next start finds either
queued answers or a recorded transaction it can rebroadcast byte for byte, and the relayer's
nonce lets at most one transaction per nonce land (a replacement can never double-submit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

from sqlalchemy import Engine

from kempelen.protocol.sealed import SettledBook, open_words
from kempelen.relay import jobs, outbox
from kempelen.relay.leader import LeadershipLost, SubmitterLock
from kempelen.relay.nonces import NonceManager
from kempelen.relay.packing import (
    PackingPolicy,
    QueuedAnswer,
    choose_pack,
    order_for_gas,
    split,
    submit_calldata,
    unencodable,
)
from kempelen.relay.receipts import (
    ALREADY_ANSWERED,
    SETTLEMENT_SEALED,
    AnswerOutcome,
    escrow_decoder,
    outcomes,
)
from kempelen.relay.reconcile import chain_fate, resolve_orphans
from kempelen.relay.relayer import Broadcast, PackReverts, Receipt, Relayer, SignedTx
from kempelen.relay.settlement import (
    merge_claims,
    open_settled_calldata,
    open_settled_of,
    settle_calldata,
    settle_of,
    settled_history,
    settled_in_receipt,
)

log = logging.getLogger("kempelen.relay.submitter")


@dataclass(frozen=True)
class SubmitterConfig:
    policy: PackingPolicy = field(default_factory=PackingPolicy)
    max_in_flight: int = 4  # transactions awaiting receipts at once (consecutive nonces)
    replace_after: float = 30.0  # seconds before an unmined transaction is re-priced
    reconcile_every: float = 30.0  # seconds between reconciliations with the chain
    idle_sleep: float = 0.05  # seconds to wait when there is nothing to do
    error_backoff: float = 1.0  # seconds to wait after the chain or the database failed
    drop_grace: float = 2.0  # seconds a used nonce must stay without our receipt to count as lost
    hold_check_every: float = 2.0  # seconds between looks at held (settlement-mode) answers


class Submitter:
    """Packs queued answers into transactions, follows them to their receipts, reconciles."""

    def __init__(self, engine: Engine, relayer: Relayer, config: SubmitterConfig | None = None):
        self.engine = engine
        self.relayer = relayer
        self.chain_id = relayer.chain.chain_id
        self.config = config or SubmitterConfig()
        self.lock = SubmitterLock(engine, self.chain_id)
        self.nonces = NonceManager(relayer.pending_count)
        self._next_reconcile = 0.0
        self._next_hold_check = 0.0
        self._nonce_gone_since: dict[int, float] = {}

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; stands by while another submitter holds the lock."""
        try:
            while not stop.is_set():
                try:
                    busy = self.step()
                except LeadershipLost as exc:
                    log.warning("%s; standing by", exc)
                    busy = False
                except Exception:  # the chain or the database hiccuped: log, back off, go on
                    log.exception("submitter step failed; retrying in %.1fs", self.config.error_backoff)
                    stop.wait(self.config.error_backoff)
                    continue
                if not busy:
                    stop.wait(self.config.idle_sleep)
        finally:
            self.lock.release()

    def step(self) -> bool:
        """One round: lead or stand by, settle in-flight transactions, send a pack. True if busy."""
        if not self.lock.held:
            if not self.lock.try_acquire():
                return False
            log.info("submitter active for chain %d as %s", self.chain_id, self.relayer.address)
            self.nonces = NonceManager(self.relayer.pending_count)
            self._next_reconcile = 0.0
        now = time.monotonic()
        reconciling = now >= self._next_reconcile
        if reconciling:
            self.lock.check()
            self.reconcile()
            self._next_reconcile = now + self.config.reconcile_every
        if reconciling or now >= self._next_hold_check:
            self.release_held(scan_all=reconciling)
            self._next_hold_check = now + self.config.hold_check_every
        in_flight = self.follow_transactions()
        if in_flight >= self.config.max_in_flight:
            return in_flight > 0
        if self.send_job():
            return True
        with self.engine.connect() as conn:
            head = outbox.queued(conn, self.chain_id, self.config.policy.capacity)
        pack = choose_pack(head, self.config.policy, time.time())
        if pack:
            self.send(pack)
        return bool(pack)

    def reconcile(self) -> None:
        """Follow recorded transactions (rebroadcasting unsent ones), then settle orphans."""
        self.follow_transactions()
        resolve_orphans(self.engine, self.relayer, self.chain_id)

    def drain(self, timeout: float = 600.0) -> float:
        """Run until no answer is queued or in flight; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            busy = self.step()
            with self.engine.connect() as conn:
                counts = outbox.status_counts(conn, self.chain_id)
                waiting_jobs = jobs.pending_count(conn, self.chain_id)
            if not counts.get("accepted") and not counts.get("submitted") and not waiting_jobs:
                return time.monotonic() - started
            if not busy:
                time.sleep(self.config.idle_sleep)
        raise TimeoutError(f"answers still queued after {timeout:.0f}s: {counts}")

    # ------------------------------------------------------------------ sending

    def send(self, pack: Sequence[QueuedAnswer]) -> None:
        """Sign, record, then broadcast one pack; isolate answers that make it revert."""
        pack = self._drop_unencodable(pack)
        if not pack:
            return
        ordered = order_for_gas(pack)
        calldata = submit_calldata(ordered, compact=self.config.policy.compact_signatures)
        try:
            gas = self.relayer.estimate_gas(calldata)
        except PackReverts as exc:
            self.isolate(ordered, str(exc))
            return
        nonce = self.nonces.take()
        signed = self.relayer.sign(calldata, nonce, gas, self.relayer.suggest_fees())
        try:
            with self.engine.begin() as conn:
                outbox.record_transaction(conn, self.chain_id, signed, [a.id for a in ordered])
        except Exception:
            self.nonces.give_back(nonce)
            raise
        self._broadcast_new(signed, [a.id for a in ordered])

    def _drop_unencodable(self, pack: Sequence[QueuedAnswer]) -> list[QueuedAnswer]:
        kept = []
        for answer in pack:
            reason = unencodable(answer)
            if reason is None:
                kept.append(answer)
                continue
            log.error("answer %d cannot be submitted: %s", answer.id, reason)
            with self.engine.begin() as conn:
                outbox.skip(conn, answer.id, reason)
        return kept

    def _broadcast_new(self, signed: SignedTx, answer_ids: list[int], job_ids: Sequence[int] = ()) -> None:
        outcome, message = self.relayer.broadcast(signed.raw)
        if outcome in (Broadcast.SENT, Broadcast.UNREACHABLE):
            # Unreachable: the node may have it; following the transaction will tell.
            log.debug("sent %s (nonce %d, %d answers)", signed.tx_hash, signed.nonce, len(answer_ids))
            return
        # Refused: this transaction can never be mined, so its answers go back to the queue.
        with self.engine.begin() as conn:
            outbox.set_transaction_status(conn, [signed.tx_hash], "dropped")
            outbox.requeue(conn, answer_ids, from_txs=[signed.tx_hash])
            if job_ids:
                jobs.requeue(conn, job_ids)
        if outcome in (Broadcast.NONCE_USED, Broadcast.UNDERPRICED):
            resynced = self.nonces.resync()
            log.warning("nonce %d is taken (%s): re-synced to %d", signed.nonce, message, resynced)
            return
        self.nonces.resync()
        raise RuntimeError(f"the node refused {signed.tx_hash}: {message}")

    def isolate(self, pack: Sequence[QueuedAnswer], reason: str) -> None:
        """Split a pack that reverts until the answers that cause it stand alone, and skip those.

        The escrow skips invalid answers instead of reverting, so this is the safety net for
        an escrow bug or an unexpected state: one bad answer never holds back the others.
        """
        if len(pack) == 1:
            log.error("answer %d reverts on its own (%s): skipped", pack[0].id, reason)
            with self.engine.begin() as conn:
                outbox.skip(conn, pack[0].id, f"reverted: {reason}")
            return
        for half in split(pack):
            self.send(half)

    # ------------------------------------------------------------------ following

    def follow_transactions(self) -> int:
        """Settle mined transactions, rebroadcast or re-price unmined ones; returns how many are in flight."""
        with self.engine.connect() as conn:
            pending = outbox.pending_transactions(conn, self.chain_id)
        if not pending:
            return 0
        mined_count = self.relayer.mined_count()  # read before receipts: see _follow_nonce
        in_flight = 0
        for nonce, group in groupby(pending, key=lambda tx: tx.nonce):
            in_flight += self._follow_nonce(nonce, list(group), mined_count)
        return in_flight

    def _follow_nonce(self, nonce: int, group: list[outbox.TxRecord], mined_count: int) -> int:
        """One nonce's transactions (a pack and its replacements): at most one of them lands."""
        for tx in group:
            receipt = self.relayer.receipt(tx.tx_hash)
            if receipt is not None:
                self.settle(tx, receipt, [other.tx_hash for other in group if other is not tx])
                return 0
        if nonce < mined_count and self._nonce_taken_by_another(nonce, group):
            with self.engine.begin() as conn:
                outbox.set_transaction_status(conn, [tx.tx_hash for tx in group], "dropped")
                jobs.requeue(conn, [job.id for job in jobs.sent_in(conn, [tx.tx_hash for tx in group])])
            log.warning("nonce %d was used by a transaction not ours: %d answers to reconcile",
                        nonce, len(group[-1].answer_ids))
            resolve_orphans(self.engine, self.relayer, self.chain_id)
            self.nonces.resync()
            return 0
        if nonce < mined_count:
            return 1  # mined a moment ago: its receipt is not served yet
        newest = group[-1]
        if time.time() - newest.sent_at.timestamp() >= self.config.replace_after:
            self.replace(newest)
        elif newest.raw_tx is not None and not self.relayer.is_known(newest.tx_hash):
            # Recorded but never broadcast (a crash in between), or dropped from the mempool.
            _, message = self.relayer.broadcast(newest.raw_tx)
            log.info("rebroadcast %s (nonce %d): %s", newest.tx_hash, nonce, message)
        if self.nonces.next is not None and self.nonces.next <= nonce:
            self.nonces.resync(at_least=nonce + 1)
        return 1

    def _nonce_taken_by_another(self, nonce: int, group: list[outbox.TxRecord]) -> bool:
        """The nonce is used and none of ours has a receipt: sure only if it stays so a while.

        Nodes update an account's nonce a moment before they serve the receipt (anvil does, and
        load-balanced RPC endpoints lag), so a single look could declare a mined transaction
        dropped; a node that still knows one of ours, or a grace period not yet over, means wait.
        """
        if any(self.relayer.is_known(tx.tx_hash) for tx in group):
            return False
        first_seen = self._nonce_gone_since.setdefault(nonce, time.monotonic())
        if time.monotonic() - first_seen < self.config.drop_grace:
            return False
        del self._nonce_gone_since[nonce]
        return True

    def replace(self, stuck: outbox.TxRecord) -> None:
        """Re-sign a stuck transaction's pack at the same nonce with fees raised by at least 12.5%."""
        with self.engine.connect() as conn:
            pack = order_for_gas(outbox.answers_by_id(conn, stuck.answer_ids))
            carried = jobs.sent_in(conn, [stuck.tx_hash]) if stuck.job_id is not None else []
        job_ids = [job.id for job in carried]
        if carried:
            calldata = carried[0].calldata if len(carried) == 1 else merge_claims(carried)[1]
        else:
            calldata = submit_calldata(pack, compact=self.config.policy.compact_signatures)
        fees = stuck.fees.bumped(at_least=self.relayer.suggest_fees())
        gas = stuck.gas_limit or self.relayer.estimate_gas(calldata)
        signed = self.relayer.sign(calldata, stuck.nonce, gas, fees)
        ids = [a.id for a in pack]
        with self.engine.begin() as conn:
            outbox.record_transaction(conn, self.chain_id, signed, ids, replaces=stuck.tx_hash,
                                      job_id=stuck.job_id)
            if job_ids:
                jobs.mark_sent(conn, job_ids, signed.tx_hash)
        outcome, message = self.relayer.broadcast(signed.raw)
        log.warning("replaced stuck %s with %s (nonce %d, max fee %d): %s", stuck.tx_hash,
                    signed.tx_hash, stuck.nonce, fees.price_cap, message)
        if outcome in (Broadcast.SENT, Broadcast.UNREACHABLE, Broadcast.NONCE_USED):
            return  # nonce used: the stuck one (or another) was mined; receipts will tell
        with self.engine.begin() as conn:
            outbox.set_transaction_status(conn, [signed.tx_hash], "dropped")
            outbox.repoint(conn, ids, signed.tx_hash, stuck.tx_hash)
            if job_ids:
                jobs.mark_sent(conn, job_ids, stuck.tx_hash)

    def settle(self, tx: outbox.TxRecord, receipt: Receipt, siblings: list[str]) -> None:
        """Write what a mined transaction did to each of its answers."""
        if tx.job_id is not None:
            self.finish_job(tx, receipt, siblings)
            return
        with self.engine.connect() as conn:
            pack = outbox.answers_by_id(conn, tx.answer_ids)
        if receipt.status != 1:
            log.error("transaction %s reverted: isolating its %d answers", tx.tx_hash, len(pack))
            with self.engine.begin() as conn:
                outbox.set_transaction_status(conn, [tx.tx_hash], "failed", receipt.block_number)
                outbox.set_transaction_status(conn, siblings, "replaced")
                outbox.requeue(conn, tx.answer_ids, from_txs=[tx.tx_hash, *siblings])
            if len(pack) == 1:
                self.isolate(pack, "the transaction reverted")
            else:
                for half in split(pack):  # halving guarantees progress even if estimates pass
                    self.send(half)
            return
        events = escrow_decoder().decode_all(receipt.logs)
        results = outcomes([(a.id, a.key) for a in pack], events, self.relayer.escrow)
        results = [self._already_ours(a, r) for a, r in zip(pack, results)]
        # SettlementSealed is no fate: a settlement sealed the worker's words in the batch since
        # the answer was released (or before a direct batch's answer came). Held again, the next
        # release_held marks it settled or opens the worker's words and sends it again.
        sealed = [r.answer_id for r in results if r.status == "skipped" and r.skip_reason == SETTLEMENT_SEALED]
        with self.engine.begin() as conn:
            outbox.settle(conn, tx.tx_hash, [r for r in results if r.answer_id not in set(sealed)])
            outbox.rehold(conn, sealed)
            outbox.set_transaction_status(conn, [tx.tx_hash], "mined", receipt.block_number)
            outbox.set_transaction_status(conn, siblings, "replaced")
        if sealed:
            log.info("%d answers of %s skipped as SettlementSealed: held again, to go direct once their "
                     "workers' settled words are opened", len(sealed), tx.tx_hash)
            self._next_hold_check = 0.0
        # "missing" answers stay submitted under a mined transaction: orphans, reconciled next.
        if any(r.status == "missing" for r in results):
            resolve_orphans(self.engine, self.relayer, self.chain_id)

    def _already_ours(self, answer: QueuedAnswer, result: AnswerOutcome) -> AnswerOutcome:
        """AlreadyAnswered because our own earlier transaction landed it is no loss: on-chain."""
        if result.status != "skipped" or result.skip_reason != ALREADY_ANSWERED:
            return result
        fate = chain_fate(self.relayer, answer)
        if fate is not None and fate.status == "onchain":
            return AnswerOutcome(answer.id, "onchain", fate.block_number, tx_hash=fate.tx_hash)
        if fate is None and self.relayer.is_settled(answer.batch_id, answer.worker, answer.task_index):
            # A settlement paid it between the fallback and this pack: one answer, one path.
            return AnswerOutcome(answer.id, "settled", result.block_number)
        return result

    # ------------------------------------------------------------------ settlement mode

    def release_held(self, scan_all: bool = False) -> None:
        """Held answers of settlement-mode batches: mark those a settlement paid "settled"; past
        their hold time, send the rest on the direct path (the safety valve). Settlements are
        looked up for due batches each time, and for every batch with held answers when
        `scan_all` (each reconciliation), so receipts show "settled" without waiting.

        A worker with settled words in the batch that are still sealed would have every answer
        skipped (SettlementSealed): its due held answers wait, and an "open" job (openSettled)
        is queued for it; once SettledWordsOpened is on-chain they are released like the rest."""
        with self.engine.connect() as conn:
            held = outbox.held_batches(conn, self.chain_id)
        if not held:
            return
        now = self.relayer.chain_time()
        for batch_id, first_due in held:
            due = first_due <= now
            if not due and not scan_all:
                continue
            history = settled_history(self.relayer.chain, batch_id)
            released, opening = 0, []
            with self.engine.begin() as conn:
                settled = outbox.mark_settled(conn, self.chain_id, batch_id, history.paid)
                if due:
                    rows = outbox.due_held(conn, self.chain_id, batch_id, now)
                    sealed = {w.lower() for _, w in rows if history.book.is_sealed(w)}
                    released = outbox.release(conn, [i for i, w in rows if w.lower() not in sealed])
                    opening = self._queue_opens(conn, batch_id, sealed, history.book)
            if settled or released or opening:
                log.info("batch %d: %d held answers settled, %d past their hold time sent direct%s",
                         batch_id, settled, released,
                         f"; opening the sealed settled words of {len(opening)} workers first" if opening else "")

    def _queue_opens(self, conn, batch_id: int, sealed: set[str], book: SettledBook) -> list[str]:
        """Queue openSettled for each sealed worker (lower-case) without one queued or sent."""
        queued = sorted(sealed - jobs.opening(conn, self.chain_id, batch_id))
        for worker in queued:
            calldata = open_settled_calldata(batch_id, worker, open_words(book.of_worker(worker)))
            jobs.add(conn, self.chain_id, "open", calldata, batch_id=batch_id, requested_by=worker)
        return queued

    def send_job(self) -> bool:
        """Send the oldest queued settle/claim/open job, a claim with every queued claim that can
        share its claimMany (relay/settlement.py merge_claims); True if one was taken (sent or failed)."""
        with self.engine.connect() as conn:
            job = jobs.next_queued(conn, self.chain_id)
            queued = jobs.queued_claims(conn, self.chain_id) if job is not None and job.kind == "claim" else []
        if job is None:
            return False
        if job.kind in ("settle", "open"):
            job = self._up_to_date(job)
            if job is None:
                return True
        group, calldata, gas = self._job_transaction(job, queued)
        if not group:
            return True
        ids = [j.id for j in group]
        nonce = self.nonces.take()
        signed = self.relayer.sign(calldata, nonce, gas, self.relayer.suggest_fees())
        try:
            with self.engine.begin() as conn:
                outbox.record_transaction(conn, self.chain_id, signed, [], job_id=job.id)
                jobs.mark_sent(conn, ids, signed.tx_hash)
        except Exception:
            self.nonces.give_back(nonce)
            raise
        self._broadcast_new(signed, [], job_ids=ids)
        return True

    def _up_to_date(self, job: jobs.Job) -> jobs.Job | None:
        """The job with what the chain's settled words say now, whatever they said when it was
        queued: a settle's unsigned `before` (the escrow ignores it for a worker whose words were
        opened meanwhile, so such a settlement still goes), an openSettled's words (the worker may
        have been settled again since). None if an open job has become pointless (its worker's
        words were opened meanwhile: failed, nothing sent)."""
        try:
            if job.kind == "settle":
                settlement, _, signature = settle_of(job.calldata)
                book = settled_history(self.relayer.chain, settlement.batch_id).book
                calldata = settle_calldata(settlement, book.before(settlement.settled), signature)
            else:
                batch_id, worker, _ = open_settled_of(job.calldata)
                book = settled_history(self.relayer.chain, batch_id).book
                if not book.is_sealed(worker):
                    with self.engine.begin() as conn:
                        jobs.mark_done(conn, job.id, "failed", error=f"{worker}'s settled words in batch {batch_id} "
                                       "are not sealed (opened meanwhile, or none): nothing to open")
                    self._next_hold_check = 0.0
                    return None
                calldata = open_settled_calldata(batch_id, worker, open_words(book.of_worker(worker)))
        except ValueError as exc:  # not the call its kind says: it goes as queued, and the escrow judges
            log.error("%s job %d: %s", job.kind, job.id, exc)
            return job
        if calldata != job.calldata:
            with self.engine.begin() as conn:
                jobs.set_calldata(conn, job.id, calldata)
        return replace(job, calldata=calldata)

    def _job_transaction(self, job: jobs.Job, queued: list[jobs.Job]) -> tuple[list[jobs.Job], bytes, int]:
        """The jobs one transaction carries, its calldata and gas: queued claims merged if the
        merge does not revert, else the job alone; no jobs if the job alone would revert (failed)."""
        group, merged = merge_claims(queued) if len(queued) > 1 else ([], b"")
        if len(group) > 1 and group[0].id == job.id:
            try:
                return group, merged, self.relayer.estimate_gas(merged)
            except PackReverts as exc:
                log.info("%d claim jobs would revert together (%s): job %d goes alone", len(group), exc, job.id)
        try:
            return [job], job.calldata, self.relayer.estimate_gas(job.calldata)
        except PackReverts as exc:
            log.warning("relayed %s job %d would revert: %s", job.kind, job.id, exc)
            with self.engine.begin() as conn:
                jobs.mark_done(conn, job.id, "failed", error=str(exc))
            return [], b"", 0

    def finish_job(self, tx: outbox.TxRecord, receipt: Receipt, siblings: list[str]) -> None:
        """A relayed settle/claim was mined: record it for every job it carried, and mark the
        answers a settlement paid."""
        with self.engine.connect() as conn:
            job = jobs.get(conn, tx.job_id)
            carried = {tx.job_id} | {j.id for j in jobs.sent_in(conn, [tx.tx_hash, *siblings])}
        paid = settled_in_receipt(receipt, self.relayer.escrow, tx.tx_hash) if receipt.status == 1 else {}
        with self.engine.begin() as conn:
            outbox.set_transaction_status(conn, [tx.tx_hash], "mined" if receipt.status == 1 else "failed",
                                          receipt.block_number)
            outbox.set_transaction_status(conn, siblings, "replaced")
            if receipt.status == 1:
                jobs.mark_done(conn, sorted(carried), "mined", block_number=receipt.block_number, tx_hash=tx.tx_hash)
            elif len(carried) > 1:
                # Merged claims the chain changed under (one was claimed meanwhile): each is
                # tried again, and one that now reverts on its own fails alone.
                log.warning("claimMany %s of %d jobs reverted: requeued", tx.tx_hash, len(carried))
                jobs.requeue(conn, sorted(carried))
            else:
                jobs.mark_done(conn, sorted(carried), "failed", block_number=receipt.block_number,
                               tx_hash=tx.tx_hash, error="the transaction reverted")
            if job is not None and job.kind == "settle" and job.batch_id is not None:
                outbox.mark_settled(conn, self.chain_id, job.batch_id, paid)
        if receipt.status == 1 and job is not None and job.kind == "open":
            self._next_hold_check = 0.0  # its worker's held answers can go direct now


def open_submitter(database_url: str, rpc_url: str, relayer_key: str, *,
                   config: SubmitterConfig | None = None, deployment=None) -> Submitter:
    """A submitter on `database_url` for `deployment` (default: the chain's deployment file)."""
    from kempelen.chain.contracts import Chain
    from kempelen.db import make_engine

    return Submitter(make_engine(database_url), Relayer(Chain(rpc_url, deployment), relayer_key), config)


def seconds_to_all_onchain(database_url: str, rpc_url: str, relayer_key: str, *,
                           config: SubmitterConfig | None = None, deployment=None,
                           timeout: float = 600.0) -> float:
    """Run a submitter in this process until every queued answer is settled; the seconds it took.

    For benchmarks: `python -m kempelen.relay.submitter --drain` prints the same figure.
    """
    submitter = open_submitter(database_url, rpc_url, relayer_key, config=config, deployment=deployment)
    try:
        return submitter.drain(timeout)
    finally:
        submitter.lock.release()
        submitter.engine.dispose()


def main() -> None:
    """`python -m kempelen.relay.submitter`: the submitter alone (options or KEMPELEN_* variables)."""
    from kempelen.relay.cli import submit_app

    submit_app(prog_name="python -m kempelen.relay.submitter")


if __name__ == "__main__":
    main()
