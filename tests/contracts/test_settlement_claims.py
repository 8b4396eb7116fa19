"""Claims (ISettlement.claimEarnings / claimMany): once per settled amount, against the latest
root only, never above a worker's settled answers (also across settlements with restated words),
and the claimable pool kept apart from reclaim."""

from _helpers import (  # noqa: F401  (fixtures)
    ETH,
    _isolate,
    batch_field,
    deployment,
    mine_at,
)
from _settlement import (  # noqa: F401  (fixtures)
    REWARD,
    SettlementBook,
    env,
    invariant,
    requester_with_key,
    reverts,
    settled_batch,
)

from kempelen.protocol.merkle import earnings_tree


def test_claim_credits_the_worker_once_per_settled_amount(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 1), (w0, 2), (w1, 1)], d.relay)
    tx = d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.stranger})  # anyone may claim for w0
    assert tx.return_value == 2 * REWARD
    assert dict(tx.events["EarningsClaimed"]) == {
        "batchId": batch_id, "worker": w0.address, "amount": 2 * REWARD, "cumulative": 2 * REWARD}
    assert d.escrow.balanceOf(ETH, w0) == 2 * REWARD
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (2 * REWARD, 2 * REWARD)
    with reverts("SettlementNothingToClaim", batch_id, w0.address, 2 * REWARD, 2 * REWARD):
        d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.stranger})
    invariant(d, requester, [batch_id])

    # Two more settlements; one claim collects both.
    book.post([(w0, 3)], d.relay)
    stale = book.claim_args(w0)
    book.post([(w0, 4), (w1, 4)], d.relay)
    with reverts("SettlementInvalidProof", batch_id, w0.address, 3 * REWARD):
        d.escrow.claimEarnings(*stale, {"from": d.stranger})  # a proof against an older root
    assert d.escrow.claimEarnings(*book.claim_args(w0), {"from": w0}).return_value == 2 * REWARD
    assert d.escrow.claimEarnings(*book.claim_args(w1), {"from": w0}).return_value == 2 * REWARD
    fund = 10**17
    d.owner.transfer(w0, fund)
    d.escrow.withdraw(ETH, {"from": w0})
    assert d.escrow.balanceOf(ETH, w0) == 0
    assert invariant(d, requester, [batch_id]) == 0


def test_claim_many_across_batches(deployment):
    d = deployment
    requester = requester_with_key()
    books = []
    for _ in range(2):
        batch_id = settled_batch(d.escrow, requester)
        book = SettlementBook(d.escrow, batch_id, requester, REWARD)
        book.post([(d.workers[0], 1), (d.workers[1], 2)], d.relay)
        books.append(book)
    claims = [(*b.claim_args(w)[:3], b.claim_args(w)[3]) for b in books for w in d.workers[:2]]
    tx = d.escrow.claimMany(claims, {"from": d.relay})
    assert tx.return_value == 4 * REWARD
    assert len(tx.events["EarningsClaimed"]) == 4
    assert d.escrow.balanceOf(ETH, d.workers[0]) == 2 * REWARD
    with reverts("SettlementNothingToClaim", books[0].batch_id, d.workers[0].address, REWARD, REWARD):
        d.escrow.claimMany(claims[:1], {"from": d.relay})
    invariant(d, requester, [b.batch_id for b in books])


def test_claim_refusals(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    with reverts("SettlementNoRoot", batch_id):
        d.escrow.claimEarnings(batch_id, w0, REWARD, [], {"from": d.relay})
    book.post([(w0, 1)], d.relay)
    _, _, cumulative, proof = book.claim_args(w0)
    with reverts("SettlementInvalidProof", batch_id, w0.address, cumulative + REWARD):
        d.escrow.claimEarnings(batch_id, w0, cumulative + REWARD, proof, {"from": d.relay})
    with reverts("SettlementInvalidProof", batch_id, w1.address, cumulative):
        d.escrow.claimEarnings(batch_id, w1, cumulative, proof, {"from": d.relay})


def test_a_root_cannot_pay_a_worker_more_than_its_settled_answers(env):
    """A requester-signed root that gives w1 more than its settled answers earned (and w0 less)."""
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    skewed = {w0.address: REWARD, w1.address: 3 * REWARD}  # w0 settled 3 answers, w1 one
    book.post([(w0, 1), (w0, 2), (w0, 3), (w1, 1)], d.relay, earnings=skewed)
    with reverts("SettlementClaimExceedsSettled", batch_id, w1.address, 3 * REWARD, REWARD):
        d.escrow.claimEarnings(*book.claim_args(w1), {"from": d.relay})
    assert d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay}).return_value == REWARD
    invariant(d, requester, [batch_id])


def test_leaves_pay_whole_answers(env):
    d, _, batch_id, book = env
    w0 = d.workers[0]
    book.post([(w0, 1), (w0, 2)], d.relay, earnings={w0.address: REWARD + 1})
    with reverts("SettlementUnevenAmount", batch_id, REWARD + 1, REWARD):
        d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})


def test_proofs_from_the_standard_tree_verify_on_chain_for_every_worker(env):
    d, requester, batch_id, book = env
    answers = [(w, t) for i, w in enumerate(d.workers) for t in range(i + 1)]
    book.post(answers, d.relay)
    assert earnings_tree(book.earnings()).root == book.tree.root
    for i, w in enumerate(d.workers):
        assert d.escrow.claimEarnings(*book.claim_args(w), {"from": d.relay}).return_value == (i + 1) * REWARD
    assert invariant(d, requester, [batch_id]) == 0


def test_reclaim_leaves_the_claimable_pool_alone(env):
    d, requester, batch_id, book = env
    w0 = d.workers[0]
    book.post([(w0, 1)], d.relay)
    deadline = batch_field(d.escrow, batch_id, "deadline")
    mine_at(deadline + 1)
    d.escrow.reclaim(batch_id, {"from": requester})
    assert batch_field(d.escrow, batch_id, "funds") == 0
    assert invariant(d, requester, [batch_id]) == REWARD
    d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    assert invariant(d, requester, [batch_id]) == 0
