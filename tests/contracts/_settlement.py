"""Helpers of the settlement tests: a requester with a key (it signs settlements), settlements
built from (worker, task) answers with kempelen.protocol (the code the relay and SDK use: signing,
merkle, and sealed for the restated entries and `before` of later settlements), and the money
invariant extended with the claimable pools."""

from __future__ import annotations

import brownie
import pytest
from _helpers import ETH, create_batch, locked_in_batches, terms, token_balance
from brownie import accounts, chain, web3
from eth_hash.auto import keccak

from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.sealed import SettledBook, open_words
from kempelen.protocol.signing import (
    Domain,
    SettledWord,
    Settlement,
    settled_words,
    sign,
    to_compact,
)

SETTLEMENT_MANIFEST = bytes.fromhex("01551220") + keccak(b"settlement manifest")
REWARD = 1_000_000  # settled_batch's defaults (_helpers.terms)
RELAY_FEE = 10_000


def reverts(error, *args):
    """`with reverts("SettlementPriorMismatch", batch_id, worker): ...` (addresses lowercased)."""
    parts = [a.lower() if isinstance(a, str) and a.startswith("0x") and len(a) == 42 else str(a) for a in args]
    return brownie.reverts(f"{error}: {', '.join(parts)}")


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
    """What a requester's SDK keeps per batch: the answers settled so far, the last sequence, and
    the batch's settled words as the escrow's digests see them (`sealed`, a SettledBook rebuilt
    from the AnswersSettled and SettledWordsOpened events of what it posted)."""

    def __init__(self, escrow, batch_id, requester, reward):
        self.escrow, self.batch_id, self.requester, self.reward = escrow, batch_id, requester, reward
        self.answers: list[tuple[str, int]] = []
        self.sequence = 0
        self.tree = None
        self.sealed = SettledBook()

    def earnings(self, answers=None) -> dict[str, int]:
        totals: dict[str, int] = {}
        for worker, _ in answers if answers is not None else self.answers:
            totals[str(worker)] = totals.get(str(worker), 0) + self.reward
        return totals

    def entries(self, new_answers, checked=True) -> tuple[SettledWord, ...]:
        """The signed entries paying `new_answers`: their words, plus every earlier word of the
        sealed workers they pay (restated with bits 0). `checked`: through SettledBook.restated,
        which refuses answers already settled and restates no opened worker's words (the escrow
        has them in storage); unchecked, entries restating every paid worker's earlier words, opened
        or not, and refusing nothing: for a test that wants the escrow to refuse them, or to show
        that restating an opened worker's words is a harmless no-op."""
        new = settled_words([(str(w), t) for w, t in new_answers])
        if checked:
            return self.sealed.restated(new)
        return restate_unchecked(self.sealed, new)

    def build(self, new_answers, sequence=None, earnings=None, cumulative_total=None, settled=None,
              manifest=SETTLEMENT_MANIFEST, checked=True):
        """The next Settlement paying `new_answers` [(worker, task)], and its earnings tree.
        Overrides forge one field (earnings per worker, the total, the settled entries)."""
        pairs = [(str(w), t) for w, t in new_answers]
        every = self.answers + pairs
        tree = earnings_tree(earnings if earnings is not None else self.earnings(every))
        total = len(every) * self.reward if cumulative_total is None else cumulative_total
        entries = self.entries(pairs, checked) if settled is None else tuple(settled)
        seq = self.sequence + 1 if sequence is None else sequence
        return Settlement(self.batch_id, seq, tree.root, total, manifest, entries), tree

    def before(self, settlement) -> list[int]:
        """`settle`'s `before` for the settlement's entries (the workers' earlier bits)."""
        return self.sealed.before(settlement.settled)

    def sign(self, settlement, signer=None, compact=False, chain_id=None) -> bytes:
        domain = Domain(chain.id if chain_id is None else chain_id, self.escrow.address)
        signature = sign(domain.digest(settlement.struct_hash()), (signer or self.requester).private_key)
        return to_compact(signature) if compact else signature

    def send(self, settlement, sender, before=None, signature=None):
        """Posts `settlement` as given (honest `before` and signature unless overridden), without
        recording it: for the settlements a test expects the escrow to refuse."""
        before = self.before(settlement) if before is None else list(before)
        signature = self.sign(settlement) if signature is None else signature
        return self.escrow.settle(settlement.as_tuple(), before, signature, {"from": sender})

    def record(self, settlement, tree, tx, new_answers):
        """Books a posted settlement: its answers, sequence, tree, and the words its
        AnswersSettled event carries (what anyone rebuilds the digests from)."""
        posted = [SettledWord(str(w), int(i), int(b)) for w, i, b in tx.events["AnswersSettled"]["settled"]]
        assert posted == list(settlement.settled)
        self.sealed.add(posted)
        self.answers += [(str(w), t) for w, t in new_answers]
        self.sequence = settlement.sequence
        self.tree = tree

    def post(self, new_answers, sender, before=None, **overrides):
        """Builds, signs and posts the next settlement; records it on success."""
        settlement, tree = self.build(new_answers, **overrides)
        tx = self.send(settlement, sender, before=before)
        self.record(settlement, tree, tx, new_answers)
        return tx

    def words(self, worker) -> list[int]:
        """openSettled's `words` for `worker`: all its settled words, dense from word 0."""
        return open_words(self.sealed.of_worker(str(worker)))

    def open(self, worker, sender):
        """Opens `worker`'s settled words (anyone may); records it."""
        tx = self.escrow.openSettled(self.batch_id, str(worker), self.words(worker), {"from": sender})
        self.sealed.opened.add(str(worker))
        return tx

    def claim_args(self, worker):
        """(batchId, worker, cumulative, proof) of `worker` in the latest tree."""
        index = next(i for i, (w, _) in enumerate(self.tree.values) if w.lower() == str(worker).lower())
        _, cumulative = self.tree.values[index]
        return self.batch_id, str(worker), cumulative, self.tree.proof(index)


