"""submitAnswers: relayed EIP-712 answers, lenient skipping with a reason, fees, packed answer state."""

import brownie
from brownie import ZERO_ADDRESS, chain
from conftest import DAY, REASON_CID, digest_for, new_batch, reverts, sign_answers, status

from kempelen.protocol.signing import Answer, Domain

PENDING, NONE = 1, 0
(UNKNOWN_BATCH, PAST_DEADLINE, TASK_OUT_OF_RANGE, BAD_SIGNATURE, WORKER_BLOCKED, REPUTATION_TOO_LOW,
 ALREADY_ANSWERED, TASK_FULL, INSUFFICIENT_FUNDS) = range(9)


def skipped(tx):
    return [(e["batchId"], e["worker"], e["taskIndex"], e["reason"]) for e in tx.events["AnswerSkipped"]] \
        if "AnswerSkipped" in tx.events else []


def test_submit_accepts_signed_answers(escrow, eth_batch, workers, relayer, submit):
    entries = [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0), (workers[0], eth_batch, 3)]
    funds_before = escrow.batch(eth_batch)["funds"]
    tx = submit(entries)

    assert tx.return_value == 3
    assert [dict(e) for e in tx.events["AnswerSubmitted"]] == [
        {"batchId": eth_batch, "worker": w.address, "relayer": relayer, "taskIndex": t,
         "answerDigest": "0x" + digest_for(w, b, t).hex()}
        for w, b, t in entries
    ]
    assert "AnswerSkipped" not in tx.events
    batch = escrow.batch(eth_batch)
    assert batch["pending"] == 3
    assert batch["funds"] == funds_before - 3 * (batch["reward"] + batch["relayFee"])
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 3 * batch["relayFee"]
    assert escrow.taskAnswerCount(eth_batch, 0) == 2
    assert escrow.taskAnswerCount(eth_batch, 3) == 1
    assert escrow.taskAnswerCount(eth_batch, 1) == 0
    submitted_at = chain[tx.block_number].timestamp
    assert status(escrow, eth_batch, workers[0], 3) == (PENDING, submitted_at + 3 * DAY)
    assert status(escrow, eth_batch, workers[0], 1) == (NONE, 0)


def test_submit_accepts_compact_eip2098_signatures(escrow, usdc_batch, stablecoin, workers, relayer, submit):
    tx = submit([(workers[0], usdc_batch, 1), (workers[1], usdc_batch, 2)], compact=True)
    assert tx.return_value == 2
    assert len(tx.events["AnswerSubmitted"]) == 2
    assert escrow.balanceOf(stablecoin, relayer) == 2 * 10_000


def test_answer_hash_matches_offchain_digest(escrow, workers):
    answer = Answer(7, 12, digest_for(workers[0], 7, 12), workers[0].address)
    expected = Domain(chain.id, escrow.address).digest(answer.struct_hash())
    assert escrow.answerHash(answer.as_tuple()) == "0x" + expected.hex()


def test_later_answer_in_same_group_delays_review_deadline(escrow, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0)])
    chain.sleep(3600)
    tx = submit([(workers[0], eth_batch, 1)])
    later = chain[tx.block_number].timestamp + 3 * DAY
    assert escrow.answerStatus(eth_batch, workers[0], 0)[1] == later
    assert escrow.answerStatus(eth_batch, workers[0], 1)[1] == later


def test_answers_across_two_batches_in_one_call(escrow, eth_batch, usdc_batch, stablecoin, workers, relayer, submit):
    entries = [
        (workers[0], eth_batch, 0), (workers[1], eth_batch, 1),
        (workers[0], usdc_batch, 0),
        (workers[2], eth_batch, 2),
        (workers[1], usdc_batch, 3), (workers[2], usdc_batch, 3),
    ]
    tx = submit(entries)
    assert tx.return_value == 6
    assert [(e["batchId"], e["worker"], e["taskIndex"]) for e in tx.events["AnswerSubmitted"]] == [
        (b, w.address, t) for w, b, t in entries
    ]
    assert escrow.batch(eth_batch)["pending"] == 3
    assert escrow.batch(usdc_batch)["pending"] == 3
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 3 * 10_000
    assert escrow.balanceOf(stablecoin, relayer) == 3 * 10_000


def test_lenient_submission_skips_each_failure_and_keeps_the_rest(escrow, requester, eth_batch, workers, submit):
    escrow.blockWorker(workers[5], REASON_CID, {"from": requester})
    submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 0)])  # task 0 full now
    entries = [
        (workers[2], 99, 0),                 # unknown batch
        (workers[2], eth_batch, 4),          # task out of range (4 tasks)
        (workers[0], eth_batch, 0),          # already answered
        (workers[2], eth_batch, 0),          # task full
        (workers[5], eth_batch, 1),          # blocked
        (workers[3], eth_batch, 1),          # accepted
    ]
    answers, signatures = sign_answers(escrow, entries)
    answers.append(Answer(eth_batch, 2, digest_for(workers[4], eth_batch, 2), workers[4].address).as_tuple())
    signatures.append(signatures[-1])        # signed by someone else
    answers.append(Answer(eth_batch, 3, digest_for(workers[4], eth_batch, 3), workers[4].address).as_tuple())
    signatures.append(b"\x01" * 63)          # neither 65 nor 64 bytes
    tx = escrow.submitAnswers(answers, signatures, {"from": requester})

    assert tx.return_value == 1
    assert skipped(tx) == [
        (99, workers[2].address, 0, UNKNOWN_BATCH),
        (eth_batch, workers[2].address, 4, TASK_OUT_OF_RANGE),
        (eth_batch, workers[0].address, 0, ALREADY_ANSWERED),
        (eth_batch, workers[2].address, 0, TASK_FULL),
        (eth_batch, workers[5].address, 1, WORKER_BLOCKED),
        (eth_batch, workers[4].address, 2, BAD_SIGNATURE),
        (eth_batch, workers[4].address, 3, BAD_SIGNATURE),
    ]
    assert [(e["worker"], e["taskIndex"]) for e in tx.events["AnswerSubmitted"]] == [(workers[3].address, 1)]
    assert escrow.batch(eth_batch)["pending"] == 3


