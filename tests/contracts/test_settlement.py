"""Settlements (ISettlement.settle): every event and error of a first settlement, the signed
digest, and the direct-path fallback with double payment attempted both ways. Later settlements
(restated words, `before`): test_settlement_sealed.py; openSettled: test_settlement_open.py;
claims: test_settlement_claims.py."""

import brownie
import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    ETH,
    PAID,
    PENDING,
    REASON_CID,
    SETTLEMENT_SEALED,
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
from _settlement import (  # noqa: F401  (fixtures)
    RELAY_FEE,
    REWARD,
    SETTLEMENT_MANIFEST,
    SettlementBook,
    env,
    invariant,
    requester_with_key,
    reverts,
    settled_batch,
    word,
)
from brownie import ZERO_ADDRESS, chain
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak

from kempelen.protocol.signing import Domain, Settlement, recover, to_compact

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


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
    # The escrow keeps no per-task flags: a settled worker's answers wait for openSettled, and a
    # worker nobody settled still answers on the direct path.
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, 1),
                                    signed_answer(d.escrow, d.workers[2], batch_id, 0)])
    assert skipped(tx) == [(w0.address, 1, SETTLEMENT_SEALED)]
    assert accepted(tx) == [(d.workers[2].address, 0)]
    assert invariant(d, requester, [batch_id]) == 5 * REWARD


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


def test_the_escrow_verifies_the_python_settlement_digest(env):
    """What the requester signs (kempelen.protocol.signing) is what the escrow recovers from:
    the digest equals eth-account's EIP-712 encoding (a wallet's eth_signTypedData_v4), and the
    escrow accepts the signature only over that digest."""
    d, requester, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 3), (d.workers[1], 200)])
    domain = Domain(chain.id, d.escrow.address)
    digest = domain.digest(settlement.struct_hash())
    signable = encode_typed_data(full_message=settlement.typed_data(domain))
    assert digest == keccak(b"\x19" + signable.version + signable.header + signable.body)
    signature = book.sign(settlement)
    assert recover(digest, signature) == requester.address
    # Signed for another chain: same message, other domain, other digest: refused.
    elsewhere = book.sign(settlement, chain_id=chain.id + 1)
    with brownie.reverts(revert_pattern=rf"SettlementInvalidSigner: {batch_id}, {requester.address.lower()}, 0x.*"):
        book.send(settlement, d.relay, signature=elsewhere)
    tx = book.send(settlement, d.relay, signature=signature)
    assert tx.events["SettlementPosted"]["answers"] == 2


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
    invariant(d, requester, [batch_id])


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
    invariant(d, requester, [batch_id], token=d.usdc)


# ---------------------------------------------------------------- settle: refusals


def test_cannot_settle_unknown_batch_stale_sequence_or_empty_root(env):
    d, _, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    unknown = Settlement(999, 1, settlement.root, REWARD, SETTLEMENT_MANIFEST, settlement.settled)
    with reverts("SettlementUnknownBatch", 999):
        book.send(unknown, d.relay)
    zero_root = Settlement(batch_id, 1, bytes(32), REWARD, SETTLEMENT_MANIFEST, settlement.settled)
    with reverts("SettlementEmptyRoot", batch_id):
        book.send(zero_root, d.relay)
    book.post([(d.workers[0], 1)], d.relay, sequence=3)
    for sequence in (3, 2, 0):
        again, _ = book.build([(d.workers[0], 2)], sequence=sequence)
        with reverts("SettlementStaleSequence", batch_id, sequence, 3):
            book.send(again, d.relay)


def test_replayed_settlement_is_refused(env):
    d, _, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    signature = book.sign(settlement)
    book.send(settlement, d.relay, signature=signature)
    with reverts("SettlementStaleSequence", batch_id, 1, 1):
        book.send(settlement, d.stranger, signature=signature)


