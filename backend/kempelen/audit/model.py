"""What an audit produces: findings that name where they happened, and the totals they rest on."""

from __future__ import annotations

from dataclasses import dataclass, field

from kempelen.errors import KempelenError

ETH = "0x0000000000000000000000000000000000000000"

# The six checks of docs/auditing.md; a finding's `check` is one of these names.
MONEY = "money"
PAYOUTS = "payouts"
SIGNATURES = "signatures"
CONTENT = "content"
REPUTATION = "reputation"
TIMING = "timing"
CHECKS = (MONEY, PAYOUTS, SIGNATURES, CONTENT, REPUTATION, TIMING)

# A discrepancy means someone may have been paid what was not owed, or lost what was;
# a notice is a fact worth reading that harms nobody (ETH forced into the escrow).
DISCREPANCY = "discrepancy"
NOTICE = "notice"


class AuditError(KempelenError):
    """The audit could not run: unreachable RPC, no contract at the address, bad input."""


@dataclass(frozen=True)
class Finding:
    """One thing the auditor could not reconcile, located as precisely as the chain allows."""

    check: str
    code: str  # stable machine name, e.g. "paid_twice" (listed in schema.json)
    message: str
    severity: str = DISCREPANCY
    block: int | None = None
    tx: str | None = None
    batch: int | None = None
    task: int | None = None
    worker: str | None = None

    def to_json(self) -> dict:
        return {
            "check": self.check,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "block": self.block,
            "tx": self.tx,
            "batch": self.batch,
            "task": self.task,
            "worker": self.worker,
        }


@dataclass
class TokenTotals:
    """Money of one token through the escrow, from events, against the balance at the block."""

    token: str
    symbol: str = "?"
    decimals: int = 18
    deposited: int = 0  # BatchCreated deposits
    topped_up: int = 0  # BatchExtended top-ups
    bonuses: int = 0  # BonusPaid, paid in by requesters
    withdrawn: int = 0  # Withdrawn: workers' and relays' payouts
    reclaimed: int = 0  # BatchReclaimed: refunds to requesters
    paid_to_workers: int = 0  # rewards credited (approved + released + claimed from settlements)
    relay_fees: int = 0  # to submitters of answers and posters of settlements
    settled: int = 0  # SettlementPosted: rewards moved from batch funds to claimable pools
    claimed: int = 0  # EarningsClaimed: from the pools to workers (part of paid_to_workers)
    balance: int = 0  # the escrow's balance at the audited block
    owed_replayed: int = 0  # locked in batches + account balances, from the replay

    @property
    def expected_balance(self) -> int:
        return self.deposited + self.topped_up + self.bonuses - self.withdrawn - self.reclaimed

    @property
    def surplus(self) -> int:
        return max(self.balance - self.expected_balance, 0)

    @property
    def deficit(self) -> int:
        return max(self.expected_balance - self.balance, 0)


@dataclass
class BatchTotals:
    batch: int
    requester: str
    token: str
    reward: int
    relay_fee: int
    task_count: int
    answers_per_task: int
    deadline: int
    review_window: int
    manifest_cid: str
    created_block: int
    deposited: int = 0  # deposit + top-ups
    paid: int = 0  # rewards credited to workers: approvals, releases and claims
    fees: int = 0  # relay fees credited at submission and settlement
    refunded: int = 0  # reclaimed by the requester
    locked_replayed: int = 0  # funds + pending * reward + claimable pool, from the replay
    locked_onchain: int | None = None  # the same, read from batch(id), settlementOf, earningsOf
    settlements: int = 0
    settled_answers: int = 0
    settled: int = 0  # rewards moved into the batch's claimable pool (its cumulativeTotal)
    claims: int = 0
    claimed: int = 0  # taken out of the pool by workers' claims
    submitted: int = 0
    skipped: int = 0
    approved: int = 0
    rejected: int = 0
    released: int = 0

    @property
    def pending(self) -> int:
        return self.submitted - self.approved - self.rejected - self.released


@dataclass
class Payment:
    """A reward or bonus credited to a worker: the raw material of the HTML plots."""

    timestamp: int
    token: str
    worker: str
    amount: int
    kind: str  # approved | released | bonus | claimed


@dataclass
class ReviewDelay:
    outcome: str  # approved | rejected | released
    seconds: int  # from submission to review
    window: int  # the batch's review window


@dataclass
class SettlementSummary:
    """One posted settlement, as the report lists it."""

    batch: int
    sequence: int
    block: int
    tx: str
    poster: str
    root: str  # 0x hex
    cumulative_total: int
    amount: int
    relay_fees: int
    answers: int
    manifest_cid: str  # string form, or 0x hex if the bytes are no CID
    manifest_verified: bool = False  # fetched, hash-checked, parsed and matched to the chain


@dataclass
class AuditReport:
    chain_id: int
    escrow: str
    reputation: str | None
    from_block: int
    to_block: int
    to_timestamp: int
    content_source: str
    batch_filter: tuple[int, ...] = ()
    findings: list[Finding] = field(default_factory=list)
    tokens: dict[str, TokenTotals] = field(default_factory=dict)
    batches: dict[int, BatchTotals] = field(default_factory=dict)
    worker_earnings: dict[tuple[str, str], int] = field(default_factory=dict)  # (token, worker)
    payments: list[Payment] = field(default_factory=list)
    review_delays: list[ReviewDelay] = field(default_factory=list)
    settlements: list[SettlementSummary] = field(default_factory=list)
    answers_audited: int = 0
    signatures_checked: int = 0
    content_checked: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def discrepancies(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == DISCREPANCY]

    @property
    def clean(self) -> bool:
        return not self.discrepancies


class Progress:
    """Where long steps report how far along they are; the CLI draws it, other callers need not."""

    def begin(self, label: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def end(self) -> None:
        pass
