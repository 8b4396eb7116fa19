"""Pure core of the indexer: decoded events -> `chain_events` rows -> changes to the projections.

No I/O: the store loads what a chunk needs (the terms of the batches it mentions), hands
rows in and writes the `Changes` out. Rows are the stored form of events (JSON-safe args),
so a chunk fresh from the node and events read back from the database project identically,
which is what lets a reorg rebuild projections from the events that remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.events import (
    REVIEW_OUTCOMES,
    Event,
    recorded_outcomes,
    reviewed_tasks,
    submitted_answers,
)
from kempelen.protocol.signing import SettledWord

# JSON numbers above 2**53 lose precision in JavaScript and in some JSON readers.
_JSON_SAFE_INT = 2**53

BATCH_COUNTERS = (
    "funds", "pending", "answers_submitted", "answers_approved", "answers_rejected",
    "answers_released", "rewards_paid", "relay_fees_paid", "bonuses_paid", "topped_up", "reclaimed",
    "answers_settled", "settled_rewards", "claimed",
)
REPUTATION_COUNTERS = (
    "worker_approved", "worker_rejected", "worker_released",
    "requester_approved", "requester_rejected", "requester_released",
)
_OUTCOMES = ("approved", "rejected", "released")  # IReputation.Outcome order
_REVIEWS = REVIEW_OUTCOMES

AnswerKey = tuple[int, str, int]  # (batch_id, worker, task_index)
BalanceKey = tuple[str, str]  # (token, account)
SettlementKey = tuple[int, int]  # (batch_id, sequence)
ClaimKey = tuple[int, str, int]  # (batch_id, worker, cumulative)
OpenedKey = tuple[int, str]  # (batch_id, worker)


def json_value(value: Any) -> Any:
    """An ABI value in JSON-safe form: big ints as decimal strings, bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -_JSON_SAFE_INT <= value <= _JSON_SAFE_INT else str(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):  # a struct, e.g. AnswersSettled's SettledWord
        return {name: json_value(item) for name, item in value.items()}
    raise TypeError(f"unexpected ABI value {value!r}")


def event_row(chain_id: int, event: Event) -> dict:
    """The `chain_events` row of a decoded event."""
    args = {name: json_value(value) for name, value in event.args.items()}
    batch_id = event.args.get("batchId")
    return {
        "chain_id": chain_id,
        "block_number": event.block_number,
        "log_index": event.log_index,
        "block_hash": event.block_hash,
        "transaction_hash": event.transaction_hash,
        "transaction_index": event.transaction_index,
        "address": event.address,
        "name": event.name,
        "args": args,
        # uint64 ids past int64 only occur in skipped answers to batches that cannot exist.
        "batch_id": batch_id if isinstance(batch_id, int) and batch_id < 2**63 else None,
    }


def cid_text(hex_bytes: str) -> str:
    """A binary CID from an event as its string form; bytes that are no CID stay 0x hex."""
    try:
        return str(CID.from_bytes(bytes.fromhex(hex_bytes[2:])))
    except (InvalidCID, ValueError):
        return hex_bytes  # a CID string never starts with 0x, so nothing is lost or confused


@dataclass(frozen=True)
class BatchTerms:
    """The immutable terms that price a batch's answers."""

    token: str
    reward: int
    relay_fee: int


def referenced_batches(rows: Iterable[dict]) -> set[int]:
    return {row["batch_id"] for row in rows if row["batch_id"] is not None}