def test_only_the_requester_signature_counts(env, deployment):
    d, requester, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    impostor = d.workers[3]
    forged = book.sign(settlement, signer=impostor)
    with reverts("SettlementInvalidSigner", batch_id, requester.address, impostor.address):
        book.send(settlement, d.relay, signature=forged)
    # A signature of the same settlement for another chain recovers to someone else.
    with brownie.reverts(revert_pattern=r"SettlementInvalidSigner: .*"):
        book.send(settlement, d.relay, signature=book.sign(settlement, chain_id=1))
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
            book.send(forged_settlement, d.relay, signature=signature)


@pytest.mark.parametrize("form", ["compact", "high_s", "short", "v_zero"])
def test_signature_forms(env, form):
    d, requester, batch_id, book = env
    settlement, _ = book.build([(d.workers[0], 1)])
    signature = book.sign(settlement)
    if form == "compact":
        book.send(settlement, d.relay, signature=to_compact(signature))
        assert tuple(d.escrow.earningsOf(batch_id, d.workers[0])) == (REWARD, 0)
        return
    if form == "high_s":
        r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
        signature = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    elif form == "short":
        signature = signature[:63]
    else:
        signature = signature[:64] + b"\x00"
    with reverts("SettlementInvalidSigner", batch_id, requester.address, ZERO_ADDRESS):
        book.send(settlement, d.relay, signature=signature)


def test_total_must_match_the_settled_answers(env):
    d, _, batch_id, book = env
    for total in (2 * REWARD - 1, 3 * REWARD, 0):
        settlement, _ = book.build([(d.workers[0], 1), (d.workers[1], 1)], cumulative_total=total)
        with reverts("SettlementWrongTotal", batch_id, 2 * REWARD, total):
            book.send(settlement, d.relay)


def test_cannot_settle_more_than_the_batch_funds(deployment):
    d = deployment
    requester = requester_with_key()
    batch_id = settled_batch(d.escrow, requester, task_count=3, answers_per_task=1)  # funds for 3 answers
    book = SettlementBook(d.escrow, batch_id, requester, REWARD)
    settlement, _ = book.build([(w, 0) for w in d.workers])  # 4 answers
    funds = 3 * (REWARD + RELAY_FEE)
    with reverts("SettlementInsufficientFunds", batch_id, 4 * (REWARD + RELAY_FEE), funds):
        book.send(settlement, d.relay)


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
            book.send(settlement, d.relay)


def test_tasks_must_exist(env):
    d, _, batch_id, book = env  # 400 tasks: word 2 holds tasks 384..399 (bits 0..15)
    w = d.workers[0]
    cases = [word(w, 2, 16), word(w, 3, 0), word(w, 0, 192), word(w, 2**32 - 1, 0)]
    for entry in cases:
        settlement, _ = book.build([], settled=(entry,), cumulative_total=REWARD, earnings={w.address: REWARD})
        with reverts("SettlementTaskOutOfRange", batch_id, w.address, entry.word_index):
            book.send(settlement, d.relay)
    ok, _ = book.build([(w, 399)])
    book.send(ok, d.relay)


def test_an_answer_is_settled_once(env):
    d, _, batch_id, book = env
    w = d.workers[0]
    book.post([(w, 7), (w, 300)], d.relay)
    for task in (7, 300):
        # Entries the SDK would refuse to build (SettledBook.restated): before & bits != 0.
        settlement, _ = book.build([(w, task), (w, 8)], checked=False)
        assert book.before(settlement) == [1 << 7, 1 << 108]
        with reverts("SettlementAlreadySettled", batch_id, w.address, task):
            book.send(settlement, d.relay)


# ---------------------------------------------------------------- one answer, one path


