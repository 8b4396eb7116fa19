"""submitAnswers: relayed EIP-712 answers, lenient skipping with a reason, fees, packed answer state."""

import brownie
from brownie import ZERO_ADDRESS, ReentrantToken, chain
from conftest import (
    DAY,
    REASON_CID,
    digest_for,
    new_batch,
    reverts,
    sets,
    sign_answers,
    status,
    submitted,
)

from kempelen.protocol.signing import Answer, Domain, sign

PENDING, NONE = 1, 0
(UNKNOWN_BATCH, PAST_DEADLINE, TASK_OUT_OF_RANGE, BAD_SIGNATURE, WORKER_BLOCKED, REPUTATION_TOO_LOW,
 ALREADY_ANSWERED, TASK_FULL, INSUFFICIENT_FUNDS, SETTLEMENT_SEALED) = range(10)


def skipped(tx):
    return [(e["batchId"], e["worker"], e["taskIndex"], e["reason"]) for e in tx.events["AnswerSkipped"]] \
        if "AnswerSkipped" in tx.events else []


def logged(tx):
    """(batchId, worker, relayer, firstTask, tasks, [answerDigest, ...]) of each AnswersSubmitted
    event of `tx`, in emission order."""
    if "AnswersSubmitted" not in tx.events:
        return []
    return [(e["batchId"], e["worker"], e["relayer"], e["firstTask"], e["tasks"], [bytes(d) for d in e["answerDigests"]])
            for e in tx.events["AnswersSubmitted"]]


def group(relayer, batch_id, worker, tasks):
    """The AnswersSubmitted event (as `logged` gives it) of `worker`'s answers to `tasks`, all in
    one group of 96, with the digests `submit` signs."""
    first = tasks[0] - tasks[0] % 96
    assert all(first <= t < first + 96 for t in tasks)
    return (batch_id, worker.address, relayer.address, first, sum(1 << (t - first) for t in tasks),
            [digest_for(worker, batch_id, t) for t in tasks])


def test_submit_accepts_signed_answers(escrow, eth_batch, workers, relayer, submit):
    entries = [(workers[0], eth_batch, 0), (workers[1], eth_batch, 0), (workers[0], eth_batch, 3)]
    funds_before = escrow.batch(eth_batch)["funds"]
    tx = submit(entries)

    assert tx.return_value == 3
    # Another worker between them: worker 0's two answers are two runs, so two events.
    assert logged(tx) == [group(relayer, eth_batch, w, [t]) for w, _, t in entries]
    assert submitted(tx) == [(w.address, t, digest_for(w, b, t)) for w, b, t in entries]
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
    assert submitted(tx) == [(workers[0].address, 1, digest_for(workers[0], usdc_batch, 1)),
                             (workers[1].address, 2, digest_for(workers[1], usdc_batch, 2))]
    assert escrow.balanceOf(stablecoin, relayer) == 2 * 10_000


def test_escrow_accepts_a_signature_over_the_offchain_digest(escrow, eth_batch, workers, relayer):
    """No digest view on chain: the escrow accepting the signature is the cross-check."""
    answer = Answer(eth_batch, 2, digest_for(workers[0], eth_batch, 2), workers[0].address)
    expected = Domain(chain.id, escrow.address).digest(answer.struct_hash())
    tx = escrow.submitAnswers([answer.as_tuple()], [sign(expected, workers[0].private_key)], {"from": relayer})
    assert submitted(tx) == [(workers[0].address, 2, answer.answer_digest)]
    # The same signature on the answer to another task: a digest it was not made over.
    moved = Answer(eth_batch, 3, answer.answer_digest, answer.worker)
    tx = escrow.submitAnswers([moved.as_tuple()], [sign(expected, workers[0].private_key)], {"from": relayer})
    assert skipped(tx) == [(eth_batch, workers[0].address, 3, BAD_SIGNATURE)]


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
    assert logged(tx) == [group(relayer, b, w, [t]) for w, b, t in entries]
    assert escrow.batch(eth_batch)["pending"] == 3
    assert escrow.batch(usdc_batch)["pending"] == 3
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 3 * 10_000
    assert escrow.balanceOf(stablecoin, relayer) == 3 * 10_000


# ------------------------------------------------------------------ AnswersSubmitted: one event per run


