"""Sealed settled words, settle side: a worker already settled in a batch is settled again only
with every earlier word restated in the signed entries and its earlier bits given, unsigned, as
`before`, checked against the worker's digest. What the escrow stores, read back from storage,
is kempelen.protocol.sealed's digest. openSettled and the direct path: test_settlement_open.py."""

import pytest
from _helpers import (  # noqa: F401  (fixtures)
    PAID,
    PENDING,
    SETTLEMENT_SEALED,
    _isolate,
    deployment,
    sets,
    signed_answer,
    skipped,
    status,
    submit,
)
from _settlement import (  # noqa: F401  (fixtures)
    REWARD,
    env,
    invariant,
    record_of,
    reverts,
    word,
)
from brownie import ZERO_ADDRESS

from kempelen.errors import KempelenError
from kempelen.protocol.sealed import settled_digest
from kempelen.protocol.signing import SettledWord, settled_words


def task_words(tasks) -> dict[int, int]:
    """word index -> bits of a worker's settled tasks, straight from the task numbers."""
    words: dict[int, int] = {}
    for t in tasks:
        words[t // 192] = words.get(t // 192, 0) | 1 << (t % 192)
    return words


def restating(worker, words) -> list[SettledWord]:
    """Entries that only restate `worker`'s words (bits 0)."""
    return [SettledWord(str(worker), i, 0) for i in sorted(words)]


def ordered(entries) -> tuple[SettledWord, ...]:
    return tuple(sorted(entries, key=lambda e: (int(e.worker, 16), e.word_index)))


@pytest.fixture
def settled_once(env):
    """env after a first settlement: w0 tasks 1 and 200 (words 0 and 1), w1 task 5."""
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 1), (w0, 200), (w1, 5)], d.relay)
    return d, requester, batch_id, book, w0, w1


# ---------------------------------------------------------------- what the escrow stores


def test_the_record_holds_the_counts_and_the_python_digest(settled_once):
    d, _, batch_id, book, w0, w1 = settled_once
    for worker, tasks in ((w0, [1, 200]), (w1, [5])):
        digest, settled, claimed = record_of(d.escrow, batch_id, worker)
        assert (digest, settled, claimed) == (settled_digest(task_words(tasks)), len(tasks), 0)
        assert digest == book.sealed.digest(worker.address) != 0
    assert record_of(d.escrow, batch_id, d.workers[2]) == (0, 0, 0)
    book.post([(w0, 2), (w0, 399)], d.relay)
    assert record_of(d.escrow, batch_id, w0) == (settled_digest(task_words([1, 2, 200, 399])), 4, 0)
    d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    assert record_of(d.escrow, batch_id, w0) == (settled_digest(task_words([1, 2, 200, 399])), 4, 4)


# ---------------------------------------------------------------- later settlements


def test_second_settlement_restates_earlier_words(settled_once):
    """w0 gets task 2 (word 0, with earlier bits) and task 390 (word 2, new); its word 1 is
    restated with no bits. w1 is not paid again: no entry for it."""
    d, requester, batch_id, book, w0, w1 = settled_once
    settlement, _ = book.build([(w0, 2), (w0, 390)])
    assert settlement.settled == (word(w0, 0, 2), SettledWord(w0.address, 1, 0), word(w0, 2, 390 - 384))
    assert book.before(settlement) == [1 << 1, 1 << 8, 0]
    tx = book.post([(w0, 2), (w0, 390)], d.relay)
    assert [tuple(e) for e in tx.events["AnswersSettled"]["settled"]] == [e.as_tuple() for e in settlement.settled]
    posted = tx.events["SettlementPosted"]
    assert (posted["answers"], posted["amount"], posted["cumulativeTotal"]) == (2, 2 * REWARD, 5 * REWARD)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (4 * REWARD, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w1)) == (REWARD, 0)

    # A third round pays w1 again and restates w0's three words with nothing new: allowed, free.
    entries = ordered([*book.sealed.restated(settled_words([(w1.address, 6)])), *restating(w0, range(3))])
    assert book.sealed.restated(settled_words([(w1.address, 6)])) == (word(w1, 0, 6),)
    tx = book.post([(w1, 6)], d.relay, settled=entries)
    assert tx.events["SettlementPosted"]["answers"] == 1
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (4 * REWARD, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w1)) == (2 * REWARD, 0)
    assert record_of(d.escrow, batch_id, w0)[:2] == (settled_digest(task_words([1, 2, 200, 390])), 4)
    assert record_of(d.escrow, batch_id, w1)[:2] == (settled_digest(task_words([5, 6])), 2)
    invariant(d, requester, [batch_id])


