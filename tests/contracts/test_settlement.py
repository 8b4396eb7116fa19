"""Settlements and claims (ISettlement): every function, event and error, the direct-path
fallback, double payment attempted both ways, claim replay and signature edge cases."""

import brownie
import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    ETH,
    PAID,
    PENDING,
    REASON_CID,
    _isolate,
    accepted,
    batch_field,
    deployment,
    mine_at,
    now,
    sets,
    signed_answer,
    skipped,
    status,
    submit,
)
from _settlement import (
    SETTLEMENT_MANIFEST,
    SettlementBook,
    assert_money_invariant_with_pools,
    requester_with_key,
    settled_batch,
    word,
)
from brownie import ZERO_ADDRESS, chain

from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.signing import Domain, Settlement, to_compact

REWARD = 1_000_000
RELAY_FEE = 10_000
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def reverts(error, *args):
    parts = [a.lower() if isinstance(a, str) and a.startswith("0x") and len(a) == 42 else str(a) for a in args]
    return brownie.reverts(f"{error}: {', '.join(parts)}")


@pytest.fixture
def env(deployment):
    requester = requester_with_key()
    batch_id = settled_batch(deployment.escrow, requester)
    book = SettlementBook(deployment.escrow, batch_id, requester, REWARD)
    return deployment, requester, batch_id, book


def _holders(d, requester):
    return [requester, d.relay, d.stranger] + d.workers


def _invariant(d, requester, batch_ids, token=ETH):
    return assert_money_invariant_with_pools(d.escrow, token, _holders(d, requester), batch_ids, d.workers)


# ---------------------------------------------------------------- settle


def test_settle_moves_rewards_to_the_pool_and_fees_to_the_poster(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    answers = [(w0, 0), (w0, 191), (w0, 192), (w1, 5), (w1, 399)]
    funds = batch_field(d.escrow, batch_id, "funds")
    tx = book.post(answers, d.relay)

    posted = tx.events["SettlementPosted"]
    assert dict(posted) == {
        "batchId": batch_id, "sequence": 1, "poster": d.relay.address, "root": "0x" + book.tree.root.hex(),
        "cumulativeTotal": 5 * REWARD, "amount": 5 * REWARD, "relayFees": 5 * RELAY_FEE, "answers": 5,
        "manifestCid": "0x" + SETTLEMENT_MANIFEST.hex(),
    }
    settled = tx.events["AnswersSettled"]
    assert (settled["batchId"], settled["sequence"]) == (batch_id, 1)
    expected_entries = sorted([(w0.address, 0, 1 | 1 << 191), (w0.address, 1, 1), (w1.address, 0, 1 << 5),
                               (w1.address, 2, 1 << 15)], key=lambda e: (int(e[0], 16), e[1]))
    assert [tuple(e) for e in settled["settled"]] == expected_entries
    assert list(tx.events.keys()) == ["AnswersSettled", "SettlementPosted"]

    assert batch_field(d.escrow, batch_id, "funds") == funds - 5 * (REWARD + RELAY_FEE)
    assert d.escrow.balanceOf(ETH, d.relay) == 5 * RELAY_FEE
    assert tuple(d.escrow.settlementOf(batch_id)) == (1, "0x" + book.tree.root.hex(), 5 * REWARD)
    assert tuple(d.escrow.earningsOf(batch_id, w0)) == (3 * REWARD, 0)
    assert tuple(d.escrow.earningsOf(batch_id, w1)) == (2 * REWARD, 0)
    for w, t in answers:
        assert d.escrow.isSettled(batch_id, w, t)
    assert not d.escrow.isSettled(batch_id, w0, 1)
    assert not d.escrow.isSettled(batch_id, d.workers[2], 0)
    assert _invariant(d, requester, [batch_id]) == 5 * REWARD


@pytest.mark.parametrize("tasks", [
    range(192),  # a full 192-task word (every bit below the counts)
    range(0, 400, 2),  # half of every word
    [191, 192, 383, 384, 399],  # the edges of each word
    range(100, 300, 7),
])
def test_settled_count_is_the_number_of_bits(env, tasks):
    """Each settled word counts its set bits (the worker's settled answers, in word 0's count)."""
    d, requester, batch_id, book = env
    w = d.workers[3]
    tasks = list(tasks)
    tx = book.post([(w, t) for t in tasks], d.relay)
    assert tx.events["SettlementPosted"]["answers"] == len(tasks)
    assert tuple(d.escrow.earningsOf(batch_id, w)) == (len(tasks) * REWARD, 0)


def test_settlement_hash_view_equals_the_python_digest(env):
    d, _, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 3), (d.workers[1], 200)])
    assert bytes(d.escrow.settlementHash(settlement.as_tuple())) == Domain(chain.id, d.escrow.address).digest(
        settlement.struct_hash())


