"""approve / reject / release: strict review of pending answers inside or after their window.

Review calls name answers by task sets (ITaskEscrow.TaskSet): one worker's answers in one group of
96 tasks, task `firstTask + b` for every set bit b of `tasks`, as the review events name them."""

from _helpers import outcomes, token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import (
    DAY,
    REASON_CID,
    ints,
    new_batch,
    reverts,
    reviewed,
    sets,
    settled,
    single,
    status,
    submitted,
)

NONE, PENDING, PAID, REJECTED = range(4)
APPROVED, REJECTED_OUTCOME, RELEASED = range(3)
TASK_FULL = 7  # ITaskEscrow.SkipReason
FULL_GROUP = 2**96 - 1


def events(tx, name):
    """(worker, firstTask, tasks) of the `name` review events of `tx`, in emission order."""
    return [(e["worker"], e["firstTask"], e["tasks"]) for e in tx.events[name]] if name in tx.events else []


def by_address(accounts):
    """The accounts in the order `sets` lists workers: by address, case-insensitively."""
    return sorted(accounts, key=lambda a: a.address.lower())


def test_approve_credits_workers_and_records_reputation(escrow, reputation, requester, eth_batch, workers, submit):
    w0, w1 = by_address(workers[:2])
    entries = [(w0, eth_batch, 0), (w0, eth_batch, 1), (w1, eth_batch, 0)]
    submit(entries)
    owed = token_balance(ZERO_ADDRESS, escrow)
    reward = escrow.batch(eth_batch)["reward"]
    tx = escrow.approve(eth_batch, sets(entries), {"from": requester})

    # one set per worker and 96-task group: one event, one credit, one record
    assert [dict(e) for e in tx.events["AnswersApproved"]] == [
        {"batchId": eth_batch, "worker": w0.address, "firstTask": 0, "tasks": 0b11},
        {"batchId": eth_batch, "worker": w1.address, "firstTask": 0, "tasks": 0b1},
    ]
    assert reviewed(tx, "AnswersApproved") == [(eth_batch, w.address, t) for w, _, t in entries]
    assert outcomes(tx) == [(w0, requester, APPROVED, 2), (w1, requester, APPROVED, 1)]
    assert escrow.balanceOf(ZERO_ADDRESS, w0) == 2 * reward
    assert escrow.balanceOf(ZERO_ADDRESS, w1) == reward
    assert escrow.batch(eth_batch)["pending"] == 0
    assert token_balance(ZERO_ADDRESS, escrow) == owed  # moved from the batch to the workers
    assert status(escrow, eth_batch, w0, 1)[0] == PAID
    assert ints(reputation.workerRecord(w0)) == (2, 0, 0)
    assert ints(reputation.requesterRecord(requester)) == (3, 0, 0)
    assert reputation.score(w0) == 2


def test_approve_sets_in_the_order_given_records_each_run(escrow, requester, eth_batch, workers, submit):
    """Sets are reviewed in the order given: one set per answer, in arrival order (w0, w1, w0),
    is three runs of a worker's sets, three records; the credits are the same."""
    entries = [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0), (workers[0], eth_batch, 1)]
    submit(entries)
    tx = escrow.approve(eth_batch, [single(w, t) for w, _, t in entries], {"from": requester})
    assert events(tx, "AnswersApproved") == [(w.address, 0, 1 << t) for w, _, t in entries]
    assert outcomes(tx) == [(workers[0], requester, APPROVED, 1), (workers[1], requester, APPROVED, 1),
                            (workers[0], requester, APPROVED, 1)]
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 2 * escrow.batch(eth_batch)["reward"]
    assert escrow.balanceOf(ZERO_ADDRESS, workers[1]) == escrow.batch(eth_batch)["reward"]