def restate_unchecked(sealed, new) -> tuple[SettledWord, ...]:
    """SettledBook.restated without its refusal of answers already settled, and restating the
    earlier words of opened workers too (allowed, no-ops, not required)."""
    by_key = {(int(e.worker, 16), e.word_index): e for e in new}
    for worker in {str(e.worker) for e in new}:
        for word_index in sealed.of_worker(worker):
            by_key.setdefault((int(worker, 16), word_index), SettledWord(worker, word_index, 0))
    return tuple(by_key[k] for k in sorted(by_key))


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


# ---------------------------------------------------------------- fixtures of the settlement tests


@pytest.fixture
def env(deployment):
    """(deployment, requester with a key, a 400-task ETH batch, its SettlementBook)."""
    requester = requester_with_key()
    batch_id = settled_batch(deployment.escrow, requester)
    book = SettlementBook(deployment.escrow, batch_id, requester, REWARD)
    return deployment, requester, batch_id, book


def holders(d, requester):
    return [requester, d.relay, d.stranger] + d.workers


def invariant(d, requester, batch_ids, token=ETH):
    """The money invariant with the claimable pools; returns the pools."""
    return assert_money_invariant_with_pools(d.escrow, token, holders(d, requester), batch_ids, d.workers)


# ---------------------------------------------------------------- the escrow's records, from storage

DIGEST_MASK = (1 << 192) - 1
OPENED = DIGEST_MASK  # the digest field of a worker whose settled words were opened
_records_slot: list[int] = []  # the storage slot of BatchSettlement._records, once found


def _mapping_slot(key: int, slot: int) -> int:
    return int.from_bytes(keccak(key.to_bytes(32, "big") + slot.to_bytes(32, "big")), "big")


def record_of(escrow, batch_id, worker) -> tuple[int, int, int]:
    """(digest, settled count, claimed count) of the escrow's record of (batch, worker):
    claimed << 224 | settled << 192 | digest at _records[batchId << 160 | worker]. The escrow has
    no view of it, so it is read from storage; the mapping's slot is found the first time from a
    record that exists (the only slot among the first 64 whose entry for this key is nonzero)."""
    key = (int(batch_id) << 160) | int(str(worker), 16)

    def load(slot):
        return int.from_bytes(web3.eth.get_storage_at(escrow.address, _mapping_slot(key, slot)), "big")

    if not _records_slot:
        found = [s for s in range(64) if load(s)]
        assert len(found) == 1, f"cannot tell the records' slot from {worker} in batch {batch_id}: {found}"
        _records_slot.append(found[0])
    value = load(_records_slot[0])
    return value & DIGEST_MASK, (value >> 192) & 0xFFFFFFFF, value >> 224


def stored_word_of(escrow, batch_id, worker, word_index) -> int:
    """The escrow's stored bits of an opened worker's word (0 while sealed, or for a word it has no
    bits in): _settledWords[batchId << 192 | wordIndex << 160 | worker], the mapping declared
    right after _records in BatchSettlement, so at the records' slot + 1 (found by record_of from
    the worker's record, which an opened worker has)."""
    if not _records_slot:
        record_of(escrow, batch_id, worker)
    key = (int(batch_id) << 192) | (int(word_index) << 160) | int(str(worker), 16)
    slot = _mapping_slot(key, _records_slot[0] + 1)
    return int.from_bytes(web3.eth.get_storage_at(escrow.address, slot), "big")
