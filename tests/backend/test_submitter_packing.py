"""The submitter's pure core: pack bounds, calldata, fee bumps, nonces, receipt reading."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from kempelen.chain import artifacts
from kempelen.protocol.events import abi_type
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
from kempelen.relay.receipts import escrow_decoder, outcomes
from kempelen.relay.relayer import Relayer

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


def _log(name: str, address: str, block: int = 7, tx: str = "0x" + "77" * 32, **args) -> dict:
    """A raw JSON-RPC log of the escrow's event `name`, ABI-encoded as the contract emits it."""
    (entry,) = [e for e in artifacts.load("TaskEscrow").events() if e["name"] == name]
    topics = escrow_decoder().topics(name)
    plain = []
    for param in entry["inputs"]:
        if param["indexed"]:
            topics.append("0x" + abi_encode([abi_type(param)], [args[param["name"]]]).hex())
        else:
            plain.append(param)
    data = abi_encode([abi_type(p) for p in plain], [args[p["name"]] for p in plain])
    return {"address": address, "topics": topics, "data": "0x" + data.hex(), "blockNumber": hex(block),
            "blockHash": "0x" + "00" * 32, "transactionHash": tx, "transactionIndex": "0x0", "logIndex": "0x0"}


def _submitted(address: str, batch_id: int, worker: str, first_task: int, answers: dict[int, bytes],
               **extra) -> dict:
    """AnswersSubmitted naming `answers` (task -> digest) of one worker in the group at first_task."""
    bitmap = sum(1 << (task - first_task) for task in answers)
    return _log("AnswersSubmitted", address, batchId=batch_id, worker=worker, relayer="0x" + "ee" * 20,
                firstTask=first_task, tasks=bitmap, answerDigests=[answers[t] for t in sorted(answers)], **extra)


def _skipped(address: str, batch_id: int, worker: str, task: int, reason: int) -> dict:
    return _log("AnswerSkipped", address, batchId=batch_id, worker=worker, taskIndex=task, reason=reason)


def _decoded(*logs: dict) -> list:
    events = escrow_decoder().decode_all(logs)
    assert len(events) == len(logs)
    return events


def test_receipts_are_matched_to_the_pack_by_batch_worker_task():
    w1, w2, w3 = (Account.create().address for _ in range(3))
    pack = [(10, (1, w1, 0)), (11, (1, w2, 0)), (12, (1, w3, 0)), (13, (1, w1, 2))]
    events = _decoded(
        _submitted(ESCROW, 1, w1, 0, {0: b"\x01" * 32, 2: b"\x03" * 32}),
        _skipped(ESCROW, 1, w2, 0, reason=3),
        # the same shape from another contract must not count
        _submitted("0x" + "cd" * 20, 1, w3, 0, {0: b"\x02" * 32}),
    )
    result = {o.answer_id: o for o in outcomes(pack, events, ESCROW)}
    assert result[10].status == "onchain" and result[10].block_number == 7
    assert result[10].answer_digest == b"\x01" * 32
    assert result[13].status == "onchain" and result[13].answer_digest == b"\x03" * 32
    assert result[11].status == "skipped" and result[11].skip_reason == "BadSignature"
    assert result[12].status == "missing"


def test_one_answers_submitted_log_marks_each_answer_it_names_and_no_other():
    worker, other = Account.create().address, Account.create().address
    digests = {task: bytes([task % 256]) * 32 for task in (96, 97, 100, 191)}
    pack = [(1, (4, worker, 96)), (2, (4, worker, 97)), (3, (4, worker, 100)), (4, (4, worker, 191)),
            (5, (4, worker, 98)),  # in the group, bit clear
            (6, (4, worker, 1)), (7, (4, worker, 192)),  # bit 1 / bit 96 of another group: not this one
            (8, (4, other, 97)), (9, (5, worker, 97))]  # another worker, another batch
    (event,) = _decoded(_submitted(ESCROW, 4, worker, 96, digests))
    assert event.name == "AnswersSubmitted"
    result = {o.answer_id: o for o in outcomes(pack, [event], ESCROW.upper().replace("0X", "0x"))}
    for answer_id, task in ((1, 96), (2, 97), (3, 100), (4, 191)):
        assert result[answer_id].status == "onchain", task
        assert result[answer_id].answer_digest == digests[task]  # digests follow the bits, ascending
        assert result[answer_id].block_number == 7
    assert [result[i].status for i in (5, 6, 7, 8, 9)] == ["missing"] * 5


