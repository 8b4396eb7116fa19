"""Sealed settled words, direct side: a settled worker's answers are skipped (SettlementSealed)
until anyone opens its words with openSettled, checked against its digest; then its settled
tasks are refused (AlreadyAnswered) and its other answers take the direct path. An opened worker
can still be settled: its entries are checked against and written to the stored words, `before`
is ignored for it, and its record's digest stays OPENED, so an open front-running a signed
settlement does not make the settlement revert."""

import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    ETH,
    PAID,
    PENDING,
    SETTLEMENT_SEALED,
    _isolate,
    accepted,
    batch_field,
    deployment,
    sets,
    signed_answer,
    skipped,
    status,
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
    stored_word_of,
    word,
)

from kempelen.errors import KempelenError
from kempelen.protocol.sealed import SettledBook, open_words, settled_digest
from kempelen.protocol.signing import SettledWord, settled_words

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


# ---------------------------------------------------------------- settling an opened worker


def stored_words(d, batch_id, worker, count=3) -> list[int]:
    """The escrow's stored words 0..count-1 of an opened worker (read from storage)."""
    return [stored_word_of(d.escrow, batch_id, worker, i) for i in range(count)]


def garbage_before(settlement) -> list[int]:
    """A `before` that no sealed worker's settlement survives: every bit set (each entry with bits
    would overlap it)."""
    return [2**256 - 1] * len(settlement.settled)


def test_open_stores_the_words(settled_twice):
    d, _, batch_id, book, w0, w1 = settled_twice
    assert stored_words(d, batch_id, w0) == [0, 0, 0]  # sealed: only the digest is kept
    book.open(w0, d.stranger)
    assert stored_words(d, batch_id, w0, 4) == python_words(w0, W0_TASKS) + [0]
    assert stored_words(d, batch_id, w1) == [0, 0, 0]


@pytest.mark.parametrize("restate", [False, True], ids=["new-entries-only", "restated"])
@pytest.mark.parametrize("before", ["honest", "garbage"])
def test_an_opened_worker_is_settled_again_against_its_stored_words(settled_twice, restate, before):
    """After openSettled, w0 is paid tasks 3 (word 0, next to stored bits) and 200 (word 1, where
    it had none), with or without its earlier words restated (no-ops), whatever `before` says."""
    d, requester, batch_id, book, w0, w1 = settled_twice
    book.open(w0, d.stranger)
    funds = batch_field(d.escrow, batch_id, "funds")
    new = [(w0, 3), (w0, 200)]
    entries = book.entries(new, checked=not restate)
    if restate:
        assert entries == (word(w0, 0, 3), word(w0, 1, 200 - 192), SettledWord(w0.address, 2, 0))
    else:  # what the SDK signs for an opened worker: only the new words
        assert entries == (word(w0, 0, 3), word(w0, 1, 200 - 192))
    settlement, tree = book.build(new, settled=entries)
    tx = book.send(settlement, d.relay, before=garbage_before(settlement) if before == "garbage" else None)
    book.record(settlement, tree, tx, new)

    posted = tx.events["SettlementPosted"]
    assert (posted["answers"], posted["amount"], posted["relayFees"], posted["cumulativeTotal"]) == (
        2, 2 * REWARD, 2 * RELAY_FEE, 7 * REWARD)
    assert batch_field(d.escrow, batch_id, "funds") == funds - 2 * (REWARD + RELAY_FEE)
    assert d.escrow.balanceOf(ETH, d.relay) == 7 * RELAY_FEE
    # Stored: the new bits OR-ed in; the restated word 2 is untouched. The record stays OPENED.
    assert stored_words(d, batch_id, w0) == [1 << 1 | 1 << 2 | 1 << 3, 1 << 8, 1 << 6]
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 5, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (5 * REWARD, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w1)) == (2 * REWARD, 0)
    with reverts("SettlementPriorMismatch", batch_id, w0.address):  # still opened: not again
        d.escrow.openSettled(batch_id, w0, book.words(w0), {"from": d.relay})

    # The direct path now refuses the newly settled tasks and takes the others.
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [3, 200, 4]))
    assert skipped(tx) == [(w0.address, 3, ALREADY_ANSWERED), (w0.address, 200, ALREADY_ANSWERED)]
    assert accepted(tx) == [(w0.address, 4)]
    # Claims follow the added answers.
    assert d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay}).return_value == 5 * REWARD
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 5, 5)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (5 * REWARD, 5 * REWARD)
    assert invariant(d, requester, [batch_id]) == 2 * REWARD  # w1's


def test_restating_an_opened_workers_words_pays_and_changes_nothing(settled_twice):
    d, requester, batch_id, book, w0, w1 = settled_twice
    book.open(w0, d.stranger)
    entries = [SettledWord(w0.address, 0, 0), SettledWord(w0.address, 2, 0)]
    settlement, _ = book.build([], settled=entries)
    tx = book.post([], d.relay, settled=entries, before=garbage_before(settlement))
    assert tx.events["SettlementPosted"]["answers"] == 0
    assert stored_words(d, batch_id, w0) == python_words(w0, W0_TASKS)
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 3, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (3 * REWARD, 0)
    invariant(d, requester, [batch_id])


