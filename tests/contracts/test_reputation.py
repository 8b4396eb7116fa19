"""Reputation: owner-authorized escrows record outcomes; scores gate batches with minReputation."""

from brownie import ZERO_ADDRESS, Reputation
from conftest import digest_for, new_batch, reverts, sets, submitted

APPROVED, REJECTED, RELEASED = range(3)


def test_set_escrow_emits_and_authorizes(reputation, deployer, outsider):
    tx = reputation.setEscrow(outsider, True, {"from": deployer})
    assert dict(tx.events["EscrowAuthorized"]) == {"escrow": outsider, "authorized": True}
    assert reputation.isEscrow(outsider)
    tx = reputation.setEscrow(outsider, False, {"from": deployer})
    assert dict(tx.events["EscrowAuthorized"]) == {"escrow": outsider, "authorized": False}
    assert not reputation.isEscrow(outsider)


def test_set_escrow_errors(reputation, deployer, outsider):
    with reverts("OwnableUnauthorizedAccount", outsider):
        reputation.setEscrow(outsider, True, {"from": outsider})
    with reverts("ReputationZeroAddress"):
        reputation.setEscrow(ZERO_ADDRESS, True, {"from": deployer})


def test_record_only_from_escrows(reputation, deployer, outsider, requester, workers):
    with reverts("ReputationUnauthorizedEscrow", outsider):
        reputation.record(requester, APPROVED, [workers[0]], [1], {"from": outsider})
    reputation.setEscrow(outsider, True, {"from": deployer})
    tx = reputation.record(requester, RELEASED, [workers[0]], [4], {"from": outsider})
    event = tx.events["OutcomesRecorded"]
    assert (event["requester"], event["outcome"]) == (requester, RELEASED)
    assert (list(event["workers"]), [int(c) for c in event["counts"]]) == ([workers[0]], [4])
    reputation.record(requester, APPROVED, [workers[0], workers[1], workers[0]], [1, 3, 1], {"from": outsider})
    reputation.record(requester, REJECTED, [workers[0]], [1], {"from": outsider})
    assert tuple(int(x) for x in reputation.workerRecord(workers[0])) == (2, 1, 4)
    assert tuple(int(x) for x in reputation.workerRecord(workers[1])) == (3, 0, 0)
    assert tuple(int(x) for x in reputation.requesterRecord(requester)) == (5, 1, 4)
    assert reputation.score(workers[0]) == 6
    assert reputation.meets(workers[0], 6) and not reputation.meets(workers[0], 7)
    with reverts("ReputationLengthMismatch", 2, 1):
        reputation.record(requester, APPROVED, [workers[0], workers[1]], [1], {"from": outsider})


def test_ownership_moves_in_two_steps(reputation, deployer, outsider):
    reputation.transferOwnership(outsider, {"from": deployer})
    assert reputation.owner() == deployer
    reputation.acceptOwnership({"from": outsider})
    assert reputation.owner() == outsider


def test_min_reputation_admits_workers_with_paid_answers(escrow, requester, workers, submit):
    first = new_batch(escrow, requester)
    submit([(workers[0], first, 0), (workers[0], first, 1)])
    escrow.approve(first, sets([(workers[0], 0), (workers[0], 1)]), {"from": requester})

    gated = new_batch(escrow, requester, minReputation=2)
    tx = submit([(workers[0], gated, 0), (workers[1], gated, 0)])
    assert tx.return_value == 1
    assert submitted(tx) == [(workers[0].address, 0, digest_for(workers[0], gated, 0))]
    assert tx.events["AnswerSkipped"]["worker"] == workers[1]


def test_revoked_escrow_cannot_record(escrow, reputation, deployer, requester, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0)])
    reputation.setEscrow(escrow, False, {"from": deployer})
    with reverts("ReputationUnauthorizedEscrow", escrow):
        escrow.approve(eth_batch, sets([(workers[0], 0)]), {"from": requester})


def test_constructor_sets_owner(deployer, outsider):
    assert Reputation.deploy(outsider, {"from": deployer}).owner() == outsider
