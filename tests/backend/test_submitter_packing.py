"""The submitter's pure core: pack bounds, calldata, fee bumps, nonces, receipt reading."""

from __future__ import annotations

import os

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from kempelen.protocol.events import Event
from kempelen.protocol.signing import Answer, Domain, answer_digest, recover, sign
from kempelen.relay.fees import Fees, suggest_fees
from kempelen.relay.nonces import NonceManager
from kempelen.relay.packing import (
    GAS_PER_ANSWER_WORST,
    GAS_PER_TRANSACTION,
    SUBMIT_ANSWERS_SELECTOR,
    PackingPolicy,
    QueuedAnswer,
    choose_pack,
    order_for_gas,
    split,
    submit_calldata,
    unencodable,
)
from kempelen.relay.receipts import outcomes

DOMAIN = Domain(31337, "0x" + "ab" * 20)
ESCROW = "0x" + "ab" * 20


def queued(count: int, accepted_at: float = 1000.0, batch_id: int = 1) -> list[QueuedAnswer]:
    result = []
    for i in range(count):
        key = "0x" + os.urandom(32).hex()
        worker = Account.from_key(key).address
        digest = answer_digest(str(i).encode())
        signature = sign(DOMAIN.digest(Answer(batch_id, i, digest, worker).struct_hash()), key)
        result.append(QueuedAnswer(i + 1, batch_id, i, worker, digest, signature, accepted_at + i))
    return result


def test_a_pack_waits_until_full_or_old_enough():
    policy = PackingPolicy(max_answers=10, flush_after=2.0)
    head = queued(5, accepted_at=100.0)
    assert choose_pack(head, policy, now=101.0) == []  # 5 of 10, oldest waited 1 s
    assert choose_pack(head, policy, now=102.0) == head  # oldest waited 2 s: flush
    full = queued(12, accepted_at=100.0)
    assert choose_pack(full, policy, now=100.0) == full[:10]  # full: no waiting, size-bounded
    assert choose_pack([], policy, now=1e9) == []


def test_the_gas_budget_bounds_the_pack_size():
    policy = PackingPolicy(max_answers=500, max_gas=GAS_PER_TRANSACTION + 7 * GAS_PER_ANSWER_WORST)
    assert policy.capacity == 7
    assert len(choose_pack(queued(20), policy, now=0.0)) == 7
    assert PackingPolicy(max_answers=3).capacity == 3


@pytest.mark.parametrize("bad", [{"max_answers": 0}, {"max_gas": 1000}, {"flush_after": -1}])
def test_policies_that_cannot_pack_are_refused(bad):
    with pytest.raises(ValueError):
        PackingPolicy(**bad)


def test_calldata_carries_every_answer_and_a_signature_that_still_recovers():
    pack = queued(4)
    for compact in (True, False):
        calldata = submit_calldata(pack, compact=compact)
        assert calldata[:4] == SUBMIT_ANSWERS_SELECTOR
        answers, signatures = abi_decode(["(uint64,uint32,bytes32,address)[]", "bytes[]"], calldata[4:])
        assert [a[1] for a in answers] == [a.task_index for a in pack]
        for answer, (batch_id, task, digest, worker), signature in zip(pack, answers, signatures):
            assert len(signature) == (64 if compact else 65)
            message = DOMAIN.digest(Answer(batch_id, task, digest, worker).struct_hash())
            assert recover(message, signature) == answer.worker
    assert len(submit_calldata(pack, compact=True)) < len(submit_calldata(pack, compact=False))


def test_a_malformed_signature_goes_out_unchanged_for_the_escrow_to_skip():
    answer = queued(1)[0]
    odd = QueuedAnswer(answer.id, 1, 0, answer.worker, answer.answer_digest, b"\x01" * 66, 0.0)
    _, signatures = abi_decode(["(uint64,uint32,bytes32,address)[]", "bytes[]"], submit_calldata([odd])[4:])
    assert signatures[0] == b"\x01" * 66


def test_unencodable_answers_are_named():
    good = queued(1)[0]
    assert unencodable(good) is None
    assert "uint64" in unencodable(QueuedAnswer(1, 2**64, 0, good.worker, good.answer_digest, b"", 0.0))
    assert "uint32" in unencodable(QueuedAnswer(1, 1, -1, good.worker, good.answer_digest, b"", 0.0))
    assert "digest" in unencodable(QueuedAnswer(1, 1, 0, good.worker, b"short", b"", 0.0))
    assert "address" in unencodable(QueuedAnswer(1, 1, 0, "0xnothex", good.answer_digest, b"", 0.0))


def test_packs_are_ordered_by_batch_worker_task_and_split_in_halves():
    pack = queued(3, batch_id=2) + queued(3, batch_id=1)
    ordered = order_for_gas(pack)
    assert [a.batch_id for a in ordered] == [1, 1, 1, 2, 2, 2]
    assert sorted(a.id for a in ordered) == sorted(a.id for a in pack)
    left, right = split(ordered)
    assert left + right == ordered and len(left) == 3


def test_replacement_fees_rise_by_at_least_an_eighth():
    fees = suggest_fees(base_fee=10_000_000_000, priority_fee=1_000_000_000, gas_price=0)
    assert fees.eip1559 and fees.max_fee_per_gas == 21_000_000_000
    bumped = fees.bumped()
    assert bumped.max_fee_per_gas * 8 >= fees.max_fee_per_gas * 9
    assert bumped.max_priority_fee_per_gas * 8 >= fees.max_priority_fee_per_gas * 9
    # never below what the chain asks today, even if that is more than +12.5%
    today = Fees(max_fee_per_gas=50_000_000_000, max_priority_fee_per_gas=2_000_000_000)
    assert fees.bumped(at_least=today).max_fee_per_gas == 50_000_000_000
    legacy = suggest_fees(base_fee=None, priority_fee=0, gas_price=7)
    assert not legacy.eip1559 and legacy.tx_fields() == {"gasPrice": 7}
    assert legacy.bumped().gas_price >= 9  # ceil(7 * 9 / 8) + 1


def test_nonces_count_up_from_the_chain_and_resync():
    chain_count = [5]
    nonces = NonceManager(lambda: chain_count[0])
    assert [nonces.take(), nonces.take()] == [5, 6]
    nonces.give_back(6)
    assert nonces.take() == 6
    chain_count[0] = 9  # someone else used the key
    assert nonces.resync() == 9 and nonces.take() == 9
    assert nonces.resync(at_least=20) == 20


def _event(name: str, address: str, **args) -> Event:
    return Event(name, args, address, 7, "0x", "0x", 0, 0)


def test_receipts_are_matched_to_the_pack_by_batch_worker_task():
    w1, w2, w3 = (Account.create().address for _ in range(3))
    pack = [(10, (1, w1, 0)), (11, (1, w2, 0)), (12, (1, w3, 0))]
    events = [
        _event("AnswerSubmitted", ESCROW, batchId=1, worker=w1, taskIndex=0, answerDigest=b"\x01" * 32),
        _event("AnswerSkipped", ESCROW, batchId=1, worker=w2, taskIndex=0, reason=3),
        # the same shape from another contract must not count
        _event("AnswerSubmitted", "0x" + "cd" * 20, batchId=1, worker=w3, taskIndex=0, answerDigest=b"\x02" * 32),
    ]
    result = {o.answer_id: o for o in outcomes(pack, events, ESCROW)}
    assert result[10].status == "onchain" and result[10].block_number == 7
    assert result[11].status == "skipped" and result[11].skip_reason == "BadSignature"
    assert result[12].status == "missing"
