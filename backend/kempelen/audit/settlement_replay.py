"""Replaying the settlement path (ISettlement) beside the direct one: money, answers, claims. Pure.

A settlement moves `amount + relayFees` out of a batch's funds: `amount` into the batch's
claimable pool, `relayFees` to the poster's balance; a claim moves its amount from the pool to
the worker's balance. So the money invariant (check 1) gains the pools, and check 2 gains three
rules: an answer is paid by one path only (never settled while pending or paid on the direct
path, never accepted directly once settled), a settlement pays exactly the answers its
AnswersSettled names at the batch's terms, and no claim reaches above the worker's settled
answers x reward. Whether the manifests agree with all this is settlement_checks' job.

Sealed settled words: the escrow keeps only a digest of each worker's settled words per batch,
so the replay rebuilds the words from AnswersSettled and holds the escrow to the rules it
enforces with that digest. Checked here, from events alone: a settlement's entries for a sealed
worker restate every word the worker already has (`restatement_missing`); an entry with no bits
restates a word the worker does have (`restated_unsettled_word`); only a worker with settled
words is opened, once (`opened_without_settlement`, `opened_twice`); and `submitAnswers`
accepts no answer of a worker whose words are sealed, i.e. settled and not yet opened
(`accepted_while_sealed`; one it accepts after the opening is fine unless that task was
settled: `paid_by_both_paths`). Once opened (SettledWordsOpened) a worker's words are in the
escrow's storage and it can still be settled: its entries are checked against and added to the
stored words, so they need restate nothing (a restating entry of no bits is still allowed, on a
word the worker has, and pays nothing), and its answers are tracked as a sealed worker's are
(settled twice, paid by both paths, claims); it does not become sealed again. Checked against
`settle`'s calldata in settlement_checks: its unsigned `before` has one word per entry and, for
each entry of a worker not opened, is the worker's earlier bits in that word
(`settlement_prior_mismatch`; the escrow ignores `before` for an opened worker, `prior` is None
there). Not checked: the digest itself (no view returns it) and `openSettled`'s `words`
argument (not in its event; the escrow refuses words that do not match the digest).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from kempelen.audit.model import MONEY, PAYOUTS, Payment
from kempelen.protocol.events import Event
from kempelen.protocol.signing import SettledWord

PENDING, PAID = "pending", "paid"  # as replay.py's answer states


@dataclass
class SettlementRef:
    """A posted settlement (SettlementPosted) with the words its AnswersSettled named."""

    event: Event
    batch: int
    sequence: int
    poster: str
    root: bytes
    cumulative_total: int
    amount: int
    relay_fees: int
    answers: int
    manifest_raw: bytes
    words: tuple[SettledWord, ...]
    previous: SettlementRef | None  # the batch's settlement before this one
    # The worker's bits settled earlier in each entry's word: what `settle`'s `before` had to be;
    # None for an entry of a worker whose words were opened (the escrow ignores its `before`).
    prior: tuple[int | None, ...] = ()

    def pairs(self) -> list[tuple[str, int]]:
        """(worker, task) of every answer the settlement paid, in word order."""
        return [(word.worker, task) for word in self.words for task in word.task_indexes()]


@dataclass
class ClaimRef:
    """A claim (EarningsClaimed) and the settlement whose root was in force when it was made."""

    event: Event
    batch: int
    worker: str
    amount: int
    cumulative: int
    settlement: SettlementRef | None


@dataclass
class SettlementState:
    """What the replay knows of the settlement path so far."""

    settled: dict[tuple[int, str, int], int] = field(default_factory=dict)  # (batch, worker, task) -> sequence
    settled_count: Counter[tuple[int, str]] = field(default_factory=Counter)  # (batch, worker) -> answers
    claimed: defaultdict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    settlements: list[SettlementRef] = field(default_factory=list)
    latest: dict[int, SettlementRef] = field(default_factory=dict)  # batch -> in force
    claims: list[ClaimRef] = field(default_factory=list)
    words: dict[tuple[int, int, str], tuple[SettledWord, ...]] = field(default_factory=dict)  # (batch, seq, tx)
    priors: dict[tuple[int, int, str], tuple[int | None, ...]] = field(default_factory=dict)  # (batch, seq, tx)
    # Sealed settled words: (batch, worker) -> word index -> bits settled so far (an opened worker's
    # later settlements included: the escrow adds them to its stored words), and the workers whose
    # words were opened; sealed = settled and not opened (the escrow skips their answers).
    settled_words: dict[tuple[int, str], dict[int, int]] = field(default_factory=dict)
    opened: set[tuple[int, str]] = field(default_factory=set)
    sealed: set[tuple[int, str]] = field(default_factory=set)


class SettlementReplay:
    """The settlement handlers of replay.Replay (mixed in: they use its ledgers and findings)."""

    def _settled_words(self, e: Event) -> tuple[SettledWord, ...]:
        return tuple(SettledWord(w["worker"], w["wordIndex"], w["bits"]) for w in e.args["settled"])

    def _on_AnswersSettled(self, e: Event) -> None:
        batch_id, sequence = e.args["batchId"], e.args["sequence"]
        words = self._settled_words(e)
        s = self.settlement
        s.words[(batch_id, sequence, e.transaction_hash)] = words
        ledger = self.batches.get(batch_id)  # an unknown batch is reported by its SettlementPosted
        if ledger is None:
            return  # (and its earlier settlements are unknown: no restatement to check either)
        s.priors[(batch_id, sequence, e.transaction_hash)] = self._restatements(e, batch_id, sequence, words)
        totals = ledger.totals
        for word in words:
            for task in word.task_indexes():
                key, where = (batch_id, word.worker, task), {"batch": batch_id, "task": task, "worker": word.worker}
                if task >= totals.task_count:
                    self._find(PAYOUTS, "task_out_of_range", f"task {task} settled; batch has {totals.task_count}",
                               e, **where)
                if key in s.settled:
                    self._find(PAYOUTS, "settled_twice", f"answer settled again by settlement {sequence}, "
                               f"already by settlement {s.settled[key]}", e, **where)
                direct = self.answers.get(key)
                if direct is not None and direct.status in (PENDING, PAID):
                    self._find(PAYOUTS, "paid_by_both_paths", f"answer settled by settlement {sequence} while "
                               f"{direct.status} on the direct path", e, **where)
                s.settled[key] = sequence
                s.settled_count[(batch_id, word.worker)] += 1
        for word in words:
            if word.bits:
                held = s.settled_words.setdefault((batch_id, word.worker), {})
                held[word.word_index] = held.get(word.word_index, 0) | word.bits
                if (batch_id, word.worker) not in s.opened:
                    s.sealed.add((batch_id, word.worker))

    def _restatements(self, e: Event, batch_id: int, sequence: int,
                      words: tuple[SettledWord, ...]) -> tuple[int | None, ...]:
        """The sealed-words rules of one settlement's entries (see the module's doc); returns each
        entry's earlier bits of its worker, what the escrow's digest check needed as `before`
        (None for a worker whose words were opened: the escrow reads its stored words instead)."""
        s = self.settlement
        named: dict[str, set[int]] = {}
        prior: list[int | None] = []
        for word in words:
            named.setdefault(word.worker, set()).add(word.word_index)
            earlier = s.settled_words.get((batch_id, word.worker), {}).get(word.word_index, 0)
            prior.append(None if (batch_id, word.worker) in s.opened else earlier)
            if not word.bits and not earlier:  # the escrow's SettlementEmptyWord, sealed or opened
                self._find(PAYOUTS, "restated_unsettled_word", f"settlement {sequence} restates word "
                           f"{word.word_index} (tasks {word.word_index * 192}..{word.word_index * 192 + 191}) of the "
                           "worker with no bits, but no answer of it was settled there",
                           e, batch=batch_id, worker=word.worker)
        for worker, indexes in named.items():
            if (batch_id, worker) in s.opened:
                continue  # its words are in storage: nothing to restate
            missing = sorted(set(s.settled_words.get((batch_id, worker), {})) - indexes)
            if missing:
                self._find(PAYOUTS, "restatement_missing", f"settlement {sequence} pays the worker without "
                           f"restating its earlier settled words {missing[:5]}: the escrow's digest check "
                           "needs every one", e, batch=batch_id, worker=worker)
        return tuple(prior)

    def _on_SettledWordsOpened(self, e: Event) -> None:
        """The worker's settled words are stored on-chain: no money moves, its answers may take the
        direct path from now on (settled tasks excepted), and later settlements of it are checked
        against and added to the stored words (no restating, `before` ignored)."""
        ledger = self._batch(e)
        if ledger is None:
            return
        s, key = self.settlement, (ledger.totals.batch, e.args["worker"])
        where = {"batch": key[0], "worker": key[1]}
        if key in s.opened:
            self._find(PAYOUTS, "opened_twice", "the worker's settled words were opened again", e, **where)
        elif not s.settled_words.get(key):
            self._find(PAYOUTS, "opened_without_settlement", "settled words opened for a worker with no settled "
                       "answer in the batch", e, **where)
        s.opened.add(key)
        s.sealed.discard(key)

    def _on_SettlementPosted(self, e: Event) -> None:
        ledger = self._batch(e)
        a, s = e.args, self.settlement
        batch_id, sequence = a["batchId"], a["sequence"]
        words = s.words.pop((batch_id, sequence, e.transaction_hash), None)
        if ledger is None:
            return
        totals, where = ledger.totals, {"batch": batch_id}
        amount, fees, answers = a["amount"], a["relayFees"], a["answers"]
        if words is None:
            self._find(PAYOUTS, "settlement_without_answers", f"settlement {sequence} has no AnswersSettled event "
                       "naming the answers it pays", e, **where)
            words = ()
        named = sum(bin(word.bits).count("1") for word in words)
        if named != answers:
            self._find(MONEY, "settlement_answer_count", f"settlement {sequence} says it paid {answers} answers, "
                       f"its AnswersSettled names {named}", e, **where)
        if amount != answers * totals.reward or fees != answers * totals.relay_fee:
            self._find(MONEY, "settlement_wrong_amount", f"settlement {sequence} moved {amount} to the pool and "
                       f"{fees} in relay fees for {answers} answers; the batch's terms make that "
                       f"{answers * totals.reward} and {answers * totals.relay_fee}", e, **where)
        previous = s.latest.get(batch_id)
        if previous is not None and sequence <= previous.sequence:
            self._find(PAYOUTS, "settlement_stale_sequence", f"settlement {sequence} follows settlement "
                       f"{previous.sequence}: sequences only rise", e, **where)
        expected_total = (previous.cumulative_total if previous else 0) + amount
        if a["cumulativeTotal"] != expected_total:
            self._find(MONEY, "settlement_wrong_total", f"settlement {sequence} has cumulativeTotal "
                       f"{a['cumulativeTotal']}, the batch's settlements add up to {expected_total}", e, **where)
        ledger.funds -= amount + fees
        if ledger.funds < 0 and not ledger.overspent:
            ledger.overspent = True
            self._find(MONEY, "batch_overspent", f"batch {batch_id} settled answers it had no funds for", e, **where)
        ledger.pool += amount
        totals.settlements += 1
        totals.settled_answers += answers
        totals.settled += amount
        totals.fees += fees
        self.accounts[(totals.token, a["poster"])] += fees
        token = self._token(totals.token)
        token.relay_fees += fees
        token.settled += amount
        prior = s.priors.pop((batch_id, sequence, e.transaction_hash), ())
        ref = SettlementRef(e, batch_id, sequence, a["poster"], a["root"], a["cumulativeTotal"], amount, fees,
                            answers, a["manifestCid"], words, previous, prior)
        s.settlements.append(ref)
        s.latest[batch_id] = ref

    def _on_EarningsClaimed(self, e: Event) -> None:
        ledger = self._batch(e)
        if ledger is None:
            return
        a, s, totals = e.args, self.settlement, ledger.totals
        worker, amount, cumulative = a["worker"], a["amount"], a["cumulative"]
        where = {"batch": totals.batch, "worker": worker}
        in_force = s.latest.get(totals.batch)
        if in_force is None:
            self._find(PAYOUTS, "claim_without_settlement", "claim from a batch with no settlement", e, **where)
        claimed_before = s.claimed[(totals.batch, worker)]
        if amount != cumulative - claimed_before:
            self._find(MONEY, "claim_wrong_amount", f"claim credited {amount}: cumulative {cumulative} minus "
                       f"{claimed_before} claimed before is {cumulative - claimed_before}", e, **where)
        settled_worth = s.settled_count[(totals.batch, worker)] * totals.reward
        if cumulative % totals.reward:
            self._find(PAYOUTS, "claim_uneven", f"claim up to {cumulative}, not a whole number of rewards "
                       f"({totals.reward})", e, **where)
        if cumulative > settled_worth:
            self._find(PAYOUTS, "claim_above_settled", f"claim up to {cumulative}, but the worker's settled answers "
                       f"earned {settled_worth} ({s.settled_count[(totals.batch, worker)]} x reward)", e, **where)
        s.claimed[(totals.batch, worker)] = max(claimed_before, cumulative)
        ledger.pool -= amount
        if ledger.pool < 0:
            self._find(MONEY, "pool_overdrawn", f"claims took {-ledger.pool} more than batch {totals.batch}'s "
                       "settlements put in its pool", e, **where)
        totals.claims += 1
        totals.claimed += amount
        totals.paid += amount
        self.accounts[(totals.token, worker)] += amount
        self.earnings[(totals.token, worker)] += amount
        token = self._token(totals.token)
        token.claimed += amount
        token.paid_to_workers += amount
        self.payments.append(Payment(self._time(e), totals.token, worker, amount, "claimed"))
        s.claims.append(ClaimRef(e, totals.batch, worker, amount, cumulative, in_force))

    def _check_not_settled(self, e: Event, batch_id: int, worker: str, task: int) -> None:
        """A direct answer the settlement path already paid, or one of a worker whose settled words
        are sealed (the escrow should have skipped either)."""
        sequence = self.settlement.settled.get((batch_id, worker, task))
        if sequence is not None:
            self._find(PAYOUTS, "paid_by_both_paths", f"answer accepted on the direct path after settlement "
                       f"{sequence} paid it", e, batch=batch_id, task=task, worker=worker)
        elif (batch_id, worker) in self.settlement.sealed:
            self._find(PAYOUTS, "accepted_while_sealed", "answer accepted on the direct path while the worker's "
                       "settled words in the batch were sealed: the escrow cannot tell it from a settled one until "
                       "they are opened (SkipReason.SettlementSealed)", e, batch=batch_id, task=task, worker=worker)