def test_cumulative_settlements_with_gaps_in_sequence_and_a_root_only_update(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 1)], d.relay)
    tx = book.post([(w0, 2), (w1, 2)], d.stranger, sequence=7)
    assert tx.events["SettlementPosted"]["cumulativeTotal"] == 3 * REWARD
    assert tx.events["SettlementPosted"]["amount"] == 2 * REWARD
    assert d.escrow.balanceOf(ETH, d.stranger) == 2 * RELAY_FEE
    # Nothing new, a new root (e.g. a corrected manifest): allowed, moves nothing.
    funds = batch_field(d.escrow, batch_id, "funds")
    tx = book.post([], d.relay, manifest=b"\x01\x55\x12\x20" + bytes(32))
    assert (tx.events["SettlementPosted"]["amount"], tx.events["SettlementPosted"]["answers"]) == (0, 0)
    assert batch_field(d.escrow, batch_id, "funds") == funds
    assert d.escrow.settlementOf(batch_id)[0] == 8
    _invariant(d, requester, [batch_id])


def test_usdc_settlement_claim_and_withdraw(deployment):
    d = deployment
    requester = requester_with_key()
    batch_id = settled_batch(d.escrow, requester, token=d.usdc, reward=5_000, relay_fee=500)
    book = SettlementBook(d.escrow, batch_id, requester, 5_000)
    book.post([(d.workers[0], t) for t in range(10)], d.relay)
    d.escrow.claimEarnings(*book.claim_args(d.workers[0]), {"from": d.stranger})
    assert d.escrow.balanceOf(d.usdc, d.workers[0]) == 50_000
    d.escrow.withdraw(d.usdc, {"from": d.relay})
    assert d.usdc.balanceOf(d.relay) == 5_000
    assert_money_invariant_with_pools(d.escrow, d.usdc, _holders(d, requester), [batch_id], d.workers)


# ---------------------------------------------------------------- settle: refusals


def test_cannot_settle_unknown_batch_stale_sequence_or_empty_root(env):
    d, _, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    unknown = Settlement(999, 1, settlement.root, REWARD, SETTLEMENT_MANIFEST, settlement.settled)
    with reverts("SettlementUnknownBatch", 999):
        d.escrow.settle(unknown.as_tuple(), book.sign(unknown), {"from": d.relay})
    zero_root = Settlement(batch_id, 1, bytes(32), REWARD, SETTLEMENT_MANIFEST, settlement.settled)
    with reverts("SettlementEmptyRoot", batch_id):
        d.escrow.settle(zero_root.as_tuple(), book.sign(zero_root), {"from": d.relay})
    book.post([(d.workers[0], 1)], d.relay, sequence=3)
    for sequence in (3, 2, 0):
        again, _ = book.build([(d.workers[0], 2)], sequence=sequence)
        with reverts("SettlementStaleSequence", batch_id, sequence, 3):
            d.escrow.settle(again.as_tuple(), book.sign(again), {"from": d.relay})


def test_replayed_settlement_is_refused(env):
    d, _, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    signature = book.sign(settlement)
    d.escrow.settle(settlement.as_tuple(), signature, {"from": d.relay})
    with reverts("SettlementStaleSequence", batch_id, 1, 1):
        d.escrow.settle(settlement.as_tuple(), signature, {"from": d.stranger})


