"""blockWorker / unblockWorker: a requester refuses a worker's answers in all its batches."""

from conftest import REASON_CID, new_batch

WORKER_BLOCKED = 4


def test_block_and_unblock(escrow, requester, eth_batch, workers, submit):
    tx = escrow.blockWorker(workers[0], REASON_CID, {"from": requester})
    assert dict(tx.events["WorkerBlocked"]) == {
        "requester": requester, "worker": workers[0], "reasonCid": "0x" + REASON_CID.hex(),
    }
    assert escrow.isBlocked(requester, workers[0])
    other_batch = new_batch(escrow, requester)
    tx = submit([(workers[0], eth_batch, 0), (workers[0], other_batch, 0), (workers[1], eth_batch, 0)])
    assert [e["reason"] for e in tx.events["AnswerSkipped"]] == [WORKER_BLOCKED, WORKER_BLOCKED]
    assert tx.return_value == 1

    tx = escrow.unblockWorker(workers[0], {"from": requester})
    assert dict(tx.events["WorkerUnblocked"]) == {"requester": requester, "worker": workers[0]}
    assert not escrow.isBlocked(requester, workers[0])
    assert submit([(workers[0], eth_batch, 0)]).return_value == 1


def test_block_is_per_requester(escrow, requester, outsider, eth_batch, workers, submit):
    escrow.blockWorker(workers[0], REASON_CID, {"from": outsider})
    assert escrow.isBlocked(outsider, workers[0])
    assert not escrow.isBlocked(requester, workers[0])
    assert submit([(workers[0], eth_batch, 0)]).return_value == 1


def test_repeated_block_and_unblock_keep_the_count_right(escrow, requester, eth_batch, workers, submit):
    escrow.blockWorker(workers[0], b"", {"from": requester})
    escrow.blockWorker(workers[0], b"", {"from": requester})
    escrow.unblockWorker(workers[0], {"from": requester})
    escrow.unblockWorker(workers[0], {"from": requester})  # no-op, still emits
    escrow.blockWorker(workers[1], b"", {"from": requester})
    tx = submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 1)])
    assert tx.return_value == 1
    assert tx.events["AnswerSkipped"]["worker"] == workers[1]