def test_every_earlier_word_must_be_restated(settled_once):
    d, _, batch_id, book, w0, _ = settled_once
    settlement, _ = book.build([(w0, 2)])
    assert settlement.settled == (word(w0, 0, 2), SettledWord(w0.address, 1, 0))
    for entries in [(word(w0, 0, 2),), (word(w0, 1, 3),), (word(w0, 2, 0),)]:
        # Properly signed, `before` honest for what is there: word 1 (or 0) is missing.
        forged, _ = book.build([], settled=entries, cumulative_total=4 * REWARD)
        with reverts("SettlementPriorMismatch", batch_id, w0.address):
            book.send(forged, d.relay)
    book.send(settlement, d.relay)


@pytest.mark.parametrize("before,error", [
    ([0, 1 << 8, 0], "SettlementPriorMismatch"),  # an earlier bit left out
    ([1 << 1 | 1 << 3, 1 << 8, 0], "SettlementPriorMismatch"),  # a bit never settled added
    ([1 << 1, 1 << 8, 1 << 7], "SettlementPriorMismatch"),  # an extra earlier word
    ([1 << 8, 1 << 1, 0], "SettlementPriorMismatch"),  # words swapped
    ([1 << 1, 1 << 9, 0], "SettlementPriorMismatch"),  # a bit moved
    ([0, 0, 0], "SettlementEmptyWord"),  # nothing before: word 1 restates nothing
])
def test_before_must_be_the_earlier_bits(settled_once, before, error):
    d, _, batch_id, book, w0, _ = settled_once
    settlement, _ = book.build([(w0, 2), (w0, 390)])
    assert book.before(settlement) == [1 << 1, 1 << 8, 0]
    args = (batch_id, w0.address) if error == "SettlementPriorMismatch" else (batch_id, w0.address, 1)
    with reverts(error, *args):
        book.send(settlement, d.relay, before=before)
    book.send(settlement, d.relay)


def test_a_worker_settled_for_the_first_time_has_no_before(settled_once):
    d, _, batch_id, book, _, _ = settled_once
    w2 = d.workers[2]
    settlement, _ = book.build([(w2, 3)])
    assert settlement.settled == (word(w2, 0, 3),)
    with reverts("SettlementPriorMismatch", batch_id, w2.address):
        book.send(settlement, d.relay, before=[1 << 7])
    book.send(settlement, d.relay, before=[0])


def test_the_mismatch_names_the_worker_whose_before_is_wrong(settled_once):
    d, _, batch_id, book, w0, w1 = settled_once
    settlement, _ = book.build([(w0, 2), (w1, 6)])
    honest = book.before(settlement)
    i = next(i for i, e in enumerate(settlement.settled) if e.worker == w1.address)
    assert honest[i] == 1 << 5
    forged = list(honest)
    forged[i] = 1 << 4
    with reverts("SettlementPriorMismatch", batch_id, w1.address):
        book.send(settlement, d.relay, before=forged)
    book.send(settlement, d.relay, before=honest)


def test_before_needs_one_word_per_entry(settled_once):
    d, _, batch_id, book, w0, _ = settled_once
    settlement, _ = book.build([(w0, 2)])
    honest = book.before(settlement)
    for before in (honest[:1], honest + [0], []):
        with reverts("SettlementPriorMismatch", batch_id, ZERO_ADDRESS):
            book.send(settlement, d.relay, before=before)
    first, _ = book.build([(d.workers[3], 0)])
    with reverts("SettlementPriorMismatch", batch_id, ZERO_ADDRESS):
        book.send(first, d.relay, before=[])


