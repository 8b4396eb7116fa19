"""Replaying one escrow's events in chain order: every batch's money and every answer's life.

Pure: events, block timestamps and transaction senders in; balances, answer states and
findings for checks 1 (money, event by event), 2 (payouts) and 6 (timing) out. Money
moves exactly as ITaskEscrow's (and ISettlement's) event docs say it does, so whatever the
contract did differently shows up against its own state at the end (checks.balance_sheet).
The settlement path's handlers live in settlement_replay, mixed in.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from kempelen.audit.model import (
    MONEY,
    PAYOUTS,
    TIMING,
    BatchTotals,
    Finding,
    Payment,
    ReviewDelay,
    TokenTotals,
)
from kempelen.audit.settlement_replay import SettlementReplay, SettlementState
from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID
from kempelen.protocol.events import Event, reviewed_tasks, submitted_answers

TASKS_PER_GROUP = 96  # ITaskEscrow: one review clock per worker per 96 tasks of a batch
PENDING, PAID, REJECTED = "pending", "paid", "rejected"
OUTCOMES = {"AnswersApproved": 0, "AnswersRejected": 1, "AnswersReleased": 2}  # IReputation.Outcome
OUTCOME_NAMES = ("approved", "rejected", "released")


@dataclass
class AnswerLife:
    status: str
    submitted_at: int


@dataclass
class BatchLedger:
    totals: BatchTotals
    funds: int  # unallocated, as the contract should hold it
    pending: int = 0
    pool: int = 0  # settled, not yet claimed (ISettlement)
    overspent: bool = False


@dataclass(frozen=True)
class SubmittedAnswer:
    batch: int
    task: int
    worker: str
    digest: bytes
    block: int
    tx: str
    log_index: int


@dataclass(frozen=True)
class ReasonRef:
    """A content-addressed reason (rejection or bonus) and where it was given."""

    raw: bytes
    event: Event
    batch: int
    task: int | None
    worker: str


class Replay(SettlementReplay):
    def __init__(self, escrow: str, block_times: dict[int, int], senders: dict[str, tuple[str, str | None]]):
        self.escrow = escrow
        self.block_times = block_times
        self.senders = senders
        self.findings: list[Finding] = []
        self.batches: dict[int, BatchLedger] = {}
        self.answers: dict[tuple[int, str, int], AnswerLife] = {}
        self.group_latest: dict[tuple[int, str, int], int] = {}
        self.task_answers: Counter[tuple[int, int]] = Counter()
        self.accounts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.tokens: dict[str, TokenTotals] = {}
        self.submitted: list[SubmittedAnswer] = []
        self.rejection_reasons: list[ReasonRef] = []
        self.bonus_reasons: list[ReasonRef] = []
        # tx -> (worker, requester, outcome) -> count: what Reputation must record in that tx
        self.outcomes: defaultdict[str, Counter] = defaultdict(Counter)
        self.payments: list[Payment] = []
        self.delays: list[ReviewDelay] = []
        self.earnings: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.settlement = SettlementState()

    def run(self, events: list[Event]) -> Replay:
        for event in events:
            if event.address == self.escrow:
                handler = getattr(self, f"_on_{event.name}", None)
                if handler is not None:
                    handler(event)
        for ledger in self.batches.values():
            ledger.totals.locked_replayed = ledger.funds + ledger.pending * ledger.totals.reward + ledger.pool
        return self

    # -- helpers ----------------------------------------------------------------------

    def _find(self, check: str, code: str, message: str, event: Event, *, severity: str = "discrepancy",
              batch: int | None = None, task: int | None = None, worker: str | None = None) -> None:
        self.findings.append(Finding(check, code, message, severity, event.block_number,
                                     event.transaction_hash, batch, task, worker))

    def _time(self, event: Event) -> int:
        return self.block_times[event.block_number]

    def _token(self, token: str) -> TokenTotals:
        if token not in self.tokens:
            self.tokens[token] = TokenTotals(token)
        return self.tokens[token]

    def _batch(self, event: Event, task: int | None = None) -> BatchLedger | None:
        batch_id = event.args["batchId"]
        ledger = self.batches.get(batch_id)
        if ledger is None:
            self._find(MONEY, "unknown_batch",
                       f"{event.name} names batch {batch_id}, which no BatchCreated in the audited range created "
                       "(audit from an earlier --from-block)", event, batch=batch_id,
                       worker=event.args.get("worker"), task=event.args.get("taskIndex", task))
        return ledger

    # -- batches ----------------------------------------------------------------------

    def _on_BatchCreated(self, e: Event) -> None:
        a = e.args
        batch_id = a["batchId"]
        expected = a["taskCount"] * a["answersPerTask"] * (a["reward"] + a["relayFee"])
        if a["deposit"] != expected:
            self._find(MONEY, "wrong_deposit", f"batch {batch_id} deposited {a['deposit']}, its terms require "
                       f"{expected} (taskCount x answersPerTask x (reward + relayFee))", e, batch=batch_id)
        if batch_id in self.batches:
            self._find(MONEY, "batch_created_twice", f"batch {batch_id} created a second time", e, batch=batch_id)
            return
        try:
            manifest = str(CID.from_bytes(a["manifestCid"]))
        except InvalidCID:
            manifest = "0x" + a["manifestCid"].hex()
        totals = BatchTotals(
            batch=batch_id, requester=a["requester"], token=a["token"], reward=a["reward"],
            relay_fee=a["relayFee"], task_count=a["taskCount"], answers_per_task=a["answersPerTask"],
            deadline=a["deadline"], review_window=a["reviewWindow"], manifest_cid=manifest,
            created_block=e.block_number, deposited=a["deposit"],
        )
        self.batches[batch_id] = BatchLedger(totals, funds=a["deposit"])
        self._token(a["token"]).deposited += a["deposit"]

    def _on_BatchExtended(self, e: Event) -> None:
        ledger = self._batch(e)
        if ledger is None:
            return
        totals = ledger.totals
        if e.args["deadline"] < totals.deadline or e.args["answersPerTask"] < totals.answers_per_task:
            self._find(TIMING, "extension_shortened", f"batch {totals.batch} extension lowered its deadline or "
                       "answers per task", e, batch=totals.batch)
        totals.deadline, totals.answers_per_task = e.args["deadline"], e.args["answersPerTask"]
        ledger.funds += e.args["topUp"]
        totals.deposited += e.args["topUp"]
        self._token(totals.token).topped_up += e.args["topUp"]

    def _on_BatchReclaimed(self, e: Event) -> None:
        ledger = self._batch(e)
        if ledger is None:
            return
        totals, amount = ledger.totals, e.args["amount"]
        if self._time(e) <= totals.deadline:
            self._find(TIMING, "reclaimed_before_deadline", f"batch {totals.batch} reclaimed at "
                       f"{self._time(e)}, not after its deadline {totals.deadline}", e, batch=totals.batch)
        if ledger.pending:
            self._find(TIMING, "reclaimed_with_pending", f"batch {totals.batch} reclaimed while "
                       f"{ledger.pending} answers still awaited review", e, batch=totals.batch)
        if e.args["requester"] != totals.requester:
            self._find(MONEY, "refund_to_stranger", f"batch {totals.batch} refunded to {e.args['requester']}, "
                       f"not its requester {totals.requester}", e, batch=totals.batch)
        if amount != ledger.funds:
            kind = "under_refund" if amount < ledger.funds else "over_refund"
            self._find(MONEY, kind, f"batch {totals.batch} refunded {amount} but {ledger.funds} was "
                       "unallocated: a reclaim returns all of it", e, batch=totals.batch)
        ledger.funds -= amount
        totals.refunded += amount
        self._token(totals.token).reclaimed += amount

    # -- answers ----------------------------------------------------------------------

    def _on_AnswerSkipped(self, e: Event) -> None:
        ledger = self.batches.get(e.args["batchId"])
        if ledger is not None:
            ledger.totals.skipped += 1

    def _on_AnswersSubmitted(self, e: Event) -> None:
        """A submission event names a worker's accepted answers in one 96-task group: each is
        accepted alone. One whose task bitmap and digests disagree names no answer for sure."""
        try:
            answers = submitted_answers(e.args)
        except ValueError as exc:
            self._find(PAYOUTS, "submission_malformed", f"{exc}: which answers it accepted cannot be "
                       "told, so none of them is replayed", e, batch=e.args["batchId"], worker=e.args["worker"])
            return
        for task, digest in answers:
            self._submit(e, task, digest)

    def _submit(self, e: Event, task: int, digest: bytes) -> None:
        ledger = self._batch(e, task)
        if ledger is None:
            return
        totals, now = ledger.totals, self._time(e)
        batch_id, worker = totals.batch, e.args["worker"]
        where = {"batch": batch_id, "task": task, "worker": worker}
        if now > totals.deadline:
            self._find(TIMING, "submitted_after_deadline", f"answer accepted at {now}, after batch deadline "
                       f"{totals.deadline}", e, **where)
        if task >= totals.task_count:
            self._find(PAYOUTS, "task_out_of_range", f"task {task} accepted; batch has {totals.task_count}",
                       e, **where)
        key = (batch_id, worker, task)
        if key in self.answers:
            self._find(PAYOUTS, "answered_twice", "a second answer of this worker to this task was accepted",
                       e, **where)
        self._check_not_settled(e, batch_id, worker, task)
        self.task_answers[(batch_id, task)] += 1
        if self.task_answers[(batch_id, task)] > totals.answers_per_task:
            self._find(PAYOUTS, "task_over_answered", f"more than {totals.answers_per_task} answers held for "
                       "this task", e, **where)
        self.answers[key] = AnswerLife(PENDING, now)
        group = (batch_id, worker, task // TASKS_PER_GROUP)
        self.group_latest[group] = max(self.group_latest.get(group, 0), now)
        ledger.funds -= totals.reward + totals.relay_fee
        if ledger.funds < 0 and not ledger.overspent:
            ledger.overspent = True
            self._find(MONEY, "batch_overspent", f"batch {batch_id} accepted answers it had no funds for", e,
                       **where)
        ledger.pending += 1
        totals.submitted += 1
        totals.fees += totals.relay_fee
        self.accounts[(totals.token, e.args["relayer"])] += totals.relay_fee
        self._token(totals.token).relay_fees += totals.relay_fee
        self.submitted.append(SubmittedAnswer(batch_id, task, worker, digest, e.block_number, e.transaction_hash,
                                              e.log_index))

    def _on_AnswersApproved(self, e: Event) -> None:
        self._reviews(e, "approved")

    def _on_AnswersReleased(self, e: Event) -> None:
        self._reviews(e, "released")

    def _on_AnswersRejected(self, e: Event) -> None:
        self._reviews(e, "rejected")

    def _reviews(self, e: Event, outcome: str) -> None:
        """A review event names a worker's answers in one 96-task group: each is reviewed alone."""
        for task in reviewed_tasks(e.args):
            self._review(e, outcome, task)

    def _review(self, e: Event, outcome: str, task: int) -> None:
        ledger = self._batch(e, task)
        if ledger is None:
            return
        totals, now = ledger.totals, self._time(e)
        worker = e.args["worker"]
        where = {"batch": totals.batch, "task": task, "worker": worker}
        answer = self.answers.get((totals.batch, worker, task))
        self.outcomes[e.transaction_hash][(worker, totals.requester, OUTCOMES[e.name])] += 1
        if outcome != "released":
            sender, to = self.senders.get(e.transaction_hash, (None, None))
            if to == self.escrow and sender != totals.requester:
                self._find(PAYOUTS, "reviewed_by_stranger", f"answer {outcome} by {sender}, not the batch's "
                           f"requester {totals.requester}", e, **where)
        if outcome == "rejected":
            self._reject(e, ledger, answer, where)
            return
        if answer is None:
            self._find(PAYOUTS, "payout_without_answer", f"reward {outcome} for an answer never submitted", e,
                       **where)
        elif answer.status == PAID:
            self._find(PAYOUTS, "paid_twice", f"answer {outcome} after it was already paid", e, **where)
        elif answer.status == REJECTED:
            self._find(PAYOUTS, "paid_after_rejection", f"answer {outcome} after it was rejected", e, **where)
        if answer is not None and answer.status == PENDING:
            self._check_window(e, ledger, answer, outcome, where)
            ledger.pending -= 1
            answer.status = PAID
        else:
            ledger.funds -= totals.reward  # the reward can only have come out of the batch's funds
        totals.paid += totals.reward
        setattr(totals, outcome, getattr(totals, outcome) + 1)
        self.accounts[(totals.token, worker)] += totals.reward
        self.earnings[(totals.token, worker)] += totals.reward
        self._token(totals.token).paid_to_workers += totals.reward
        self.payments.append(Payment(now, totals.token, worker, totals.reward, outcome))

    def _reject(self, e: Event, ledger: BatchLedger, answer: AnswerLife | None, where: dict) -> None:
        totals = ledger.totals
        if answer is None or answer.status != PENDING:
            state = "never submitted" if answer is None else f"already {answer.status}"
            self._find(PAYOUTS, "rejected_not_pending", f"rejection of an answer {state}", e, **where)
        else:
            self._check_window(e, ledger, answer, "rejected", where)
            ledger.pending -= 1
            ledger.funds += totals.reward
            answer.status = REJECTED
            self.task_answers[(totals.batch, where["task"])] -= 1
        totals.rejected += 1
        self.rejection_reasons.append(ReasonRef(e.args["reasonCid"], e, totals.batch, where["task"], where["worker"]))

    def _check_window(self, e: Event, ledger: BatchLedger, answer: AnswerLife, outcome: str, where: dict) -> None:
        """ITaskEscrow's rule: deadline = the worker's latest submission in the 96-task group + window."""
        totals, now = ledger.totals, self._time(e)
        latest = self.group_latest[(totals.batch, where["worker"], where["task"] // TASKS_PER_GROUP)]
        deadline = latest + totals.review_window
        self.delays.append(ReviewDelay(outcome, now - answer.submitted_at, totals.review_window))
        if outcome == "released" and now <= deadline:
            self._find(TIMING, "released_inside_window", f"released at {now}, inside the review window "
                       f"(deadline {deadline})", e, **where)
        elif outcome != "released" and now > deadline:
            self._find(TIMING, "reviewed_after_window", f"{outcome} at {now}, after the review deadline "
                       f"{deadline}", e, **where)

    # -- accounts ---------------------------------------------------------------------

    def _on_BonusPaid(self, e: Event) -> None:
        ledger = self._batch(e)
        if ledger is None:
            return
        token, worker, amount = ledger.totals.token, e.args["worker"], e.args["amount"]
        self._token(token).bonuses += amount
        self.accounts[(token, worker)] += amount
        self.earnings[(token, worker)] += amount
        self.payments.append(Payment(self._time(e), token, worker, amount, "bonus"))
        if e.args["reasonCid"]:
            self.bonus_reasons.append(ReasonRef(e.args["reasonCid"], e, ledger.totals.batch, None, worker))

    def _on_Withdrawn(self, e: Event) -> None:
        token, account, amount = e.args["token"], e.args["account"], e.args["amount"]
        owed = self.accounts[(token, account)]
        if amount != owed:
            code = "overdrawn" if amount > owed else "short_withdrawal"
            self._find(MONEY, code, f"{account} withdrew {amount} while owed {owed}: a withdrawal pays the whole "
                       "balance, no more", e, worker=account)
        self.accounts[(token, account)] -= amount
        self._token(token).withdrawn += amount