@dataclass
class Changes:
    """What a run of events does to the projections.

    New batches, answers, settlements, settled answers, claims and opened settled words are
    complete rows;
    `batch_deltas` add to batches (counters) and overwrite their latest terms; `reviews` update
    answers submitted before this run.
    """

    batches: dict[int, dict] = field(default_factory=dict)
    batch_deltas: dict[int, dict] = field(default_factory=dict)
    answers: dict[AnswerKey, dict] = field(default_factory=dict)
    reviews: dict[AnswerKey, dict] = field(default_factory=dict)
    settlements: dict[SettlementKey, dict] = field(default_factory=dict)
    settled_answers: dict[AnswerKey, dict] = field(default_factory=dict)
    claims: dict[ClaimKey, dict] = field(default_factory=dict)
    opened: dict[OpenedKey, dict] = field(default_factory=dict)
    balances: dict[BalanceKey, list[int]] = field(default_factory=dict)  # [credited, withdrawn]
    reputation: dict[str, list[int]] = field(default_factory=dict)  # REPUTATION_COUNTERS order

    def negated_accounts(self) -> Changes:
        """Only the additive account projections, with the opposite sign: undoes a run."""
        return Changes(
            balances={k: [-v for v in values] for k, values in self.balances.items()},
            reputation={k: [-v for v in values] for k, values in self.reputation.items()},
        )