def test_tampered_answer_digest_is_a_bad_signature(escrow, eth_batch, workers, relayer):
    answers, signatures = sign_answers(escrow, [(workers[0], eth_batch, 0)])
    batch_id, task, _, worker = answers[0]
    tx = escrow.submitAnswers([(batch_id, task, b"\x42" * 32, worker)], signatures, {"from": relayer})
    assert skipped(tx) == [(eth_batch, workers[0].address, 0, BAD_SIGNATURE)]


def test_zero_worker_with_garbage_signature_is_skipped(escrow, eth_batch, relayer):
    tx = escrow.submitAnswers([(eth_batch, 0, b"\x01" * 32, ZERO_ADDRESS)], [b"\x00" * 65], {"from": relayer})
    assert skipped(tx) == [(eth_batch, ZERO_ADDRESS, 0, BAD_SIGNATURE)]
    assert tx.return_value == 0


def test_past_deadline_is_skipped(escrow, eth_batch, workers, submit):
    chain.sleep(8 * DAY)
    tx = submit([(workers[0], eth_batch, 0)])
    assert skipped(tx) == [(eth_batch, workers[0].address, 0, PAST_DEADLINE)]


def test_reputation_too_low_is_skipped(escrow, requester, workers, submit):
    batch_id = new_batch(escrow, requester, minReputation=1)
    tx = submit([(workers[0], batch_id, 0)])
    assert skipped(tx) == [(batch_id, workers[0].address, 0, REPUTATION_TOO_LOW)]


def test_insufficient_funds_is_skipped(escrow, requester, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=1, answersPerTask=1)
    escrow.extend(batch_id, escrow.batch(batch_id)["deadline"], 2, 0, {"from": requester})  # no top-up
    tx = submit([(workers[0], batch_id, 0), (workers[1], batch_id, 0)])
    assert tx.return_value == 1
    assert skipped(tx) == [(batch_id, workers[1].address, 0, INSUFFICIENT_FUNDS)]
    assert escrow.batch(batch_id)["funds"] == 0


def test_rejected_answer_reopens_the_slot_for_others_only(escrow, requester, eth_batch, workers, submit):
    submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 0)])
    escrow.reject(eth_batch, [(workers[0].address, 0)], REASON_CID, {"from": requester})
    assert escrow.taskAnswerCount(eth_batch, 0) == 1
    tx = submit([(workers[0], eth_batch, 0), (workers[2], eth_batch, 0)])
    assert skipped(tx) == [(eth_batch, workers[0].address, 0, ALREADY_ANSWERED)]
    assert tx.events["AnswerSubmitted"]["worker"] == workers[2]


def test_high_task_indexes_use_their_own_words(escrow, requester, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=300, answersPerTask=1)
    tasks = [0, 95, 96, 191, 192, 299]
    submit([(workers[0], batch_id, t) for t in tasks])
    for t in tasks:
        assert escrow.answerStatus(batch_id, workers[0], t)[0] == PENDING
        assert escrow.taskAnswerCount(batch_id, t) == 1
    for t in (1, 94, 97, 298):
        assert escrow.answerStatus(batch_id, workers[0], t)[0] == NONE
        assert escrow.taskAnswerCount(batch_id, t) == 0


def test_empty_submission_accepts_nothing(escrow, relayer):
    tx = escrow.submitAnswers([], [], {"from": relayer})
    assert tx.return_value == 0


def test_lengths_must_match(escrow, eth_batch, workers, relayer):
    answers, signatures = sign_answers(escrow, [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0)])
    with reverts("EscrowLengthMismatch", 2, 1):
        escrow.submitAnswers(answers, signatures[:1], {"from": relayer})


def test_non_canonical_answer_encoding_reverts(escrow, eth_batch, workers, relayer):
    answers, signatures = sign_answers(escrow, [(workers[0], eth_batch, 0)])
    data = escrow.submitAnswers.encode_input(answers, signatures)
    raw = bytearray.fromhex(data[2:])
    # The head is selector, 2 offsets, then the answers array: length, batchId word.
    batch_word = 4 + 32 * 3
    raw[batch_word] = 0xFF  # batchId with bits above uint64
    with brownie.reverts():
        relayer.transfer(escrow, 0, data="0x" + raw.hex())