def test_direct_path_refuses_settled_answers(env):
    """Sealed: every answer of the settled worker waits (SettlementSealed), others go ahead; once
    its words are opened, the settled task is refused and its other tasks are accepted."""
    d, requester, batch_id, book = env
    w, other = d.workers[0], d.workers[1]
    book.post([(w, 3)], d.relay)
    funds = batch_field(d.escrow, batch_id, "funds")
    answers = [signed_answer(d.escrow, w, batch_id, 3), signed_answer(d.escrow, w, batch_id, 4)]
    tx = submit(d.escrow, d.relay, answers + [signed_answer(d.escrow, other, batch_id, 3)])
    assert skipped(tx) == [(w.address, 3, SETTLEMENT_SEALED), (w.address, 4, SETTLEMENT_SEALED)]
    assert accepted(tx) == [(other.address, 3)]
    book.open(w, d.stranger)
    tx = submit(d.escrow, d.relay, answers)
    assert skipped(tx) == [(w.address, 3, ALREADY_ANSWERED)]
    assert accepted(tx) == [(w.address, 4)]
    assert batch_field(d.escrow, batch_id, "funds") == funds - 2 * (REWARD + RELAY_FEE)
    invariant(d, requester, [batch_id])


def test_cannot_settle_answers_pending_or_paid_on_the_direct_path(env):
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, 40), signed_answer(d.escrow, w1, batch_id, 41)])
    d.escrow.approve(batch_id, sets([(w1, 41)]), {"from": requester})
    assert status(d.escrow, batch_id, w0, 40) == PENDING and status(d.escrow, batch_id, w1, 41) == PAID
    for w, task in ((w0, 40), (w1, 41)):
        settlement, _ = book.build([(w, task), (w, 42)])
        with reverts("SettlementAnsweredDirectly", batch_id, w.address, task):
            book.send(settlement, d.relay)
    # Other workers' answers to the same tasks, and the same worker's other tasks, settle.
    book.post([(w1, 40), (w0, 41), (w0, 42)], d.relay)
    invariant(d, requester, [batch_id])


def test_a_rejected_direct_answer_may_be_settled_and_is_paid_once(env):
    d, requester, batch_id, book = env
    w = d.workers[0]
    submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 9)])
    d.escrow.reject(batch_id, sets([(w, 9)]), REASON_CID, {"from": requester})
    book.post([(w, 9)], d.relay)
    d.escrow.claimEarnings(*book.claim_args(w), {"from": d.relay})
    assert d.escrow.balanceOf(ETH, w) == REWARD
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 9)])
    assert skipped(tx) == [(w.address, 9, ALREADY_ANSWERED)]  # its direct record comes first
    book.open(w, d.relay)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w, batch_id, 9)])
    assert skipped(tx) == [(w.address, 9, ALREADY_ANSWERED)]
    invariant(d, requester, [batch_id])


def test_unsettled_answer_falls_back_to_submit_review_release(env):
    """The requester settles w0's task 5 but leaves out w1's answer to it and w0's to task 6: w1
    pushes its answer through the direct path; w0 (sealed) opens its words first, then does."""
    d, requester, batch_id, book = env
    w0, w1 = d.workers[0], d.workers[1]
    book.post([(w0, 5)], d.relay)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w1, batch_id, 5)])
    assert accepted(tx) == [(w1.address, 5)]
    book.open(w0, d.stranger)
    tx = submit(d.escrow, d.relay, [signed_answer(d.escrow, w0, batch_id, 6)])
    assert accepted(tx) == [(w0.address, 6)]
    mine_at(now() + 601)
    d.escrow.release(batch_id, sets([(w1, 5), (w0, 6)]), {"from": d.stranger})
    assert d.escrow.balanceOf(ETH, w1) == REWARD
    assert d.escrow.balanceOf(ETH, w0) == REWARD
    # ...and that answer can no longer be settled.
    settlement, _ = book.build([(w1, 5)])
    with reverts("SettlementAnsweredDirectly", batch_id, w1.address, 5):
        book.send(settlement, d.relay)
    invariant(d, requester, [batch_id])


