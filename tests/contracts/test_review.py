"""approve / reject / release: strict review of pending answers inside or after their window."""

from brownie import ZERO_ADDRESS, chain
from conftest import DAY, REASON_CID, ints, refs, reverts, reviewed, settled, status

NONE, PENDING, PAID, REJECTED = range(4)
APPROVED, REJECTED_OUTCOME, RELEASED = range(3)


def outcomes(tx):
    return [(e["worker"], e["requester"], e["outcome"], e["count"]) for e in tx.events["OutcomeRecorded"]]


def test_approve_credits_workers_and_records_reputation(escrow, reputation, requester, eth_batch, workers, submit):
    entries = [(workers[0], eth_batch, 0), (workers[0], eth_batch, 1), (workers[1], eth_batch, 0)]
    submit(entries)
    owed = escrow.totalOwed(ZERO_ADDRESS)
    reward = escrow.batch(eth_batch)["reward"]
    tx = escrow.approve(eth_batch, refs(entries), {"from": requester})

    # consecutive answers of one worker in one 96-task group: one event, one credit, one record
    assert [dict(e) for e in tx.events["AnswersApproved"]] == [
        {"batchId": eth_batch, "worker": workers[0].address, "firstTask": 0, "tasks": 0b11},
        {"batchId": eth_batch, "worker": workers[1].address, "firstTask": 0, "tasks": 0b1},
    ]
    assert reviewed(tx, "AnswersApproved") == [(eth_batch, w.address, t) for w, _, t in entries]
    assert outcomes(tx) == [(workers[0], requester, APPROVED, 2), (workers[1], requester, APPROVED, 1)]
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 2 * reward
    assert escrow.balanceOf(ZERO_ADDRESS, workers[1]) == reward
    assert escrow.batch(eth_batch)["pending"] == 0
    assert escrow.totalOwed(ZERO_ADDRESS) == owed  # moved from the batch to the workers
    assert status(escrow, eth_batch, workers[0], 1)[0] == PAID
    assert ints(reputation.workerRecord(workers[0])) == (2, 0, 0)
    assert ints(reputation.requesterRecord(requester)) == (3, 0, 0)
    assert reputation.score(workers[0]) == 2


def test_approve_interleaved_workers_records_each_run(escrow, requester, eth_batch, workers, submit):
    entries = [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0), (workers[0], eth_batch, 1)]
    submit(entries)
    tx = escrow.approve(eth_batch, refs(entries), {"from": requester})
    assert outcomes(tx) == [(workers[0], requester, APPROVED, 1), (workers[1], requester, APPROVED, 1),
                            (workers[0], requester, APPROVED, 1)]
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 2 * escrow.batch(eth_batch)["reward"]


