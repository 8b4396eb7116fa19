"""Signed answers the escrow must refuse (or accept) in submitAnswers, and digest agreement."""

import hashlib

import brownie
import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    BAD_SIGNATURE,
    ETH,
    NONE,
    PAID,
    PAST_DEADLINE,
    PENDING,
    REASON_CID,
    TASK_OUT_OF_RANGE,
    UNKNOWN_BATCH,
    _isolate,
    accepted,
    assert_money_invariant,
    batch_field,
    create_batch,
    deployment,
    next_block_at,
    now,
    sets,
    signed_answer,
    skipped,
    status,
    submit,
    submitted,
    terms,
)
from brownie import chain
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kempelen.protocol.signing import Answer, Domain, recover, sign, to_compact

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
REWARD = 1_000_000
RELAY_FEE = 10_000


@pytest.fixture
def batch(deployment):
    """An ETH batch of 4 tasks × 2 answers, open for an hour."""
    batch_id, _ = create_batch(
        deployment.escrow, deployment.requester, terms(reward=REWARD, relay_fee=RELAY_FEE)
    )
    return batch_id


def _holders(d):
    return [d.requester, d.relay, d.stranger] + d.workers


def assert_nothing_accepted(d, batch_id, funds_before):
    assert batch_field(d.escrow, batch_id, "pending") == 0
    assert batch_field(d.escrow, batch_id, "funds") == funds_before
    assert d.escrow.balanceOf(ETH, d.relay) == 0
    assert_money_invariant(d.escrow, ETH, _holders(d))


# ---------------------------------------------------------------- digest agreement


@settings(max_examples=25, deadline=None, suppress_health_check=HealthCheck.all())
@given(
    batch_id=st.integers(0, 2**64 - 1),
    task_index=st.integers(0, 2**32 - 1),
    digest=st.binary(min_size=32, max_size=32),
    worker_raw=st.binary(min_size=20, max_size=20),
)
def test_python_answer_digest_equals_eth_account_digest(deployment, batch_id, task_index, digest, worker_raw):
    """kempelen.protocol.signing against an independent encoder: what a wallet's
    eth_signTypedData_v4 signs, for any field values."""
    answer = Answer(batch_id, task_index, digest, "0x" + worker_raw.hex())
    domain = Domain(chain.id, deployment.escrow.address)
    signable = encode_typed_data(full_message=answer.typed_data(domain))
    assert domain.digest(answer.struct_hash()) == keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=20, deadline=None, suppress_health_check=HealthCheck.all())
@given(task_index=st.integers(0, 3), digest=st.binary(min_size=32, max_size=32), who=st.integers(0, 3))
def test_the_escrow_accepts_signatures_over_the_python_digest(deployment, batch, task_index, digest, who):
    """The escrow has no digest view: accepting a signature over the Python digest (and refusing
    one over a digest with any field changed) is the cross-check."""
    d, w = deployment, deployment.workers[who]
    domain = Domain(chain.id, d.escrow.address)
    answer = Answer(batch, task_index, digest, w.address)
    signature = sign(domain.digest(answer.struct_hash()), w.private_key)
    assert recover(domain.digest(answer.struct_hash()), signature) == w.address
    assert d.escrow.submitAnswers.call([answer.as_tuple()], [signature], {"from": d.relay}) == 1
    changed = Answer(batch, task_index, digest[:-1] + bytes([digest[-1] ^ 1]), w.address)
    assert d.escrow.submitAnswers.call([changed.as_tuple()], [signature], {"from": d.relay}) == 0


def test_answer_digest_depends_on_chain_and_contract(deployment, batch):
    d, w = deployment, deployment.workers[0]
    answer = Answer(batch, 2, bytes(range(32)), w.address)
    here = Domain(chain.id, d.escrow.address).digest(answer.struct_hash())
    elsewhere = [Domain(chain.id + 1, d.escrow.address), Domain(chain.id, d.usdc.address)]
    for domain in elsewhere:
        other = domain.digest(answer.struct_hash())
        assert other != here
        signature = sign(other, w.private_key)
        assert d.escrow.submitAnswers.call([answer.as_tuple()], [signature], {"from": d.relay}) == 0
    signature = sign(here, w.private_key)
    assert d.escrow.submitAnswers.call([answer.as_tuple()], [signature], {"from": d.relay}) == 1


# ---------------------------------------------------------------- the honest path, as a baseline