class Projector:
    """Folds `chain_events` rows, in chain order, into `Changes`."""

    def __init__(self, chain_id: int, terms: Mapping[int, BatchTerms]):
        self.chain_id = chain_id
        self.terms = dict(terms)
        self.changes = Changes()

    def apply_all(self, rows: Iterable[dict]) -> Changes:
        for row in rows:
            self.apply(row)
        return self.changes

    def apply(self, row: dict) -> None:
        handler = _HANDLERS.get(row["name"])
        if handler is not None:
            handler(self, row, row["args"])

    # -- helpers -------------------------------------------------------------

    def _delta(self, batch_id: int, block: int) -> dict:
        delta = self.changes.batch_deltas.get(batch_id)
        if delta is None:
            delta = self.changes.batch_deltas[batch_id] = dict.fromkeys(BATCH_COUNTERS, 0)
        delta["updated_block"] = block
        return delta

    def _credit(self, token: str, account: str, amount: int, column: int = 0) -> None:
        if amount == 0:
            return  # no row for nothing, so undoing a run can drop rows that fall back to zero
        entry = self.changes.balances.setdefault((token, account), [0, 0])
        entry[column] += amount

    def _tally(self, account: str, counter: str, count: int) -> None:
        if count == 0:
            return  # no row for nothing, as for balances
        counters = self.changes.reputation.setdefault(account, [0] * len(REPUTATION_COUNTERS))
        counters[REPUTATION_COUNTERS.index(counter)] += count

    # -- handlers --------------------------------------------------------------

    def batch_created(self, row: dict, args: dict) -> None:
        batch_id = int(args["batchId"])
        self.terms[batch_id] = BatchTerms(args["token"], int(args["reward"]), int(args["relayFee"]))
        self.changes.batches[batch_id] = {
            "chain_id": self.chain_id, "batch_id": batch_id, "requester": args["requester"],
            "token": args["token"], "task_count": int(args["taskCount"]),
            "answers_per_task": int(args["answersPerTask"]), "reward": int(args["reward"]),
            "relay_fee": int(args["relayFee"]), "deadline": int(args["deadline"]),
            "review_window": int(args["reviewWindow"]), "min_reputation": int(args["minReputation"]),
            "gold_commitment": args["goldCommitment"], "manifest_cid": cid_text(args["manifestCid"]),
            "deposit": int(args["deposit"]), "gold_cid": None, "gold_salt": None,
            "created_block": row["block_number"], "created_tx": row["transaction_hash"],
            **dict.fromkeys(BATCH_COUNTERS, 0), "funds": int(args["deposit"]),
        }
        self._delta(batch_id, row["block_number"])

    def answers_submitted(self, row: dict, args: dict) -> None:
        """One `indexed_answers` row per answer the event names (one worker, one 96-task group)."""
        batch_id, worker, relayer = int(args["batchId"]), args["worker"], args["relayer"]
        answers = submitted_answers(args)
        for task_index, digest in answers:
            self.changes.answers[(batch_id, worker, task_index)] = {
                "chain_id": self.chain_id, "batch_id": batch_id, "worker": worker, "task_index": task_index,
                "answer_digest": digest, "answer_cid": str(raw_cid(bytes.fromhex(digest[2:]))),
                "relayer": relayer, "status": "pending", "reason_cid": None,
                "submitted_block": row["block_number"], "submitted_tx": row["transaction_hash"],
                "reviewed_block": None, "reviewed_tx": None,
            }
        terms = self.terms.get(batch_id)
        if terms is None:
            return  # batch created before the first indexed block: its money is unknown
        count = len(answers)
        delta = self._delta(batch_id, row["block_number"])
        delta["funds"] -= count * (terms.reward + terms.relay_fee)
        delta["pending"] += count
        delta["answers_submitted"] += count
        delta["relay_fees_paid"] += count * terms.relay_fee
        self._credit(terms.token, relayer, count * terms.relay_fee)

    def answers_reviewed(self, row: dict, args: dict) -> None:
        status = _REVIEWS[row["name"]]
        batch_id, worker = int(args["batchId"]), args["worker"]
        tasks = reviewed_tasks(args)
        review = {
            "status": status,
            "reason_cid": cid_text(args["reasonCid"]) if status == "rejected" else None,
            "reviewed_block": row["block_number"], "reviewed_tx": row["transaction_hash"],
        }
        for task_index in tasks:
            key = (batch_id, worker, task_index)
            target = self.changes.answers.get(key)
            if target is not None:
                target.update(review)
            else:
                self.changes.reviews[key] = dict(review)
        terms = self.terms.get(batch_id)
        if terms is None:
            return
        count = len(tasks)
        delta = self._delta(batch_id, row["block_number"])
        delta["pending"] -= count
        delta[f"answers_{status}"] += count
        if status == "rejected":
            delta["funds"] += count * terms.reward
        else:
            delta["rewards_paid"] += count * terms.reward
            self._credit(terms.token, worker, count * terms.reward)

    def bonus_paid(self, row: dict, args: dict) -> None:
        batch_id, amount = int(args["batchId"]), int(args["amount"])
        terms = self.terms.get(batch_id)
        if terms is None:
            return
        self._delta(batch_id, row["block_number"])["bonuses_paid"] += amount
        self._credit(terms.token, args["worker"], amount)

    def batch_extended(self, row: dict, args: dict) -> None:
        batch_id, top_up = int(args["batchId"]), int(args["topUp"])
        delta = self._delta(batch_id, row["block_number"])
        delta["deadline"] = int(args["deadline"])
        delta["answers_per_task"] = int(args["answersPerTask"])
        delta["funds"] += top_up
        delta["topped_up"] += top_up

    def batch_reclaimed(self, row: dict, args: dict) -> None:
        delta = self._delta(int(args["batchId"]), row["block_number"])
        delta["funds"] -= int(args["amount"])
        delta["reclaimed"] += int(args["amount"])

    def gold_revealed(self, row: dict, args: dict) -> None:
        delta = self._delta(int(args["batchId"]), row["block_number"])
        delta["gold_cid"] = cid_text(args["goldCid"])
        delta["gold_salt"] = args["salt"]

    # -- settlements (ISettlement) ----------------------------------------------

    def settlement_posted(self, row: dict, args: dict) -> None:
        """Rewards move from the batch's funds to its claimable pool, relay fees to the poster."""
        batch_id, sequence = int(args["batchId"]), int(args["sequence"])
        amount, fees = int(args["amount"]), int(args["relayFees"])
        self.changes.settlements[(batch_id, sequence)] = {
            "chain_id": self.chain_id, "batch_id": batch_id, "sequence": sequence,
            "poster": args["poster"], "root": args["root"],
            "cumulative_total": int(args["cumulativeTotal"]), "amount": amount, "relay_fees": fees,
            "answers": int(args["answers"]), "manifest_cid": cid_text(args["manifestCid"]),
            "posted_block": row["block_number"], "posted_tx": row["transaction_hash"],
        }
        terms = self.terms.get(batch_id)
        if terms is None:
            return
        delta = self._delta(batch_id, row["block_number"])
        delta["funds"] -= amount + fees
        delta["answers_settled"] += int(args["answers"])
        delta["settled_rewards"] += amount
        delta["relay_fees_paid"] += fees
        self._credit(terms.token, args["poster"], fees)

    def answers_settled(self, row: dict, args: dict) -> None:
        """One row per set bit: bit b of word w settles task 192 * w + b. An entry with no bits
        only restates a worker's earlier word (ISettlement's sealed settled words): no row."""
        batch_id, sequence = int(args["batchId"]), int(args["sequence"])
        for entry in args["settled"]:
            word = SettledWord(entry["worker"], int(entry["wordIndex"]), int(entry["bits"]))
            for task_index in word.task_indexes():
                self.changes.settled_answers[(batch_id, word.worker, task_index)] = {
                    "chain_id": self.chain_id, "batch_id": batch_id, "worker": word.worker,
                    "task_index": task_index, "sequence": sequence,
                    "settled_block": row["block_number"], "settled_tx": row["transaction_hash"],
                }

    def earnings_claimed(self, row: dict, args: dict) -> None:
        """The pool pays the worker's escrow balance, as an approval does on the direct path."""
        batch_id, worker = int(args["batchId"]), args["worker"]
        amount, cumulative = int(args["amount"]), int(args["cumulative"])
        self.changes.claims[(batch_id, worker, cumulative)] = {
            "chain_id": self.chain_id, "batch_id": batch_id, "worker": worker,
            "cumulative": cumulative, "amount": amount,
            "claimed_block": row["block_number"], "claimed_tx": row["transaction_hash"],
        }
        terms = self.terms.get(batch_id)
        if terms is None:
            return
        delta = self._delta(batch_id, row["block_number"])
        delta["claimed"] += amount
        delta["rewards_paid"] += amount
        self._credit(terms.token, worker, amount)

    def settled_words_opened(self, row: dict, args: dict) -> None:
        """The worker's settled words in the batch are stored on-chain: no money moves."""
        batch_id, worker = int(args["batchId"]), args["worker"]
        self.changes.opened.setdefault((batch_id, worker), {  # the escrow opens a worker once
            "chain_id": self.chain_id, "batch_id": batch_id, "worker": worker,
            "opened_block": row["block_number"], "opened_tx": row["transaction_hash"],
            "opened_log_index": row["log_index"],
        })

    def withdrawn(self, row: dict, args: dict) -> None:
        self._credit(args["token"], args["account"], int(args["amount"]), column=1)

    def outcomes_recorded(self, row: dict, args: dict) -> None:
        """One review call: each worker's counter rises by its counts, the requester's by their sum."""
        outcome = _OUTCOMES[int(args["outcome"])]
        entries = recorded_outcomes(args)
        for worker, count in entries:
            self._tally(worker, f"worker_{outcome}", count)
        self._tally(args["requester"], f"requester_{outcome}", sum(count for _, count in entries))


_HANDLERS = {
    "BatchCreated": Projector.batch_created,
    "AnswersSubmitted": Projector.answers_submitted,
    "AnswersApproved": Projector.answers_reviewed,
    "AnswersRejected": Projector.answers_reviewed,
    "AnswersReleased": Projector.answers_reviewed,
    "BonusPaid": Projector.bonus_paid,
    "BatchExtended": Projector.batch_extended,
    "BatchReclaimed": Projector.batch_reclaimed,
    "GoldRevealed": Projector.gold_revealed,
    "Withdrawn": Projector.withdrawn,
    "SettlementPosted": Projector.settlement_posted,
    "AnswersSettled": Projector.answers_settled,
    "EarningsClaimed": Projector.earnings_claimed,
    "SettledWordsOpened": Projector.settled_words_opened,
    "OutcomesRecorded": Projector.outcomes_recorded,
}


def project(chain_id: int, rows: Iterable[dict], terms: Mapping[int, BatchTerms]) -> Changes:
    """Fold rows (in chain order) into changes, pricing answers with `terms` of older batches."""
    return Projector(chain_id, terms).apply_all(rows)