def test_an_open_front_running_a_signed_settlement_changes_its_cost_not_its_outcome(settled_twice):
    """The requester signs a settlement paying w0 and w1 while both are sealed (their earlier words
    restated, `before` from the events); anyone opens w0 before it is posted: it still goes
    through and pays both. w1's `before` is still checked."""
    d, requester, batch_id, book, w0, w1 = settled_twice
    new = [(w0, 3), (w1, 6)]
    settlement, tree = book.build(new)
    assert set(settlement.settled) == {word(w0, 0, 3), SettledWord(w0.address, 2, 0),
                                       word(w1, 0, 6), SettledWord(w1.address, 1, 0)}
    before = book.before(settlement)
    earlier = {(w0.address, 0): 1 << 1 | 1 << 2, (w0.address, 2): 1 << 6,
               (w1.address, 0): 1 << 5, (w1.address, 1): 1 << 8}
    assert before == [earlier[(e.worker, e.word_index)] for e in settlement.settled]
    signature = book.sign(settlement)
    funds = batch_field(d.escrow, batch_id, "funds")

    d.escrow.openSettled(batch_id, w0, book.words(w0), {"from": d.stranger})  # lands first

    i = next(i for i, e in enumerate(settlement.settled) if e.worker == w1.address and e.bits == 0)
    forged = list(before)
    forged[i] = 1 << 9  # w1 settled task 200 (bit 8 of word 1), not 201
    with reverts("SettlementPriorMismatch", batch_id, w1.address):
        book.send(settlement, d.relay, before=forged, signature=signature)
    tx = book.send(settlement, d.relay, before=before, signature=signature)
    book.record(settlement, tree, tx, new)

    assert tx.events["SettlementPosted"]["answers"] == 2
    assert batch_field(d.escrow, batch_id, "funds") == funds - 2 * (REWARD + RELAY_FEE)
    assert d.escrow.balanceOf(ETH, d.relay) == 7 * RELAY_FEE
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 4, 0)
    assert record_of(d.escrow, batch_id, w1) == (settled_digest({0: 1 << 5 | 1 << 6, 1: 1 << 8}), 3, 0)
    assert stored_words(d, batch_id, w0) == [1 << 1 | 1 << 2 | 1 << 3, 0, 1 << 6]
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [3, 4]) + answers(d, batch_id, w1, [7]))
    assert skipped(tx) == [(w0.address, 3, ALREADY_ANSWERED), (w1.address, 7, SETTLEMENT_SEALED)]
    assert accepted(tx) == [(w0.address, 4)]
    for worker, count in ((w0, 4), (w1, 3)):
        assert tuple(d.escrow.earningsOf(batch_id, worker)) == (count * REWARD, 0)
        assert d.escrow.claimEarnings(*book.claim_args(worker), {"from": d.relay}).return_value == count * REWARD
    assert invariant(d, requester, [batch_id]) == 0


def test_settling_an_opened_worker_refuses_its_stored_answers(settled_twice):
    """Overlap with the stored words is refused whatever `before` says, including the bits a
    settlement wrote after the opening."""
    d, requester, batch_id, book, w0, _ = settled_twice
    book.open(w0, d.stranger)
    with pytest.raises(KempelenError, match="already settled"):
        book.build([(w0, 390)])  # the SDK refuses to build it
    again, _ = book.build([(w0, 3), (w0, 390)], checked=False)
    for before in (None, [0] * len(again.settled)):  # `before` cannot hide the overlap
        with reverts("SettlementAlreadySettled", batch_id, w0.address, 390):
            book.send(again, d.relay, before=before)
    book.post([(w0, 3)], d.relay)
    for tasks in ([(w0, 3)], [(w0, 0), (w0, 3)]):
        again, _ = book.build(tasks, checked=False)
        for before in (None, [0] * len(again.settled)):
            with reverts("SettlementAlreadySettled", batch_id, w0.address, 3):
                book.send(again, d.relay, before=before)
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 4, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (4 * REWARD, 0)
    invariant(d, requester, [batch_id])


def test_an_opened_workers_entry_with_no_bits_on_a_word_with_none_stored_is_refused(settled_twice):
    """w0 has nothing in word 1: an entry restating it is empty, even with a `before` that would
    fill it (ignored), alone or next to a paying entry."""
    d, _, batch_id, book, w0, _ = settled_twice
    book.open(w0, d.stranger)
    empty, _ = book.build([], settled=(SettledWord(w0.address, 1, 0),))
    for before in ([0], [1 << 5]):
        with reverts("SettlementEmptyWord", batch_id, w0.address, 1):
            book.send(empty, d.relay, before=before)
    padded, _ = book.build([(w0, 3)], settled=(word(w0, 0, 3), SettledWord(w0.address, 1, 0)))
    with reverts("SettlementEmptyWord", batch_id, w0.address, 1):
        book.send(padded, d.relay, before=[0, 1 << 5])
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 3, 0)


def test_a_direct_answer_of_an_opened_worker_cannot_then_be_settled(settled_twice):
    d, requester, batch_id, book, w0, _ = settled_twice
    book.open(w0, d.stranger)
    tx = submit(d.escrow, d.relay, answers(d, batch_id, w0, [3, 4]))
    assert accepted(tx) == [(w0.address, 3), (w0.address, 4)]
    d.escrow.approve(batch_id, sets([(w0, 4)]), {"from": requester})
    assert (status(d.escrow, batch_id, w0, 3), status(d.escrow, batch_id, w0, 4)) == (PENDING, PAID)
    for task in (3, 4):
        settlement, _ = book.build([(w0, task), (w0, 5)])
        for before in (None, garbage_before(settlement)):
            with reverts("SettlementAnsweredDirectly", batch_id, w0.address, task):
                book.send(settlement, d.relay, before=before)
    book.post([(w0, 5)], d.relay)  # its other answers still settle
    assert stored_words(d, batch_id, w0)[0] == 1 << 1 | 1 << 2 | 1 << 5
    assert record_of(d.escrow, batch_id, w0) == (OPENED, 4, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (4 * REWARD, 0)
    invariant(d, requester, [batch_id])