def test_valid_answer_accepted_and_relay_paid(deployment, batch):
    d, w = deployment, deployment.workers[0]
    funds = batch_field(d.escrow, batch, "funds")
    answer, signature = signed_answer(d.escrow, w, batch, 1)
    assert d.escrow.submitAnswers.call([answer], [signature], {"from": d.relay}) == 1
    tx = submit(d.escrow, d.relay, [(answer, signature)])
    event = tx.events["AnswersSubmitted"]
    assert (event["batchId"], event["worker"], event["relayer"], event["firstTask"], event["tasks"]) == (
        batch,
        w,
        d.relay,
        0,
        1 << 1,
    )
    assert [bytes(x) for x in event["answerDigests"]] == [answer[2]]
    assert submitted(tx) == [(w, 1, answer[2])]
    assert skipped(tx) == []
    assert status(d.escrow, batch, w, 1) == PENDING
    assert batch_field(d.escrow, batch, "funds") == funds - REWARD - RELAY_FEE
    assert batch_field(d.escrow, batch, "pending") == 1
    assert d.escrow.balanceOf(ETH, d.relay) == RELAY_FEE
    assert_money_invariant(d.escrow, ETH, _holders(d))


# ---------------------------------------------------------------- forged domains and signers


@pytest.mark.parametrize("forgery", ["chain_id", "contract", "signer"])
def test_forged_answer_skipped_bad_signature(deployment, batch, forgery):
    d = deployment
    victim, forger = d.workers[0], d.workers[1]
    funds = batch_field(d.escrow, batch, "funds")
    if forgery == "chain_id":
        signed = signed_answer(d.escrow, victim, batch, 0, chain_id=chain.id + 1)
    elif forgery == "contract":
        # Signed for another deployment: e.g. a second escrow on the same chain.
        signed = signed_answer(d.escrow, victim, batch, 0, verifying_contract=d.reputation.address)
    else:
        # The forger signs an answer in the victim's name (worker field != signer).
        signed = signed_answer(d.escrow, forger, batch, 0, worker_address=victim.address)
    tx = submit(d.escrow, d.relay, [signed])
    assert skipped(tx) == [(victim, 0, BAD_SIGNATURE)]
    assert accepted(tx) == []
    assert status(d.escrow, batch, victim, 0) == NONE
    assert status(d.escrow, batch, forger, 0) == NONE
    assert d.escrow.taskAnswerCount(batch, 0) == 0
    assert_nothing_accepted(d, batch, funds)


def test_forged_answer_does_not_block_the_honest_one(deployment, batch):
    """A forged copy submitted first must not consume the worker's slot."""
    d, victim, forger = deployment, deployment.workers[0], deployment.workers[1]
    forged = signed_answer(
        d.escrow, forger, batch, 2, worker_address=victim.address, payload=b"forged"
    )
    honest = signed_answer(d.escrow, victim, batch, 2, payload=b"honest")
    tx = submit(d.escrow, d.relay, [forged, honest])
    assert skipped(tx) == [(victim, 2, BAD_SIGNATURE)]
    assert submitted(tx) == [(victim, 2, hashlib.sha256(b"honest").digest())]


def test_tampered_answer_digest_skipped(deployment, batch):
    """The relay cannot swap the worker's answer for another under the same signature."""
    d, w = deployment, deployment.workers[0]
    (batch_id, task, _, who), signature = signed_answer(d.escrow, w, batch, 0, payload=b"cat")
    tampered = (batch_id, task, hashlib.sha256(b"dog").digest(), who)
    tx = submit(d.escrow, d.relay, [(tampered, signature)])
    assert skipped(tx) == [(w, 0, BAD_SIGNATURE)]
    # Nor move it to another task or batch.
    moved = (batch_id, 1, hashlib.sha256(b"cat").digest(), who)
    tx = submit(d.escrow, d.relay, [(moved, signature)])
    assert skipped(tx) == [(w, 1, BAD_SIGNATURE)]
    assert status(d.escrow, batch, w, 0) == NONE


def test_zero_worker_with_unrecoverable_signature_skipped(deployment, batch):
    """ecrecover yields address(0) for garbage: an answer naming worker 0 must not pass."""
    d = deployment
    answer = (batch, 0, bytes(32), ETH)
    funds = batch_field(d.escrow, batch, "funds")
    garbage = [bytes(65), bytes(32) + bytes(32) + b"\x1b", b"\x01" * 64, bytes(64)]
    tx = d.escrow.submitAnswers([answer] * len(garbage), garbage, {"from": d.relay})
    assert skipped(tx) == [(ETH, 0, BAD_SIGNATURE)] * len(garbage)
    assert status(d.escrow, batch, ETH, 0) == NONE
    assert_nothing_accepted(d, batch, funds)