def test_an_acceptance_outranks_a_skip_of_the_same_answer_whatever_the_log_order():
    """AnswersSubmitted is logged when its group closes, after skips of answers sent later."""
    worker = Account.create().address
    pack = [(1, (1, worker, 0)), (2, (1, worker, 1)), (3, (1, worker, 2))]
    accepted = _submitted(ESCROW, 1, worker, 0, {0: b"\x01" * 32, 1: b"\x02" * 32})
    for logs in ([_skipped(ESCROW, 1, worker, 1, 6), _skipped(ESCROW, 1, worker, 2, 7), accepted],
                 [accepted, _skipped(ESCROW, 1, worker, 1, 6), _skipped(ESCROW, 1, worker, 2, 7)]):
        result = outcomes(pack, _decoded(*logs), ESCROW)
        assert [r.status for r in result] == ["onchain", "onchain", "skipped"]
        assert result[2].skip_reason == "TaskFull"


def test_an_answers_submitted_whose_digests_disagree_with_its_bitmap_vouches_for_nothing():
    worker = Account.create().address
    pack = [(1, (1, worker, 0)), (2, (1, worker, 1))]
    bad = _log("AnswersSubmitted", ESCROW, batchId=1, worker=worker, relayer=worker, firstTask=0,
               tasks=0b11, answerDigests=[b"\x01" * 32])  # two tasks, one digest
    assert [r.status for r in outcomes(pack, _decoded(bad), ESCROW)] == ["missing", "missing"]


class _Logs:
    """eth.get_logs of a node holding `logs`, filtering by address and topics as a node does."""

    def __init__(self, logs: list[dict]):
        self.logs, self.filters = logs, []

    def get_logs(self, query: dict) -> list[dict]:
        self.filters.append(query)

        def matches(log):
            return log["address"].lower() == query["address"].lower() and all(
                want is None or (log["topics"][i] in want if isinstance(want, list) else log["topics"][i] == want)
                for i, want in enumerate(query["topics"]))

        return [log for log in self.logs if matches(log)]


def _relayer(logs: list[dict]) -> tuple[Relayer, _Logs]:
    """A Relayer whose node is `logs` (only submitted_digest is exercised)."""
    node = _Logs(logs)
    relayer = object.__new__(Relayer)
    relayer.w3 = SimpleNamespace(eth=node)
    relayer.escrow = ESCROW
    relayer.chain = SimpleNamespace(deployment=SimpleNamespace(deploy_block=3))
    return relayer, node


def test_the_relayer_finds_an_answer_inside_the_answers_submitted_of_its_worker():
    worker, other = Account.create().address, Account.create().address
    relayer, node = _relayer([
        _submitted(ESCROW, 2, worker, 0, {0: b"\x10" * 32, 5: b"\x15" * 32}, block=8, tx="0x" + "08" * 32),
        _submitted(ESCROW, 2, worker, 96, {96: b"\x60" * 32, 101: b"\x65" * 32}, block=9, tx="0x" + "09" * 32),
        _submitted(ESCROW, 2, other, 0, {3: b"\x33" * 32}, block=9),
        _submitted(ESCROW, 3, worker, 0, {3: b"\x33" * 32}, block=9),
    ])
    assert relayer.submitted_digest(2, worker, 5) == (b"\x15" * 32, 8, "0x" + "08" * 32)
    assert relayer.submitted_digest(2, worker.lower(), 101) == (b"\x65" * 32, 9, "0x" + "09" * 32)
    assert relayer.submitted_digest(2, worker, 96) == (b"\x60" * 32, 9, "0x" + "09" * 32)
    for task in (1, 3, 6, 97, 192):  # bits not set, or no group of the worker holds them
        assert relayer.submitted_digest(2, worker, task) is None
    query = node.filters[0]
    assert query["topics"] == [escrow_decoder().topics("AnswersSubmitted")[0],
                               "0x" + (2).to_bytes(32, "big").hex(),
                               "0x" + bytes(12).hex() + worker.lower()[2:]]
    assert query["fromBlock"] == 3