def test_an_entry_with_no_bits_before_or_now_is_refused(settled_once):
    d, _, batch_id, book, w0, _ = settled_once
    w2 = d.workers[2]
    empty, _ = book.build([], settled=(SettledWord(w2.address, 0, 0),))
    with reverts("SettlementEmptyWord", batch_id, w2.address, 0):
        book.send(empty, d.relay)
    # Restating a word w0 has no bits in.
    entries = ordered([*book.sealed.restated(settled_words([(w0.address, 2)])), SettledWord(w0.address, 2, 0)])
    padded, _ = book.build([(w0, 2)], settled=entries)
    with reverts("SettlementEmptyWord", batch_id, w0.address, 2):
        book.send(padded, d.relay)


def test_an_answer_settled_before_is_not_settled_again(settled_once):
    d, _, batch_id, book, w0, _ = settled_once
    with pytest.raises(KempelenError, match="already settled"):
        book.build([(w0, 200)])  # the SDK refuses to build it
    again, _ = book.build([(w0, 0), (w0, 1)], checked=False)
    assert book.before(again) == [1 << 1, 1 << 8]
    with reverts("SettlementAlreadySettled", batch_id, w0.address, 1):
        book.send(again, d.relay)
    again, _ = book.build([(w0, 200)], checked=False)
    with reverts("SettlementAlreadySettled", batch_id, w0.address, 200):
        book.send(again, d.relay)
    # Hiding the overlap by leaving the bit out of `before` breaks the digest instead.
    with reverts("SettlementPriorMismatch", batch_id, w0.address):
        book.send(again, d.relay, before=[1 << 1, 0])
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (2 * REWARD, 0)


def test_claims_stay_capped_by_the_settled_count_across_settlements(settled_once):
    d, requester, batch_id, book, w0, w1 = settled_once
    # Round 2 pays w0 one answer (3 settled) under a root that gives it 4.
    book.post([(w0, 2)], d.relay, earnings={w0.address: 4 * REWARD, w1.address: REWARD})
    with reverts("SettlementClaimExceedsSettled", batch_id, w0.address, 4 * REWARD, 3 * REWARD):
        d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    # Round 3 only restates w0's words: its settled count, and the cap, do not move.
    tx = book.post([], d.relay, settled=restating(w0, (0, 1)),
                   earnings={w0.address: 4 * REWARD, w1.address: REWARD})
    assert tx.events["SettlementPosted"]["answers"] == 0
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (3 * REWARD, 0)
    with reverts("SettlementClaimExceedsSettled", batch_id, w0.address, 4 * REWARD, 3 * REWARD):
        d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    # Round 4 pays the fourth: now the claim goes through, once.
    book.post([(w0, 3)], d.relay)
    assert d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay}).return_value == 4 * REWARD
    with reverts("SettlementNothingToClaim", batch_id, w0.address, 4 * REWARD, 4 * REWARD):
        d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    assert invariant(d, requester, [batch_id]) == REWARD  # w1's


def test_a_sealed_workers_earlier_direct_answers_are_still_reviewed(env):
    """Answers on the direct path before the worker was settled: reviewed as usual, never settled."""
    d, requester, batch_id, book = env
    w0 = d.workers[0]
    submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, t) for t in (100, 101)])
    book.post([(w0, 1)], d.relay)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, 102)])
    assert skipped(tx) == [(w0.address, 102, SETTLEMENT_SEALED)]
    book.post([(w0, 2)], d.relay)  # restates word 0, where tasks 100 and 101 are pending
    d.escrow.approve(batch_id, sets([(w0, 100)]), {"from": requester})
    assert (status(d.escrow, batch_id, w0, 100), status(d.escrow, batch_id, w0, 101)) == (PAID, PENDING)
    for task in (100, 101):
        settlement, _ = book.build([(w0, task)])
        with reverts("SettlementAnsweredDirectly", batch_id, w0.address, task):
            book.send(settlement, d.relay)
    invariant(d, requester, [batch_id])