# ---------------------------------------------------------------- replay


def test_replay_in_same_transaction_skipped_and_paid_once(deployment, batch):
    d, w = deployment, deployment.workers[0]
    signed = signed_answer(d.escrow, w, batch, 3)
    funds = batch_field(d.escrow, batch, "funds")
    assert d.escrow.submitAnswers.call([signed[0]] * 2, [signed[1]] * 2, {"from": d.relay}) == 1
    tx = submit(d.escrow, d.relay, [signed, signed])
    assert accepted(tx) == [(w, 3)]
    assert skipped(tx) == [(w, 3, ALREADY_ANSWERED)]
    assert batch_field(d.escrow, batch, "funds") == funds - REWARD - RELAY_FEE
    assert batch_field(d.escrow, batch, "pending") == 1
    assert d.escrow.taskAnswerCount(batch, 3) == 1
    assert d.escrow.balanceOf(ETH, d.relay) == RELAY_FEE  # relay fee paid once

    tx = d.escrow.approve(batch, sets([(w, 3)]), {"from": d.requester})
    assert len(tx.events["AnswersApproved"]) == 1
    assert d.escrow.balanceOf(ETH, w) == REWARD
    # Approving the same answer again is refused, it is not paid twice.
    with brownie.reverts(revert_pattern=r"EscrowAnswerNotPending: .*"):
        d.escrow.approve(batch, sets([(w, 3)]), {"from": d.requester})
    assert d.escrow.balanceOf(ETH, w) == REWARD
    assert_money_invariant(d.escrow, ETH, _holders(d))


@pytest.mark.parametrize("review", ["pending", "approve", "reject", "release"])
def test_replay_in_later_transaction_skipped(deployment, batch, review):
    """Once an answer exists, in whatever state, its signature cannot be replayed: not even after
    a rejection, which reopens the task's slot for other workers but not for this one."""
    d, w = deployment, deployment.workers[0]
    signed = signed_answer(d.escrow, w, batch, 0)
    submit(d.escrow, d.relay, [signed])
    expected_status = {"pending": PENDING, "approve": PAID, "reject": 3, "release": PAID}[review]
    if review == "approve":
        d.escrow.approve(batch, sets([(w, 0)]), {"from": d.requester})
    elif review == "reject":
        d.escrow.reject(batch, sets([(w, 0)]), REASON_CID, {"from": d.requester})
    elif review == "release":
        chain.sleep(601)
        d.escrow.release(batch, sets([(w, 0)]), {"from": d.stranger})
    funds = batch_field(d.escrow, batch, "funds")
    relay_balance = d.escrow.balanceOf(ETH, d.relay)
    worker_balance = d.escrow.balanceOf(ETH, w)

    tx = submit(d.escrow, d.relay, [signed])
    assert skipped(tx) == [(w, 0, ALREADY_ANSWERED)]
    assert status(d.escrow, batch, w, 0) == expected_status
    assert batch_field(d.escrow, batch, "funds") == funds
    assert d.escrow.balanceOf(ETH, d.relay) == relay_balance
    assert d.escrow.balanceOf(ETH, w) == worker_balance
    # A fresh signature over a different payload for the same task is the same answer slot.
    tx = submit(
        d.escrow, d.relay, [signed_answer(d.escrow, w, batch, 0, payload=b"second thoughts")]
    )
    assert skipped(tx) == [(w, 0, ALREADY_ANSWERED)]
    assert_money_invariant(d.escrow, ETH, _holders(d))


def test_same_signature_cannot_be_replayed_in_another_batch(deployment, batch):
    d, w = deployment, deployment.workers[0]
    other_batch, _ = create_batch(d.escrow, d.requester, terms())
    (_, task, digest, who), signature = signed_answer(d.escrow, w, batch, 0)
    tx = submit(d.escrow, d.relay, [((other_batch, task, digest, who), signature)])
    assert skipped(tx) == [(w, 0, BAD_SIGNATURE)]
    assert status(d.escrow, other_batch, w, 0) == NONE


# ---------------------------------------------------------------- signature encodings