def test_answers_sorted_by_worker_and_task_log_one_event_per_worker(escrow, requester, relayer, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=10, answersPerTask=3)
    runs = [(workers[0], [0, 2, 5, 9]), (workers[1], [1, 2, 7]), (workers[2], [3])]
    tx = submit([(w, batch_id, t) for w, tasks in runs for t in tasks])
    assert tx.return_value == 8
    assert [e["tasks"] for e in tx.events["AnswersSubmitted"]] == [0b1000100101, 0b10000110, 0b1000]
    assert logged(tx) == [group(relayer, batch_id, w, tasks) for w, tasks in runs]
    assert "AnswerSkipped" not in tx.events
    assert escrow.batch(batch_id)["pending"] == 8


def test_a_whole_group_of_96_answers_is_one_event(escrow, requester, relayer, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=97, answersPerTask=1)
    tx = submit([(workers[0], batch_id, t) for t in range(97)])
    assert tx.return_value == 97
    assert [(e["firstTask"], e["tasks"]) for e in tx.events["AnswersSubmitted"]] == [(0, 2**96 - 1), (96, 1)]
    assert logged(tx) == [group(relayer, batch_id, workers[0], list(range(96))),
                          group(relayer, batch_id, workers[0], [96])]


def test_answers_spanning_two_groups_log_two_events(escrow, requester, relayer, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=200, answersPerTask=1)
    tx = submit([(workers[0], batch_id, t) for t in (94, 95, 96, 190, 191)])
    assert tx.return_value == 5
    assert [(e["firstTask"], e["tasks"]) for e in tx.events["AnswersSubmitted"]] == [
        (0, 0b11 << 94), (96, 0b11 << 94 | 1)]
    assert logged(tx) == [group(relayer, batch_id, workers[0], [94, 95]),
                          group(relayer, batch_id, workers[0], [96, 190, 191])]


def test_coming_back_to_a_group_opens_a_new_event(escrow, requester, relayer, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=200, answersPerTask=1)
    tx = submit([(workers[0], batch_id, t) for t in (5, 100, 6)])
    assert logged(tx) == [group(relayer, batch_id, workers[0], [t]) for t in (5, 100, 6)]


def test_answers_out_of_task_order_split_the_group_each_logged_once(escrow, requester, relayer, workers, submit):
    batch_id = new_batch(escrow, requester, taskCount=10, answersPerTask=1)
    tasks = [5, 3, 7, 8, 1, 2, 0]
    tx = submit([(workers[0], batch_id, t) for t in tasks])
    assert tx.return_value == 7
    # A run grows only while each task is above the previous one.
    assert logged(tx) == [group(relayer, batch_id, workers[0], run) for run in ([5], [3, 7, 8], [1, 2], [0])]
    assert submitted(tx) == [(workers[0].address, t, digest_for(workers[0], batch_id, t)) for t in tasks]


def test_interleaved_workers_split_their_runs(escrow, eth_batch, relayer, workers, submit):
    w0, w1 = workers[:2]
    tx = submit([(w0, eth_batch, 0), (w0, eth_batch, 1), (w1, eth_batch, 0), (w0, eth_batch, 2), (w1, eth_batch, 1)])
    assert tx.return_value == 5
    assert logged(tx) == [group(relayer, eth_batch, w0, [0, 1]), group(relayer, eth_batch, w1, [0]),
                          group(relayer, eth_batch, w0, [2]), group(relayer, eth_batch, w1, [1])]


def test_skipped_answers_inside_a_run_neither_split_it_nor_are_logged(escrow, eth_batch, relayer, workers):
    w0, w1 = workers[:2]
    entries = [
        (w0, eth_batch, 0),  # accepted
        (w0, eth_batch, 1),  # bad signature (below)
        (w0, eth_batch, 0),  # already answered
        (w1, eth_batch, 3),  # another worker, bad signature (below)
        (w0, eth_batch, 2),  # accepted
        (w0, eth_batch, 3),  # accepted
    ]
    answers, signatures = sign_answers(escrow, entries)
    signatures[1] = signatures[0]  # signed for task 0
    signatures[3] = signatures[5]  # signed by worker 0
    tx = escrow.submitAnswers(answers, signatures, {"from": relayer})

    assert tx.return_value == 3
    assert skipped(tx) == [
        (eth_batch, w0.address, 1, BAD_SIGNATURE),
        (eth_batch, w0.address, 0, ALREADY_ANSWERED),
        (eth_batch, w1.address, 3, BAD_SIGNATURE),
    ]
    assert logged(tx) == [group(relayer, eth_batch, w0, [0, 2, 3])]
    # The run is logged when it closes: after the skips of answers that came later.
    names = [e.name for e in tx.events if e.name in ("AnswerSkipped", "AnswersSubmitted")]
    assert names == ["AnswerSkipped"] * 3 + ["AnswersSubmitted"]
    assert status(escrow, eth_batch, w0, 1)[0] == NONE
    assert escrow.batch(eth_batch)["pending"] == 3