def test_only_the_requester_signature_counts(env, deployment):
    d, requester, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    impostor = d.workers[3]
    forged = book.sign(settlement, signer=impostor)
    with reverts("SettlementInvalidSigner", batch_id, requester.address, impostor.address):
        d.escrow.settle(settlement.as_tuple(), forged, {"from": d.relay})
    # A signature of the same settlement for another chain recovers to someone else.
    with brownie.reverts(revert_pattern=r"SettlementInvalidSigner: .*"):
        d.escrow.settle(settlement.as_tuple(), book.sign(settlement, chain_id=1), {"from": d.relay})
    # Any signed field changed after signing breaks the signature.
    signature = book.sign(settlement)
    tampered = [
        Settlement(batch_id, 1, settlement.root, settlement.cumulative_total, b"\x01\x55\x12\x20" + bytes(32),
                   settlement.settled),
        Settlement(batch_id, 1, settlement.root, settlement.cumulative_total, SETTLEMENT_MANIFEST,
                   (word(d.workers[0], 0, 2),)),
        Settlement(batch_id, 2, settlement.root, settlement.cumulative_total, SETTLEMENT_MANIFEST,
                   settlement.settled),
        Settlement(batch_id, 1, b"\x01" * 32, settlement.cumulative_total, SETTLEMENT_MANIFEST, settlement.settled),
    ]
    for forged_settlement in tampered:
        with brownie.reverts(revert_pattern=rf"SettlementInvalidSigner: {batch_id}, {requester.address.lower()}, 0x.*"):
            d.escrow.settle(forged_settlement.as_tuple(), signature, {"from": d.relay})


@pytest.mark.parametrize("form", ["compact", "high_s", "short", "v_zero"])
def test_signature_forms(env, form):
    d, requester, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    signature = book.sign(settlement)
    if form == "compact":
        d.escrow.settle(settlement.as_tuple(), to_compact(signature), {"from": d.relay})
        assert d.escrow.isSettled(batch_id, d.workers[0], 1)
        return
    if form == "high_s":
        r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
        signature = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    elif form == "short":
        signature = signature[:63]
    else:
        signature = signature[:64] + b"\x00"
    with reverts("SettlementInvalidSigner", batch_id, requester.address, ZERO_ADDRESS):
        d.escrow.settle(settlement.as_tuple(), signature, {"from": d.relay})


def test_total_must_match_the_settled_answers(env):
    d, _, batch_id, book = env
    for total in (2 * REWARD - 1, 3 * REWARD, 0):
        settlement, _ = book.build([(d.workers[0], 1), (d.workers[1], 1)], cumulative_total=total)
        with reverts("SettlementWrongTotal", batch_id, 2 * REWARD, total):
            d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})


def test_cannot_settle_more_than_the_batch_funds(deployment):
    d = deployment
    requester = requester_with_key()
    batch_id = settled_batch(d.escrow, requester, task_count=3, answers_per_task=1)  # funds for 3 answers
    book = SettlementBook(d.escrow, batch_id, requester, REWARD)
    settlement, _ = book.build([(w, 0) for w in d.workers])  # 4 answers
    funds = 3 * (REWARD + RELAY_FEE)
    with reverts("SettlementInsufficientFunds", batch_id, 4 * (REWARD + RELAY_FEE), funds):
        d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})


def test_entries_must_be_sorted_distinct_and_name_workers(env):
    d, _, batch_id, book = env
    a, b = sorted(d.workers[:2], key=lambda w: int(w.address, 16))
    cases = [
        ((word(b, 0, 1), word(a, 0, 1)), "SettlementUnsorted", (batch_id, 1)),
        ((word(a, 1, 1), word(a, 0, 1)), "SettlementUnsorted", (batch_id, 1)),
        ((word(a, 0, 1), word(a, 0, 2)), "SettlementUnsorted", (batch_id, 1)),
        ((word(ZERO_ADDRESS, 1, 1),), "SettlementInvalidWorker", (batch_id, 0)),
    ]
    for entries, error, args in cases:
        total = len(entries) * REWARD
        settlement, _ = book.build([], settled=entries, cumulative_total=total, earnings={a.address: total})
        with reverts(error, *args):
            d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})


def test_tasks_must_exist(env):
    d, _, batch_id, book = env  # 400 tasks: word 2 holds tasks 384..399 (bits 0..15)
    w = d.workers[0]
    cases = [word(w, 2, 16), word(w, 3, 0), word(w, 0, 192), word(w, 2**32 - 1, 0)]
    for entry in cases:
        settlement, _ = book.build([], settled=(entry,), cumulative_total=REWARD, earnings={w.address: REWARD})
        with reverts("SettlementTaskOutOfRange", batch_id, w.address, entry.word_index):
            d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})
    ok, _ = book.build([(w, 399)])
    d.escrow.settle(ok.as_tuple(), book.sign(ok), {"from": d.relay})