def _malleate(signature: bytes) -> bytes:
    """The other valid ECDSA signature of the same message: (r, n - s, v ^ 1)."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


def test_high_s_malleated_signature_skipped(deployment, batch):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 1)
    high_s = _malleate(signature)
    assert int.from_bytes(high_s[32:64], "big") > SECP256K1_N // 2
    funds = batch_field(d.escrow, batch, "funds")
    tx = submit(d.escrow, d.relay, [(answer, high_s)])
    assert skipped(tx) == [(w, 1, BAD_SIGNATURE)]
    assert status(d.escrow, batch, w, 1) == NONE
    assert_nothing_accepted(d, batch, funds)
    # The low-s original is still good.
    tx = submit(d.escrow, d.relay, [(answer, signature)])
    assert accepted(tx) == [(w, 1)]


def test_malleated_copy_of_accepted_answer_not_paid_twice(deployment, batch):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 1)
    tx = submit(d.escrow, d.relay, [(answer, signature), (answer, _malleate(signature))])
    assert accepted(tx) == [(w, 1)]
    assert len(skipped(tx)) == 1 and skipped(tx)[0][2] in (ALREADY_ANSWERED, BAD_SIGNATURE)
    assert batch_field(d.escrow, batch, "pending") == 1


def test_eip2098_compact_signature_accepted(deployment, batch):
    d = deployment
    signed = [signed_answer(d.escrow, d.workers[i], batch, i) for i in range(4)]
    compact = [(a, to_compact(s)) for a, s in signed]
    for (a, _s), (_, c) in zip(signed, compact):
        assert len(c) == 64
        assert recover(Domain(chain.id, d.escrow.address).digest(Answer(*a).struct_hash()), c) == a[3]
    tx = submit(d.escrow, d.relay, compact)
    assert skipped(tx) == []
    assert accepted(tx) == [(d.workers[i], i) for i in range(4)]
    assert batch_field(d.escrow, batch, "pending") == 4


def test_eip2098_both_parities(deployment, batch):
    """One compact signature with v = 27 and one with v = 28 (vs top bit clear and set)."""
    d, w = deployment, deployment.workers[0]
    compact = []
    for task, want_v in ((0, 27), (1, 28)):
        salt = 0
        while True:
            answer, signature = signed_answer(d.escrow, w, batch, task, payload=b"p%d" % salt)
            if signature[64] == want_v:
                break
            salt += 1
        compact.append((answer, to_compact(signature)))
    assert compact[0][1][32] & 0x80 == 0 and compact[1][1][32] & 0x80 == 0x80
    tx = submit(d.escrow, d.relay, compact)
    assert accepted(tx) == [(w, 0), (w, 1)]


def test_compact_signature_with_flipped_parity_skipped(deployment, batch):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 0)
    compact = bytearray(to_compact(signature))
    compact[32] ^= 0x80
    tx = submit(d.escrow, d.relay, [(answer, bytes(compact))])
    assert skipped(tx) == [(w, 0, BAD_SIGNATURE)]


@pytest.mark.parametrize("length", [0, 1, 32, 63, 66, 96, 130])
def test_wrong_signature_length_skipped(deployment, batch, length):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 0)
    mangled = (signature * 3)[:length]
    funds = batch_field(d.escrow, batch, "funds")
    tx = submit(d.escrow, d.relay, [(answer, mangled)])
    assert skipped(tx) == [(w, 0, BAD_SIGNATURE)]
    assert_nothing_accepted(d, batch, funds)


@pytest.mark.parametrize("v", [0, 1, 26, 29])
def test_invalid_v_skipped(deployment, batch, v):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 0)
    tx = submit(d.escrow, d.relay, [(answer, signature[:64] + bytes([v]))])
    assert skipped(tx) == [(w, 0, BAD_SIGNATURE)]


def test_length_mismatch_reverts(deployment, batch):
    d, w = deployment, deployment.workers[0]
    answer, signature = signed_answer(d.escrow, w, batch, 0)
    with brownie.reverts("EscrowLengthMismatch: 2, 1"):
        d.escrow.submitAnswers([answer, answer], [signature], {"from": d.relay})
    with brownie.reverts("EscrowLengthMismatch: 1, 2"):
        d.escrow.submitAnswers([answer], [signature, signature], {"from": d.relay})


def test_bad_answers_skipped_good_ones_kept(deployment, batch):
    """One bad signature in a relay's batch must not sink the others."""
    d = deployment
    w0, w1, w2 = d.workers[:3]
    good0 = signed_answer(d.escrow, w0, batch, 0)
    bad = (signed_answer(d.escrow, w1, batch, 0)[0], b"\x00" * 65)
    good2 = signed_answer(d.escrow, w2, batch, 0)
    answers, signatures = [a for a, _ in (good0, bad, good2)], [s for _, s in (good0, bad, good2)]
    assert d.escrow.submitAnswers.call(answers, signatures, {"from": d.relay}) == 2
    tx = submit(d.escrow, d.relay, [good0, bad, good2])
    assert accepted(tx) == [(w0, 0), (w2, 0)]
    assert skipped(tx) == [(w1, 0, BAD_SIGNATURE)]
    assert d.escrow.balanceOf(ETH, d.relay) == 2 * RELAY_FEE