def test_approve_errors(escrow, requester, outsider, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 1)])
    with reverts("EscrowUnknownBatch", 77):
        escrow.approve(77, sets([(workers[0], 0)]), {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.approve(eth_batch, sets([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 1, NONE):
        escrow.approve(eth_batch, sets([(workers[0], 1)]), {"from": requester})
    # all or nothing: the same answer in two sets of one call, the second finds it already paid
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.approve(eth_batch, [single(workers[0], 0)] * 2, {"from": requester})
    assert status(escrow, eth_batch, workers[0], 0)[0] == PENDING
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 0
    escrow.approve(eth_batch, sets([(workers[0], 0)]), {"from": requester})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.approve(eth_batch, sets([(workers[0], 0)]), {"from": requester})


def test_review_window_closes(escrow, requester, eth_batch, workers, submit):
    """One clock per answer word: the error names the set's lowest task."""
    tx = submit([(workers[0], eth_batch, 2), (workers[0], eth_batch, 3)])
    review_deadline = chain[tx.block_number].timestamp + 3 * DAY
    chain.sleep(3 * DAY + 10)
    answers = sets([(workers[0], 3), (workers[0], 2)])
    with reverts("EscrowReviewWindowClosed", eth_batch, workers[0], 2, review_deadline):
        escrow.approve(eth_batch, answers, {"from": requester})
    with reverts("EscrowReviewWindowClosed", eth_batch, workers[0], 2, review_deadline):
        escrow.reject(eth_batch, answers, REASON_CID, {"from": requester})
    with reverts("EscrowReviewWindowClosed", eth_batch, workers[0], 3, review_deadline):
        escrow.reject(eth_batch, [single(workers[0], 3)], REASON_CID, {"from": requester})


def test_reject_returns_reward_and_reopens_the_task(escrow, reputation, requester, eth_batch, workers, submit):
    w0, w1 = by_address(workers[:2])
    submit([(w0, eth_batch, 2), (w1, eth_batch, 2)])
    batch = escrow.batch(eth_batch)
    owed = token_balance(ZERO_ADDRESS, escrow)
    tx = escrow.reject(eth_batch, sets([(w0, 2), (w1, 2)]), REASON_CID, {"from": requester})

    assert [dict(e) for e in tx.events["AnswersRejected"]] == [
        {"batchId": eth_batch, "worker": w.address, "firstTask": 0, "tasks": 1 << 2,
         "reasonCid": "0x" + REASON_CID.hex()}
        for w in (w0, w1)
    ]
    assert outcomes(tx) == [(w0, requester, REJECTED_OUTCOME, 1), (w1, requester, REJECTED_OUTCOME, 1)]
    after = escrow.batch(eth_batch)
    assert after["funds"] == batch["funds"] + 2 * batch["reward"]  # the relay keeps its fees
    assert after["pending"] == 0
    assert escrow.taskAnswerCount(eth_batch, 2) == 0
    assert status(escrow, eth_batch, w0, 2)[0] == REJECTED
    assert escrow.balanceOf(ZERO_ADDRESS, w0) == 0
    assert token_balance(ZERO_ADDRESS, escrow) == owed
    assert ints(reputation.workerRecord(w0)) == (0, 1, 0)
    assert ints(reputation.requesterRecord(requester)) == (0, 2, 0)


def test_reject_errors(escrow, requester, outsider, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0)])
    with reverts("EscrowEmptyReason"):
        escrow.reject(eth_batch, sets([(workers[0], 0)]), b"", {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.reject(eth_batch, sets([(workers[0], 0)]), REASON_CID, {"from": outsider})
    with reverts("EscrowUnknownBatch", 5):
        escrow.reject(5, sets([(workers[0], 0)]), REASON_CID, {"from": requester})
    escrow.reject(eth_batch, sets([(workers[0], 0)]), REASON_CID, {"from": requester})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, REJECTED):
        escrow.approve(eth_batch, sets([(workers[0], 0)]), {"from": requester})


def test_release_after_review_window_by_anyone(escrow, reputation, requester, outsider, eth_batch, workers, submit):
    w0, w1 = by_address(workers[:2])
    entries = [(w0, eth_batch, 0), (w1, eth_batch, 0), (w1, eth_batch, 1)]
    submit(entries)
    chain.sleep(3 * DAY + 10)
    tx = escrow.release(eth_batch, sets(entries), {"from": outsider})

    assert reviewed(tx, "AnswersReleased") == [(eth_batch, w.address, t) for w, _, t in entries]
    assert events(tx, "AnswersReleased") == [(w0.address, 0, 0b1), (w1.address, 0, 0b11)]  # one per set
    assert outcomes(tx) == [(w0, requester, RELEASED, 1), (w1, requester, RELEASED, 2)]
    reward = escrow.batch(eth_batch)["reward"]
    assert escrow.balanceOf(ZERO_ADDRESS, w1) == 2 * reward
    assert escrow.batch(eth_batch)["pending"] == 0
    assert status(escrow, eth_batch, w1, 1)[0] == PAID
    assert ints(reputation.workerRecord(w1)) == (0, 0, 2)
    assert ints(reputation.requesterRecord(requester)) == (0, 0, 3)
    assert reputation.score(w1) == 2


def test_release_errors(escrow, outsider, eth_batch, workers, submit):
    tx = submit([(workers[0], eth_batch, 0)])
    review_deadline = chain[tx.block_number].timestamp + 3 * DAY
    with reverts("EscrowReviewWindowOpen", eth_batch, workers[0], 0, review_deadline):
        escrow.release(eth_batch, sets([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowUnknownBatch", 9):
        escrow.release(9, sets([(workers[0], 0)]), {"from": outsider})
    chain.sleep(3 * DAY + 10)
    escrow.release(eth_batch, sets([(workers[0], 0)]), {"from": outsider})
    with reverts("EscrowAnswerNotPending", eth_batch, workers[0], 0, PAID):
        escrow.release(eth_batch, sets([(workers[0], 0)]), {"from": outsider})


def test_usdc_review_round_trip(escrow, stablecoin, funded_requester, usdc_batch, workers, submit):
    entries = [(workers[0], usdc_batch, t) for t in range(4)]
    submit(entries)
    escrow.approve(usdc_batch, sets(entries[:2]), {"from": funded_requester})
    escrow.reject(usdc_batch, sets(entries[2:3]), REASON_CID, {"from": funded_requester})
    chain.sleep(3 * DAY + 10)
    escrow.release(usdc_batch, sets(entries[3:]), {"from": funded_requester})
    assert escrow.balanceOf(stablecoin, workers[0]) == 3 * 10**6
    assert settled(escrow.approve(usdc_batch, [], {"from": funded_requester}), "AnswersApproved") == []


# ------------------------------------------------------------------ the task set encoding


def _review(escrow, call, batch_id, task_sets, requester, outsider):
    if call == "approve":
        return escrow.approve(batch_id, task_sets, {"from": requester})
    if call == "reject":
        return escrow.reject(batch_id, task_sets, REASON_CID, {"from": requester})
    return escrow.release(batch_id, task_sets, {"from": outsider})


def test_invalid_task_sets_revert(escrow, reputation, requester, outsider, eth_batch, workers, submit):
    """firstTask a multiple of 96, at least one task, no bit at or above 96: checked before the
    answers themselves, for every review call; one invalid set reverts the whole call."""
    w, other = workers[0], workers[1]  # `other` has no answers: the set's shape is checked first
    submit([(w, eth_batch, 0), (w, eth_batch, 1)])
    batch = escrow.batch(eth_batch)
    invalid = [
        (w, 1, 0b1),                  # firstTask not a multiple of 96
        (w, 95, 0b11),
        (w, 97, 0b1),
        (other, 1, 0b1),
        (w, 0, 0),                    # no task
        (w, 96, 0),
        (w, 0, 1 << 96),              # task 96 of the group: outside it
        (w, 0, 0b11 | 1 << 96),       # valid tasks, and one bit too high
        (w, 96, 1 | 1 << 255),
        (other, 0, 2**256 - 1),
    ]
    for call in ("approve", "reject", "release"):
        if call == "release":
            chain.sleep(3 * DAY + 10)
        for who, first, tasks in invalid:
            with reverts("EscrowInvalidTaskSet", eth_batch, who, first, tasks):
                _review(escrow, call, eth_batch, [(who.address, first, tasks)], requester, outsider)
        # after a valid set: all or nothing
        with reverts("EscrowInvalidTaskSet", eth_batch, w, 0, 0):
            _review(escrow, call, eth_batch, [single(w, 0), (w.address, 0, 0)], requester, outsider)
    assert escrow.batch(eth_batch) == batch
    assert [status(escrow, eth_batch, w, t)[0] for t in (0, 1)] == [PENDING, PENDING]
    assert escrow.balanceOf(ZERO_ADDRESS, w) == 0
    assert ints(reputation.workerRecord(w)) == (0, 0, 0)
    # the same answers, named by a valid set, are reviewed
    tx = escrow.release(eth_batch, [(w.address, 0, 0b11)], {"from": outsider})
    assert events(tx, "AnswersReleased") == [(w.address, 0, 0b11)]


def _mixed_set_case(escrow, requester, workers, submit):
    """Worker 0's answers in group 0 of a fresh batch: 0, 2, 5, 95 pending; 3 paid; 40 rejected."""
    batch_id = new_batch(escrow, requester, taskCount=96, answersPerTask=2)
    w = workers[0]
    submit([(w, batch_id, t) for t in (0, 2, 3, 5, 40, 95)])
    escrow.approve(batch_id, sets([(w, 3)]), {"from": requester})
    escrow.reject(batch_id, sets([(w, 40)]), REASON_CID, {"from": requester})
    return batch_id, w


def _snapshot(escrow, reputation, batch_id, w):
    return (
        escrow.batch(batch_id),
        [status(escrow, batch_id, w, t) for t in (0, 1, 2, 3, 5, 40, 94, 95)],
        [escrow.taskAnswerCount(batch_id, t) for t in (0, 2, 3, 5, 40, 95)],
        escrow.balanceOf(ZERO_ADDRESS, w),
        ints(reputation.workerRecord(w)),
        ints(reputation.requesterRecord(escrow.batch(batch_id)["requester"])),
    )


def test_a_set_with_an_answer_not_pending_reverts_naming_the_lowest(escrow, reputation, requester, outsider,
                                                                    workers, submit):
    """Every answer a set names must be pending; the error names the lowest task that is not,
    with its status, and the call changes nothing."""
    batch_id, w = _mixed_set_case(escrow, requester, workers, submit)
    cases = [
        ([0, 1, 2, 3], 1, NONE),          # unanswered below a paid one
        ([0, 2, 3, 40, 95], 3, PAID),      # paid below a rejected one
        ([0, 5, 40, 95], 40, REJECTED),
        ([0, 2, 5, 94, 95], 94, NONE),     # the group's top lanes
        ([95, 3], 3, PAID),
    ]
    for call in ("approve", "reject", "release"):
        if call == "release":
            chain.sleep(3 * DAY + 10)
        before = _snapshot(escrow, reputation, batch_id, w)
        for tasks, task, state in cases:
            [named] = sets([(w, t) for t in tasks])
            with reverts("EscrowAnswerNotPending", batch_id, w, task, state):
                _review(escrow, call, batch_id, [named], requester, outsider)
        # the mixed set after a set of pending answers, and before a valid one: all or nothing
        with reverts("EscrowAnswerNotPending", batch_id, w, 3, PAID):
            _review(escrow, call, batch_id, [single(w, 0), (w.address, 0, 1 << 2 | 1 << 3), single(w, 5)],
                    requester, outsider)
        # another worker's set naming answers it never gave
        with reverts("EscrowAnswerNotPending", batch_id, workers[1], 2, NONE):
            _review(escrow, call, batch_id, [single(w, 0), (workers[1].address, 0, 1 << 2 | 1 << 5)],
                    requester, outsider)
        assert _snapshot(escrow, reputation, batch_id, w) == before
        assert [status(escrow, batch_id, w, t)[0] for t in (0, 2, 5, 95)] == [PENDING] * 4
    # and the pending ones, named alone, are reviewed
    tx = escrow.release(batch_id, sets([(w, t) for t in (0, 2, 5, 95)]), {"from": outsider})
    assert events(tx, "AnswersReleased") == [(w.address, 0, 1 | 1 << 2 | 1 << 5 | 1 << 95)]


def test_a_set_spanning_a_whole_group_approves_all_96_at_once(escrow, reputation, requester, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=200, answersPerTask=1, deadline=chain.time() + 30 * DAY)
    w = workers[0]
    group = list(range(96, 192))
    submit([(w, batch_id, t) for t in [95] + group + [192]])  # and one answer in each neighbouring group
    reward, pending = escrow.batch(batch_id)["reward"], escrow.batch(batch_id)["pending"]
    review_deadline = status(escrow, batch_id, w, 96)[1]
    assert sets([(w, t) for t in group]) == [(w.address, 96, FULL_GROUP)]

    tx = escrow.approve(batch_id, [(w.address, 96, FULL_GROUP)], {"from": requester})

    assert [dict(e) for e in tx.events["AnswersApproved"]] == [
        {"batchId": batch_id, "worker": w.address, "firstTask": 96, "tasks": FULL_GROUP}]
    assert outcomes(tx) == [(w, requester, APPROVED, 96)]
    assert escrow.balanceOf(ZERO_ADDRESS, w) == 96 * reward
    assert escrow.batch(batch_id)["pending"] == pending - 96
    # every lane paid, the word's clock intact, the neighbouring words untouched
    assert [status(escrow, batch_id, w, t) for t in group] == [(PAID, review_deadline)] * 96
    assert [status(escrow, batch_id, w, t)[0] for t in (95, 192)] == [PENDING, PENDING]
    assert ints(reputation.workerRecord(w)) == (96, 0, 0)
    with reverts("EscrowAnswerNotPending", batch_id, w, 96, PAID):
        escrow.approve(batch_id, [(w.address, 96, FULL_GROUP)], {"from": requester})


def test_two_sets_of_one_worker_and_group_in_one_call(escrow, reputation, requester, eth_batch, workers, submit):
    """Disjoint sets of the same (worker, group): both apply, one event each, one record (the
    worker's consecutive sets); overlapping ones: the second finds the first's answers reviewed."""
    w = workers[0]
    submit([(w, eth_batch, t) for t in range(4)])
    reward = escrow.batch(eth_batch)["reward"]
    with reverts("EscrowAnswerNotPending", eth_batch, w, 1, PAID):
        escrow.approve(eth_batch, [(w.address, 0, 0b0011), (w.address, 0, 0b0110)], {"from": requester})
    assert [status(escrow, eth_batch, w, t)[0] for t in range(4)] == [PENDING] * 4

    tx = escrow.approve(eth_batch, [(w.address, 0, 0b0101), (w.address, 0, 0b1010)], {"from": requester})

    assert events(tx, "AnswersApproved") == [(w.address, 0, 0b0101), (w.address, 0, 0b1010)]
    assert outcomes(tx) == [(w, requester, APPROVED, 4)]
    assert [status(escrow, eth_batch, w, t)[0] for t in range(4)] == [PAID] * 4
    assert escrow.balanceOf(ZERO_ADDRESS, w) == 4 * reward
    assert escrow.batch(eth_batch)["pending"] == 0
    assert ints(reputation.workerRecord(w)) == (4, 0, 0)


def test_sets_of_one_worker_split_by_another_workers_set(escrow, reputation, requester, workers, submit):
    """w0's sets around w1's are two runs (two records); w0's consecutive sets of different
    groups are one; every answer is credited once."""
    batch_id = new_batch(escrow, requester, taskCount=200, answersPerTask=2, deadline=chain.time() + 30 * DAY)
    w0, w1 = workers[:2]
    submit([(w0, batch_id, t) for t in (1, 2, 100, 150, 199)] + [(w1, batch_id, t) for t in (2, 3)])
    reward, owed = escrow.batch(batch_id)["reward"], token_balance(ZERO_ADDRESS, escrow)
    task_sets = sets([(w0, 1), (w0, 2)]) + sets([(w1, 2), (w1, 3)]) + sets([(w0, 100), (w0, 150), (w0, 199)])

    tx = escrow.approve(batch_id, task_sets, {"from": requester})

    assert events(tx, "AnswersApproved") == [
        (w0.address, 0, 0b110), (w1.address, 0, 0b1100), (w0.address, 96, 1 << 4 | 1 << 54), (w0.address, 192, 1 << 7)]
    assert outcomes(tx) == [(w0, requester, APPROVED, 2), (w1, requester, APPROVED, 2), (w0, requester, APPROVED, 3)]
    assert escrow.balanceOf(ZERO_ADDRESS, w0) == 5 * reward
    assert escrow.balanceOf(ZERO_ADDRESS, w1) == 2 * reward
    assert token_balance(ZERO_ADDRESS, escrow) == owed
    assert escrow.batch(batch_id)["pending"] == 0
    assert ints(reputation.workerRecord(w0)) == (5, 0, 0)
    assert ints(reputation.workerRecord(w1)) == (2, 0, 0)
    assert ints(reputation.requesterRecord(requester)) == (7, 0, 0)


def test_reject_of_a_set_reopens_exactly_its_tasks(escrow, requester, workers, submit):
    """One answer per task: rejecting a set frees the named tasks' slots (across count words),
    and only those."""
    batch_id = new_batch(escrow, requester, taskCount=96, answersPerTask=1)
    w0, w1 = workers[:2]
    tasks = [0, 31, 32, 64, 95]
    submit([(w0, batch_id, t) for t in tasks])
    funds, reward = escrow.batch(batch_id)["funds"], escrow.batch(batch_id)["reward"]

    tx = escrow.reject(batch_id, sets([(w0, 31), (w0, 32), (w0, 95)]), REASON_CID, {"from": requester})

    assert events(tx, "AnswersRejected") == [(w0.address, 0, 1 << 31 | 1 << 32 | 1 << 95)]
    assert [escrow.taskAnswerCount(batch_id, t) for t in tasks] == [1, 0, 0, 1, 0]
    assert [status(escrow, batch_id, w0, t)[0] for t in tasks] == [PENDING, REJECTED, REJECTED, PENDING, REJECTED]
    assert escrow.batch(batch_id)["funds"] == funds + 3 * reward
    tx = submit([(w1, batch_id, t) for t in tasks])
    assert [t for _, t, _ in submitted(tx)] == [31, 32, 95]
    assert [(e["taskIndex"], e["reason"]) for e in tx.events["AnswerSkipped"]] == [(0, TASK_FULL), (64, TASK_FULL)]
    assert [escrow.taskAnswerCount(batch_id, t) for t in tasks] == [1] * 5


def test_release_of_a_set_waits_for_its_review_window(escrow, reputation, requester, outsider, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=200, answersPerTask=1, deadline=chain.time() + 30 * DAY)
    w = workers[0]
    first = submit([(w, batch_id, 5), (w, batch_id, 9)])
    chain.sleep(DAY)
    later = submit([(w, batch_id, 101)])  # group 1: a clock of its own
    deadline, later_deadline = first.timestamp + 3 * DAY, later.timestamp + 3 * DAY
    with reverts("EscrowReviewWindowOpen", batch_id, w, 5, deadline):
        escrow.release(batch_id, sets([(w, 5), (w, 9)]), {"from": outsider})
    chain.sleep(2 * DAY + 60)  # past the first window, not the second
    with reverts("EscrowReviewWindowOpen", batch_id, w, 101, later_deadline):
        escrow.release(batch_id, sets([(w, 5), (w, 9), (w, 101)]), {"from": outsider})
    assert [status(escrow, batch_id, w, t)[0] for t in (5, 9, 101)] == [PENDING] * 3
    assert escrow.balanceOf(ZERO_ADDRESS, w) == 0
    reward, pending = escrow.batch(batch_id)["reward"], escrow.batch(batch_id)["pending"]

    tx = escrow.release(batch_id, sets([(w, 5), (w, 9)]), {"from": outsider})

    assert events(tx, "AnswersReleased") == [(w.address, 0, 1 << 5 | 1 << 9)]
    assert outcomes(tx) == [(w, requester, RELEASED, 2)]
    assert escrow.balanceOf(ZERO_ADDRESS, w) == 2 * reward
    assert escrow.balanceOf(ZERO_ADDRESS, outsider) == 0
    assert escrow.batch(batch_id)["pending"] == pending - 2
    assert [status(escrow, batch_id, w, t)[0] for t in (5, 9, 101)] == [PAID, PAID, PENDING]
    assert ints(reputation.workerRecord(w)) == (0, 0, 2)