def test_an_answer_is_settled_once(env):
    d, _, batch_id, book = env
    w = d.workers[0]
    book.post([(w, 7), (w, 300)], d.relay)
    for task in (7, 300):
        settlement, _ = book.build([(w, task), (w, 8)])
        with reverts("SettlementAlreadySettled", batch_id, w.address, task):
            d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})


# ---------------------------------------------------------------- one answer, one path


def test_direct_path_refuses_settled_answers(env):
    d, requester, batch_id, book = env
    w = d.workers[0]
    book.post([(w, 3)], d.relay)
    funds = batch_field(d.escrow, batch_id, "funds")
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 3), signed_answer(d.escrow, w, batch_id, 4)])
    assert skipped(tx) == [(w.address, 3, ALREADY_ANSWERED)]
    assert accepted(tx) == [(w.address, 4)]
    assert batch_field(d.escrow, batch_id, "funds") == funds - (REWARD + RELAY_FEE)
    _invariant(d, requester, [batch_id])


def test_cannot_settle_answers_pending_or_paid_on_the_direct_path(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, 40), signed_answer(d.escrow, w1, batch_id, 41)])
    d.escrow.approve(batch_id, sets([(w1, 41)]), {"from": requester})
    assert status(d.escrow, batch_id, w0, 40) == PENDING and status(d.escrow, batch_id, w1, 41) == PAID
    for w, task in ((w0, 40), (w1, 41)):
        settlement, _ = book.build([(w, task), (w, 42)])
        with reverts("SettlementAnsweredDirectly", batch_id, w.address, task):
            d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})
    # Other workers' answers to the same tasks, and the same worker's other tasks, settle.
    book.post([(w1, 40), (w0, 41), (w0, 42)], d.relay)
    _invariant(d, requester, [batch_id])


def test_a_rejected_direct_answer_may_be_settled_and_is_paid_once(env):
    d, requester, batch_id, book = env
    w = d.workers[0]
    submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 9)])
    d.escrow.reject(batch_id, sets([(w, 9)]), REASON_CID, {"from": requester})
    book.post([(w, 9)], d.relay)
    d.escrow.claimEarnings(*book.claim_args(w), {"from": d.relay})
    assert d.escrow.balanceOf(ETH, w) == REWARD
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 9)])
    assert skipped(tx) == [(w.address, 9, ALREADY_ANSWERED)]
    _invariant(d, requester, [batch_id])


def test_unsettled_answer_falls_back_to_submit_review_release(env):
    """The requester settles w0 but leaves w1's answer out: w1 pushes it through the direct path."""
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 5)], d.relay)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w1, batch_id, 5)])
    assert accepted(tx) == [(w1.address, 5)]
    mine_at(now() + 601)
    d.escrow.release(batch_id, sets([(w1, 5)]), {"from": d.stranger})
    assert d.escrow.balanceOf(ETH, w1) == REWARD
    # ...and that answer can no longer be settled.
    settlement, _ = book.build([(w1, 5)])
    with reverts("SettlementAnsweredDirectly", batch_id, w1.address, 5):
        d.escrow.settle(settlement.as_tuple(), book.sign(settlement), {"from": d.relay})
    _invariant(d, requester, [batch_id])


# ---------------------------------------------------------------- claims


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
    _invariant(d, requester, [batch_id])

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
    assert _invariant(d, requester, [batch_id]) == 0


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
    _invariant(d, requester, [b.batch_id for b in books])


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
    _invariant(d, requester, [batch_id])


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
    assert _invariant(d, requester, [batch_id]) == 0


def test_reclaim_leaves_the_claimable_pool_alone(env):
    d, requester, batch_id, book = env
    w0 = d.workers[0]
    book.post([(w0, 1)], d.relay)
    deadline = batch_field(d.escrow, batch_id, "deadline")
    mine_at(deadline + 1)
    d.escrow.reclaim(batch_id, {"from": requester})
    assert batch_field(d.escrow, batch_id, "funds") == 0
    assert _invariant(d, requester, [batch_id]) == REWARD
    d.escrow.claimEarnings(*book.claim_args(w0), {"from": d.relay})
    assert _invariant(d, requester, [batch_id]) == 0