# ---------------------------------------------------------------- batches and tasks


def test_unknown_batch_skipped(deployment, batch):
    d, w = deployment, deployment.workers[0]
    unknown = d.escrow.batchCount() + 1
    for batch_id in (0, unknown, 2**64 - 1):
        tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 0)])
        assert skipped(tx) == [(w, 0, UNKNOWN_BATCH)]
        assert tx.events["AnswerSkipped"]["batchId"] == batch_id
        assert status(d.escrow, batch_id, w, 0) == NONE
    assert d.escrow.balanceOf(ETH, d.relay) == 0
    # The unknown batch must not be created by an answer: creating the next one still works.
    new_batch, _ = create_batch(d.escrow, d.requester, terms())
    assert new_batch == unknown
    assert batch_field(d.escrow, new_batch, "pending") == 0


def test_task_out_of_range_skipped(deployment, batch):
    d, w = deployment, deployment.workers[0]
    for task in (4, 95, 96, 2**32 - 1):  # taskCount is 4
        tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch, task)])
        assert skipped(tx) == [(w, task, TASK_OUT_OF_RANGE)]
    assert batch_field(d.escrow, batch, "pending") == 0


def test_answer_at_deadline_accepted_after_it_skipped(deployment):
    d, w = deployment, deployment.workers[0]
    deadline = now() + 1000
    batch_id, _ = create_batch(d.escrow, d.requester, terms(deadline=deadline))
    next_block_at(deadline)  # "last timestamp at which answers are accepted"
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 0)])
    assert tx.timestamp == deadline
    assert accepted(tx) == [(w, 0)]
    next_block_at(deadline + 1)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 1)])
    assert skipped(tx) == [(w, 1, PAST_DEADLINE)]
    assert status(d.escrow, batch_id, w, 1) == NONE
    assert batch_field(d.escrow, batch_id, "pending") == 1


def test_answer_long_past_deadline_skipped(deployment, batch):
    d, w = deployment, deployment.workers[0]
    funds = batch_field(d.escrow, batch, "funds")
    chain.sleep(3601 + 86400)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch, 0)])
    assert skipped(tx) == [(w, 0, PAST_DEADLINE)]
    assert_nothing_accepted(d, batch, funds)


def test_answers_across_batches_in_one_transaction(deployment, batch):
    """Answers for several batches interleaved: each batch's books stay its own."""
    d = deployment
    w0, w1 = d.workers[:2]
    usdc_terms = terms(token=d.usdc, reward=7, relay_fee=3, task_count=2, answers_per_task=1)
    usdc_batch, _ = create_batch(d.escrow, d.other_requester, usdc_terms, token=d.usdc)
    signed = [
        signed_answer(d.escrow, w0, batch, 0),
        signed_answer(d.escrow, w0, usdc_batch, 0),
        signed_answer(d.escrow, w1, batch, 0),
        signed_answer(d.escrow, w1, usdc_batch, 0),  # task 0 full (1 answer per task)
        signed_answer(d.escrow, w1, usdc_batch, 1),
    ]
    tx = submit(d.escrow, d.relay, signed)
    assert accepted(tx) == [(w0, 0), (w0, 0), (w1, 0), (w1, 1)]
    assert [e["batchId"] for e in tx.events["AnswersSubmitted"]] == [batch, usdc_batch, batch, usdc_batch]
    assert submitted(tx, usdc_batch) == [(w0, 0, signed[1][0][2]), (w1, 1, signed[4][0][2])]
    assert [s[2] for s in skipped(tx)] == [7]  # TaskFull
    assert batch_field(d.escrow, batch, "pending") == 2
    assert batch_field(d.escrow, usdc_batch, "pending") == 2
    assert batch_field(d.escrow, usdc_batch, "funds") == 0
    assert d.escrow.balanceOf(ETH, d.relay) == 2 * RELAY_FEE
    assert d.escrow.balanceOf(d.usdc, d.relay) == 2 * 3
    holders = _holders(d) + [d.other_requester]
    assert_money_invariant(d.escrow, ETH, holders)
    assert_money_invariant(d.escrow, d.usdc, holders)
