"""Sealed settled words, direct side: a settled worker's answers are skipped (SettlementSealed)
until anyone opens its words with openSettled, checked against its digest; then its settled
tasks are refused (AlreadyAnswered), its other answers take the direct path, and it can no
longer be settled in the batch."""

import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    ETH,
    SETTLEMENT_SEALED,
    _isolate,
    accepted,
    batch_field,
    deployment,
    signed_answer,
    skipped,
    submit,
)
from _settlement import (  # noqa: F401  (fixtures)
    OPENED,
    RELAY_FEE,
    REWARD,
    SettlementBook,
    env,
    invariant,
    record_of,
    requester_with_key,
    reverts,
    settled_batch,
    word,
)

from kempelen.errors import KempelenError
from kempelen.protocol.sealed import SettledBook, open_words, settled_digest
from kempelen.protocol.signing import settled_words

W0_TASKS = [1, 2, 390]  # words 0 and 2: word 1 is a zero in openSettled's dense words
W1_TASKS = [5, 200]


@pytest.fixture
def settled_twice(env):
    """env after two settlements: w0 tasks 1, 2, 390 (words 0 and 2), w1 tasks 5, 200."""
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 1), (w1, 5)], d.relay)
    book.post([(w0, 2), (w0, 390), (w1, 200)], d.relay)  # restates w0's and w1's word 0
    return d, requester, batch_id, book, w0, w1


def python_words(worker, tasks) -> list[int]:
    """openSettled's words for `tasks`, built in Python from the task numbers alone."""
    book = SettledBook()
    book.add(settled_words((str(worker), t) for t in tasks))
    return open_words(book.of_worker(str(worker)))


def answers(d, batch_id, worker, tasks):
    return [signed_answer(d.escrow, worker, batch_id, t) for t in tasks]


def test_open_settled_words_then_take_the_direct_path(settled_twice):
    d, requester, batch_id, book, w0, w1 = settled_twice
    words = python_words(w0, W0_TASKS)
    assert words == [1 << 1 | 1 << 2, 0, 1 << 6] == book.words(w0)
    assert settled_digest(dict(enumerate(words))) == record_of(d.escrow, batch_id, w0)[0]
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [1, 3]))
    assert skipped(tx) == [(w0.address, 1, SETTLEMENT_SEALED), (w0.address, 3, SETTLEMENT_SEALED)]

    tx = d.escrow.openSettled(batch_id, w0, words, {"from": d.stranger})  # anyone may open
    assert list(tx.events.keys()) == ["SettledWordsOpened"]
    assert dict(tx.events["SettledWordsOpened"]) == {"batchId": batch_id, "worker": w0.address}
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 3, 0)  # the counts stay

    funds = batch_field(d.escrow, batch_id, "funds")
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [1, 2, 390, 0, 3, 391, 399]) + answers(d, batch_id, w1, [6]))
    assert skipped(tx) == [(w0.address, t, ALREADY_ANSWERED) for t in (1, 2, 390)] + [(w1.address, 6, SETTLEMENT_SEALED)]
    assert accepted(tx) == [(w0.address, t) for t in (0, 3, 391, 399)]
    assert batch_field(d.escrow, batch_id, "funds") == funds - 4 * (REWARD + RELAY_FEE)
    # Its settled earnings are still claimed as before.
    assert d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay}).return_value == 3 * REWARD
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 3, 3)
    invariant(d, requester, [batch_id])


def test_the_worker_itself_or_the_requester_may_open_too(settled_twice):
    d, requester, batch_id, book, w0, w1 = settled_twice
    d.owner.transfer(w0, 10**17)
    book.open(w0, w0)
    book.open(w1, requester)
    assert record_of(d.escrow, batch_id, w1)[0] == OPENED


def test_trailing_zero_words_change_nothing(settled_twice):
    d, _, batch_id, _, w0, _ = settled_twice
    tx = d.escrow.openSettled(batch_id, w0, python_words(w0, W0_TASKS) + [0, 0], {"from": d.relay})
    assert "SettledWordsOpened" in tx.events


@pytest.mark.parametrize("forge", [
    lambda w: w[:2],  # the last word missing
    lambda w: w[1:],  # the first word missing (the others shifted down)
    lambda w: [w[0], w[2]],  # not dense: word 2 given as word 1
    lambda w: [w[0] & ~(1 << 1), w[1], w[2]],  # a settled bit left out
    lambda w: [w[0] | 1 << 3, w[1], w[2]],  # a task never settled added
    lambda w: [w[0], 1 << 7, w[2]],  # an extra word
    lambda w: w + [1],  # an extra word past the last
    lambda w: [w[2], w[1], w[0]],  # reversed
    lambda w: [],
], ids=["last-missing", "first-missing", "not-dense", "bit-missing", "bit-added", "extra-word",
        "extra-last", "reversed", "none"])