def test_approve_errors(escrow, requester, outsider, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 1)])
    with reverts("EscrowUnknownBatch", 77):
        escrow.approve(77, refs([(workers[0], 0)]), {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.approve(eth_batch, refs([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 1, NONE):
        escrow.approve(eth_batch, refs([(workers[0], 1)]), {"from": requester})
    # all or nothing: a duplicate in the same call finds the answer already paid
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.approve(eth_batch, refs([(workers[0], 0), (workers[0], 0)]), {"from": requester})
    escrow.approve(eth_batch, refs([(workers[0], 0)]), {"from": requester})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.approve(eth_batch, refs([(workers[0], 0)]), {"from": requester})


def test_review_window_closes(escrow, requester, eth_batch, workers, submit):
    tx = submit([(workers[0], eth_batch, 0)])
    review_deadline = chain[tx.block_number].timestamp + 3 * DAY
    chain.sleep(3 * DAY + 10)
    with reverts("EscrowReviewWindowClosed", eth_batch, workers[0], 0, review_deadline):
        escrow.approve(eth_batch, refs([(workers[0], 0)]), {"from": requester})
    with reverts("EscrowReviewWindowClosed", eth_batch, workers[0], 0, review_deadline):
        escrow.reject(eth_batch, refs([(workers[0], 0)]), REASON_CID, {"from": requester})


def test_reject_returns_reward_and_reopens_the_task(escrow, reputation, requester, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 2), (workers[1], eth_batch, 2)])
    batch = escrow.batch(eth_batch)
    owed = escrow.totalOwed(ZERO_ADDRESS)
    tx = escrow.reject(eth_batch, refs([(workers[0], 2), (workers[1], 2)]), REASON_CID, {"from": requester})

    assert [dict(e) for e in tx.events["AnswersRejected"]] == [
        {"batchId": eth_batch, "worker": w.address, "firstTask": 0, "tasks": 1 << 2,
         "reasonCid": "0x" + REASON_CID.hex()}
        for w in workers[:2]
    ]
    assert outcomes(tx) == [(workers[0], requester, REJECTED_OUTCOME, 1), (workers[1], requester, REJECTED_OUTCOME, 1)]
    after = escrow.batch(eth_batch)
    assert after["funds"] == batch["funds"] + 2 * batch["reward"]  # the relay keeps its fees
    assert after["pending"] == 0
    assert escrow.taskAnswerCount(eth_batch, 2) == 0
    assert status(escrow, eth_batch, workers[0], 2)[0] == REJECTED
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 0
    assert escrow.totalOwed(ZERO_ADDRESS) == owed
    assert ints(reputation.workerRecord(workers[0])) == (0, 1, 0)
    assert ints(reputation.requesterRecord(requester)) == (0, 2, 0)


def test_reject_errors(escrow, requester, outsider, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0)])
    with reverts("EscrowEmptyReason"):
        escrow.reject(eth_batch, refs([(workers[0], 0)]), b"", {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.reject(eth_batch, refs([(workers[0], 0)]), REASON_CID, {"from": outsider})
    with reverts("EscrowUnknownBatch", 5):
        escrow.reject(5, refs([(workers[0], 0)]), REASON_CID, {"from": requester})
    escrow.reject(eth_batch, refs([(workers[0], 0)]), REASON_CID, {"from": requester})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, REJECTED):
        escrow.approve(eth_batch, refs([(workers[0], 0)]), {"from": requester})


def test_release_after_review_window_by_anyone(escrow, reputation, requester, outsider, eth_batch, workers, submit):
    entries = [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0), (workers[1], eth_batch, 1)]
    submit(entries)
    chain.sleep(3 * DAY + 10)
    tx = escrow.release(eth_batch, refs(entries), {"from": outsider})

    assert reviewed(tx, "AnswersReleased") == [(eth_batch, w.address, t) for w, _, t in entries]
    assert len(tx.events["AnswersReleased"]) == 2  # one per worker and group
    assert outcomes(tx) == [(workers[0], requester, RELEASED, 1), (workers[1], requester, RELEASED, 2)]
    reward = escrow.batch(eth_batch)["reward"]
    assert escrow.balanceOf(ZERO_ADDRESS, workers[1]) == 2 * reward
    assert escrow.batch(eth_batch)["pending"] == 0
    assert status(escrow, eth_batch, workers[1], 1)[0] == PAID
    assert ints(reputation.workerRecord(workers[1])) == (0, 0, 2)
    assert ints(reputation.requesterRecord(requester)) == (0, 0, 3)
    assert reputation.score(workers[1]) == 2


def test_release_errors(escrow, outsider, eth_batch, workers, submit):
    tx = submit([(workers[0], eth_batch, 0)])
    review_deadline = chain[tx.block_number].timestamp + 3 * DAY
    with reverts("EscrowReviewWindowOpen", eth_batch, workers[0], 0, review_deadline):
        escrow.release(eth_batch, refs([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowUnknownBatch", 9):
        escrow.release(9, refs([(workers[0], 0)]), {"from": outsider})
    chain.sleep(3 * DAY + 10)
    escrow.release(eth_batch, refs([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.release(eth_batch, refs([(workers[0], 0)]), {"from": outsider})


def test_usdc_review_round_trip(escrow, stablecoin, funded_requester, usdc_batch, workers, submit):
    entries = [(workers[0], usdc_batch, t) for t in range(4)]
    submit(entries)
    escrow.approve(usdc_batch, refs(entries[:2]), {"from": funded_requester})
    escrow.reject(usdc_batch, refs(entries[2:3]), REASON_CID, {"from": funded_requester})
    chain.sleep(3 * DAY + 10)
    escrow.release(usdc_batch, refs(entries[3:]), {"from": funded_requester})
    assert escrow.balanceOf(stablecoin, workers[0]) == 3 * 10**6
    assert settled(escrow.approve(usdc_batch, [], {"from": funded_requester}), "AnswersApproved") == []
