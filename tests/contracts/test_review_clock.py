"""The review clock of a (worker, 96-task group): an answer whose window closed cannot be
given a second window by a later answer of the same worker; it is released first."""

from _helpers import outcomes, token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import (
    DAY,
    REASON_CID,
    digest_for,
    ints,
    new_batch,
    reverts,
    reviewed,
    sets,
    sign_answers,
    status,
    submitted,
)

NONE, PENDING, PAID, REJECTED = range(4)
RELEASED = 2


def test_a_later_answer_releases_overdue_answers_of_its_group(escrow, reputation, requester, workers, submit):
    batch = new_batch(escrow, requester, taskCount=200, answersPerTask=1, deadline=chain.time() + 30 * DAY)
    worker = workers[0]
    submit([(worker, batch, 0), (worker, batch, 5)])
    submit([(worker, batch, 100)])  # another group: its clock is its own
    chain.sleep(3 * DAY + 60)
    owed, pending = token_balance(ZERO_ADDRESS, escrow), escrow.batch(batch)["pending"]
    reward = escrow.batch(batch)["reward"]

    tx = submit([(worker, batch, 7)])

    released = [(w, t) for _, w, t in reviewed(tx, "AnswersReleased")]
    assert released == [(worker.address, 0), (worker.address, 5)]  # group 0 only, before the new answer
    names = [e.name for e in tx.events if e.name in ("AnswersReleased", "AnswersSubmitted")]
    assert names == ["AnswersReleased", "AnswersSubmitted"]
    assert submitted(tx) == [(worker.address, 7, digest_for(worker, batch, 7))]
    assert [ints(status(escrow, batch, worker, t))[0] for t in (0, 5, 7, 100)] == [PAID, PAID, PENDING, PENDING]
    assert escrow.balanceOf(ZERO_ADDRESS, worker) == 2 * reward
    assert escrow.batch(batch)["pending"] == pending - 2 + 1
    assert token_balance(ZERO_ADDRESS, escrow) == owed  # moved from the batch to the worker, nothing created
    assert outcomes(tx) == [(worker.address, requester.address, RELEASED, 2)]
    assert ints(reputation.workerRecord(worker)) == (0, 0, 2)
    with reverts("EscrowAnswerNotPending", batch, worker, 0, PAID):  # no second window
        escrow.reject(batch, sets([(worker, 0)]), REASON_CID, {"from": requester})
    escrow.reject(batch, sets([(worker, 7)]), REASON_CID, {"from": requester})  # the new answer's window is open


def test_inside_the_window_a_later_answer_only_moves_the_clock(escrow, requester, workers, submit):
    batch = new_batch(escrow, requester, taskCount=10, answersPerTask=1)
    worker = workers[1]
    submit([(worker, batch, 0)])
    chain.sleep(DAY)
    tx = submit([(worker, batch, 1)])
    assert "AnswersReleased" not in tx.events
    assert ints(status(escrow, batch, worker, 0)) == (PENDING, tx.timestamp + 3 * DAY)


def test_even_a_skipped_answer_releases_overdue_ones(escrow, requester, relayer, workers, submit):
    """Releasing overdue answers is open to anyone, so a refused answer may trigger it too."""
    batch = new_batch(escrow, requester, taskCount=10, answersPerTask=1)
    worker = workers[2]
    submit([(worker, batch, 0)])
    chain.sleep(3 * DAY + 60)
    answers, signatures = sign_answers(escrow, [(worker, batch, 0)])  # a duplicate: skipped
    tx = escrow.submitAnswers(answers, signatures, {"from": relayer})
    assert [e["reason"] for e in tx.events["AnswerSkipped"]] == [6]  # AlreadyAnswered
    assert [t for _, _, t in reviewed(tx, "AnswersReleased")] == [0]
    assert ints(status(escrow, batch, worker, 0))[0] == PAID
    assert escrow.batch(batch)["pending"] == 0  # written back although nothing was accepted


def test_runs_are_logged_when_they_close_after_the_releases_of_later_answers(escrow, requester, relayer, workers, submit):
    """AnswersSubmitted names a run when the run closes: a release that a later answer of the call
    triggers (for its own group) is logged before the run that answer closed."""
    batch = new_batch(escrow, requester, taskCount=200, answersPerTask=1, deadline=chain.time() + 30 * DAY)
    worker = workers[3]
    submit([(worker, batch, 100)])
    chain.sleep(3 * DAY + 60)

    tx = submit([(worker, batch, 7), (worker, batch, 8), (worker, batch, 101)])

    assert [(e.name, e["firstTask"], e["tasks"]) for e in tx.events
            if e.name in ("AnswersReleased", "AnswersSubmitted")] == [
        ("AnswersReleased", 96, 1 << 4),    # task 100, released when task 101 comes up
        ("AnswersSubmitted", 0, 0b11 << 7),  # tasks 7 and 8: the run task 101 closed
        ("AnswersSubmitted", 96, 1 << 5),   # task 101, logged at the end of the call
    ]
    assert [(e["relayer"], [bytes(d) for d in e["answerDigests"]]) for e in tx.events["AnswersSubmitted"]] == [
        (relayer.address, [digest_for(worker, batch, 7), digest_for(worker, batch, 8)]),
        (relayer.address, [digest_for(worker, batch, 101)]),
    ]
    assert [ints(status(escrow, batch, worker, t))[0] for t in (7, 8, 100, 101)] == [PENDING, PENDING, PAID, PENDING]