def test_open_refuses_words_that_are_not_the_settled_ones(settled_twice, forge):
    d, _, batch_id, book, w0, _ = settled_twice
    words = book.words(w0)
    with reverts("SettlementPriorMismatch", batch_id, w0.address):
        d.escrow.openSettled(batch_id, w0, forge(words), {"from": d.relay})
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [3]))
    assert skipped(tx) == [(w0.address, 3, SETTLEMENT_SEALED)]  # still sealed


def test_open_refuses_a_worker_with_nothing_settled(settled_twice):
    d, _, batch_id, book, w0, _ = settled_twice
    w2 = d.workers[2]
    for words in ([], [0], [1], [0, 0, 1]):
        with reverts("SettlementPriorMismatch", batch_id, w2.address):
            d.escrow.openSettled(batch_id, w2, words, {"from": d.relay})
    for other_batch in (batch_id + 1, 0, 2**64 - 1):  # unknown batches: w0's words are not there
        with reverts("SettlementPriorMismatch", other_batch, w0.address):
            d.escrow.openSettled(other_batch, w0, book.words(w0), {"from": d.relay})


def test_open_twice_is_refused(settled_twice):
    d, _, batch_id, book, w0, _ = settled_twice
    book.open(w0, d.stranger)
    for words in (book.words(w0), [], [OPENED]):
        with reverts("SettlementPriorMismatch", batch_id, w0.address):
            d.escrow.openSettled(batch_id, w0, words, {"from": d.relay})


def test_an_opened_worker_is_never_settled_again(settled_twice):
    d, requester, batch_id, book, w0, w1 = settled_twice
    book.open(w0, d.stranger)
    with pytest.raises(KempelenError, match="opened"):
        book.build([(w0, 3)])  # the SDK refuses to build it
    restated, _ = book.build([(w0, 3)], checked=False)  # words restated, honest `before`
    fresh, _ = book.build([], settled=(word(w0, 0, 3),), cumulative_total=6 * REWARD)  # nothing restated
    for settlement, before in ((restated, None), (fresh, [0]), (fresh, None)):
        with reverts("SettlementPriorMismatch", batch_id, w0.address):
            book.send(settlement, d.relay, before=before)
    # The others still settle, in the same batch.
    book.post([(w1, 6), (d.workers[2], 3)], d.relay)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (3 * REWARD, 0)
    invariant(d, requester, [batch_id])


def test_sealed_skips_every_answer_of_the_worker_in_that_batch_only(settled_twice):
    d, requester, batch_id, book, w0, w1 = settled_twice
    other_batch = settled_batch(d.escrow, requester)
    funds = batch_field(d.escrow, batch_id, "funds")
    tasks = [0, 1, 3, 191, 192, 391, 399]  # settled or not, in settled words or not
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, tasks) + answers(d, other_batch, w0, [1])
                + answers(d, batch_id, d.workers[2], [1]))
    assert skipped(tx) == [(w0.address, t, SETTLEMENT_SEALED) for t in tasks]
    assert accepted(tx) == [(w0.address, 1), (d.workers[2].address, 1)]
    assert batch_field(d.escrow, batch_id, "funds") == funds - (REWARD + RELAY_FEE)
    assert d.escrow.balanceOf(ETH, d.relay) == 5 * RELAY_FEE + 2 * RELAY_FEE  # 5 settled, 2 accepted


def test_an_open_posted_first_makes_a_pending_settlement_of_the_worker_revert(settled_twice):
    """Anyone may open: an open that lands before a settlement paying the same worker makes the
    settlement revert (and the worker can then be paid only on the direct path)."""
    d, _, batch_id, book, w0, w1 = settled_twice
    settlement, _ = book.build([(w0, 3), (w1, 6)])
    signature = book.sign(settlement)
    before = book.before(settlement)
    d.escrow.openSettled(batch_id, w0, book.words(w0), {"from": d.stranger})
    with reverts("SettlementPriorMismatch", batch_id, w0.address):
        book.send(settlement, d.relay, before=before, signature=signature)


def test_settled_words_of_one_batch_do_not_open_another(deployment):
    d = deployment
    requester = requester_with_key()
    books = [SettlementBook(d.escrow, settled_batch(d.escrow, requester), requester, REWARD) for _ in range(2)]
    w0 = d.workers[0]
    books[0].post([(w0, 1)], d.relay)
    books[1].post([(w0, 2)], d.relay)
    with reverts("SettlementPriorMismatch", books[1].batch_id, w0.address):
        d.escrow.openSettled(books[1].batch_id, w0, books[0].words(w0), {"from": d.relay})
    books[1].open(w0, d.relay)
    tx = submit(d.escrow, d.relay, answers(d, books[0].batch_id, w0, [3]) + answers(d, books[1].batch_id, w0, [3]))
    assert skipped(tx) == [(w0.address, 3, SETTLEMENT_SEALED)]
    assert accepted(tx) == [(w0.address, 3)]
