"""Helpers of the settlement tests: a requester with a key (it signs settlements), settlements
built from (worker, task) answers with kempelen.protocol (the code the relay and SDK use), and
the money invariant extended with the claimable pools."""

from __future__ import annotations

from _helpers import ETH, create_batch, locked_in_batches, terms, token_balance
from brownie import accounts, chain
from eth_hash.auto import keccak

from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.signing import (
    Domain,
    SettledWord,
    Settlement,
    settled_words,
    sign,
    to_compact,
)

SETTLEMENT_MANIFEST = bytes.fromhex("01551220") + keccak(b"settlement manifest")


def requester_with_key(index: int = 0):
    """A requester whose private key the tests hold, funded with ETH."""
    account = accounts.add(keccak(b"kempelen-settlement-requester-%d" % index).hex())
    if account.balance() < 10**20:
        accounts[0].transfer(account, 10**21)
    return account


def settled_batch(escrow, requester, token=None, **overrides):
    """A batch ready for settlements: 400 tasks (three 192-task words) x 2 answers by default."""
    overrides.setdefault("task_count", 400)
    overrides.setdefault("review_window", 600)
    batch_terms = terms(token=token.address if token is not None else ETH, **overrides)
    batch_id, _ = create_batch(escrow, requester, batch_terms, token=token)
    return batch_id


class SettlementBook:
    """What a requester's SDK keeps per batch: the answers settled so far and the last sequence."""

    def __init__(self, escrow, batch_id, requester, reward):
        self.escrow, self.batch_id, self.requester, self.reward = escrow, batch_id, requester, reward
        self.answers: list[tuple[str, int]] = []
        self.sequence = 0
        self.tree = None

    def earnings(self, answers=None) -> dict[str, int]:
        totals: dict[str, int] = {}
        for worker, _ in answers if answers is not None else self.answers:
            totals[str(worker)] = totals.get(str(worker), 0) + self.reward
        return totals

    def build(self, new_answers, sequence=None, earnings=None, cumulative_total=None, settled=None,
              manifest=SETTLEMENT_MANIFEST):
        """The next Settlement paying `new_answers` [(worker, task)], and its earnings tree.
        Overrides forge one field (earnings per worker, the total, the settled entries)."""
        pairs = [(str(w), t) for w, t in new_answers]
        every = self.answers + pairs
        tree = earnings_tree(earnings if earnings is not None else self.earnings(every))
        total = len(every) * self.reward if cumulative_total is None else cumulative_total
        entries = tuple(settled_words(pairs)) if settled is None else tuple(settled)
        seq = self.sequence + 1 if sequence is None else sequence
        return Settlement(self.batch_id, seq, tree.root, total, manifest, entries), tree

    def sign(self, settlement, signer=None, compact=False, chain_id=None) -> bytes:
        domain = Domain(chain.id if chain_id is None else chain_id, self.escrow.address)
        signature = sign(domain.digest(settlement.struct_hash()), (signer or self.requester).private_key)
        return to_compact(signature) if compact else signature

    def post(self, new_answers, sender, **overrides):
        """Builds, signs and posts the next settlement; records it on success."""
        settlement, tree = self.build(new_answers, **overrides)
        tx = self.escrow.settle(settlement.as_tuple(), self.sign(settlement), {"from": sender})
        self.answers += [(str(w), t) for w, t in new_answers]
        self.sequence = settlement.sequence
        self.tree = tree
        return tx

    def claim_args(self, worker):
        """(batchId, worker, cumulative, proof) of `worker` in the latest tree."""
        index = next(i for i, (w, _) in enumerate(self.tree.values) if w.lower() == str(worker).lower())
        _, cumulative = self.tree.values[index]
        return self.batch_id, str(worker), cumulative, self.tree.proof(index)


def word(worker, word_index, *tasks):
    """One SettledWord with bits for `tasks` (given relative to the word)."""
    bits = 0
    for t in tasks:
        bits |= 1 << t
    return SettledWord(str(worker), word_index, bits)


def unclaimed(escrow, batch_ids, workers) -> int:
    """Σ (settled - claimed) over the batches and workers: the claimable pools."""
    total = 0
    for batch_id in batch_ids:
        for w in workers:
            settled, claimed = escrow.earningsOf(batch_id, w)
            total += settled - claimed
    return total


def assert_money_invariant_with_pools(escrow, token, holders, batch_ids, workers, surplus=0):
    """ISettlement's invariant: balance == locked + claimable pools + balances (+ surplus)."""
    locked = locked_in_batches(escrow, token)
    pools = unclaimed(escrow, [b for b in batch_ids if escrow.batch(b).dict()["token"] == str(token)], workers)
    owed_to_accounts = sum(escrow.balanceOf(str(token), h) for h in set(map(str, holders)))
    held = token_balance(token, escrow)
    assert held == locked + pools + owed_to_accounts + surplus, (held, locked, pools, owed_to_accounts, surplus)
    return pools