def test_answers_to_two_batches_in_one_call_log_events_per_batch(
    escrow, eth_batch, usdc_batch, stablecoin, relayer, workers, submit
):
    w = workers[0]
    tx = submit([(w, eth_batch, 0), (w, eth_batch, 1), (w, usdc_batch, 0), (w, usdc_batch, 2),
                 (w, eth_batch, 2), (w, eth_batch, 3)])
    assert tx.return_value == 6
    assert logged(tx) == [group(relayer, eth_batch, w, [0, 1]), group(relayer, usdc_batch, w, [0, 2]),
                          group(relayer, eth_batch, w, [2, 3])]
    assert submitted(tx, usdc_batch) == [(w.address, t, digest_for(w, usdc_batch, t)) for t in (0, 2)]
    assert escrow.batch(eth_batch)["pending"] == 4
    assert escrow.batch(usdc_batch)["pending"] == 2
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 4 * 10_000
    assert escrow.balanceOf(stablecoin, relayer) == 2 * 10_000


def test_an_answer_to_another_batch_closes_the_run_even_when_skipped(escrow, eth_batch, relayer, workers, submit):
    """The open run is logged whenever the batch changes within a call (ITaskEscrow)."""
    w = workers[0]
    tx = submit([(w, eth_batch, 0), (w, 99, 1), (w, eth_batch, 1)])
    assert skipped(tx) == [(99, w.address, 1, UNKNOWN_BATCH)]
    assert logged(tx) == [group(relayer, eth_batch, w, [0]), group(relayer, eth_batch, w, [1])]


def test_the_relayer_of_the_events_is_the_sender(escrow, eth_batch, relayer, outsider, workers, submit):
    w0, w1 = workers[:2]
    tx = submit([(w0, eth_batch, 0), (w0, eth_batch, 1), (w1, eth_batch, 0)], sender=outsider)
    assert [e["relayer"] for e in tx.events["AnswersSubmitted"]] == [outsider.address] * 2
    assert logged(tx) == [group(outsider, eth_batch, w0, [0, 1]), group(outsider, eth_batch, w1, [0])]
    assert escrow.balanceOf(ZERO_ADDRESS, outsider) == 3 * 10_000
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 0


def test_the_relayer_of_the_events_is_the_calling_contract_not_the_origin(escrow, eth_batch, relayer, workers):
    proxy = ReentrantToken.deploy({"from": relayer})  # execute(target, data): a contract relay
    answers, signatures = sign_answers(escrow, [(workers[0], eth_batch, 1), (workers[0], eth_batch, 2)])
    tx = proxy.execute(escrow, escrow.submitAnswers.encode_input(answers, signatures), {"from": relayer})
    assert logged(tx) == [(eth_batch, workers[0].address, proxy.address, 0, 0b110,
                           [digest_for(workers[0], eth_batch, t) for t in (1, 2)])]
    assert escrow.balanceOf(ZERO_ADDRESS, proxy) == 2 * 10_000
    assert escrow.balanceOf(ZERO_ADDRESS, relayer) == 0


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
    assert logged(tx) == [(eth_batch, workers[3].address, requester.address, 0, 1 << 1,
                           [digest_for(workers[3], eth_batch, 1)])]
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
    escrow.reject(eth_batch, sets([(workers[0], 0)]), REASON_CID, {"from": requester})
    assert escrow.taskAnswerCount(eth_batch, 0) == 1
    tx = submit([(workers[0], eth_batch, 0), (workers[2], eth_batch, 0)])
    assert skipped(tx) == [(eth_batch, workers[0].address, 0, ALREADY_ANSWERED)]
    assert submitted(tx) == [(workers[2].address, 0, digest_for(workers[2], eth_batch, 0))]


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
