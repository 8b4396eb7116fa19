"""The auditor and ISettlement's sealed settled words, on hand-made event streams: restating
entries of no bits pay nothing, an opened worker's answers take the direct path and it can be
settled again (no restating, `before` ignored), and every rule the escrow enforces with a
worker's digest or stored words (which the real contract never lets us break) is a finding when
broken; `settle`'s unsigned `before` and calls inside a multicall, from calldata."""

from __future__ import annotations

from dataclasses import replace

from eth_abi import encode
from test_audit_replay import (
    ESCROW,
    FEE,
    OTHER,
    REWARD,
    WORKER,
    Stream,
    batch,
    claim,
    codes,
    replay,
    submit_many,
)

from kempelen.audit.scan import (
    MULTICALL_SELECTOR,
    SETTLE_SELECTOR,
    SETTLE_TYPES,
    SUBMIT_SELECTOR,
    SettleCall,
    decode_settle_calldata,
    decode_submit_calldata,
    unwrap_multicall,
)
from kempelen.audit.settlement_checks import settle_call_findings
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import Answer, Domain, SettledWord, Settlement, address_of, sign

THIRD = "0x0000000000000000000000000000000000000005"


def post(stream: Stream, at: int, sequence: int, entries: list[tuple[str, int, int]], total: int) -> None:
    """AnswersSettled naming `entries` (worker, word, bits) and its SettlementPosted, one transaction."""
    answers = sum(bin(bits).count("1") for _, _, bits in entries)
    stream.add("AnswersSettled", at, batchId=1, sequence=sequence,
               settled=[{"worker": w, "wordIndex": i, "bits": b} for w, i, b in entries])
    stream.add("SettlementPosted", at, batchId=1, sequence=sequence, poster=OTHER, root=bytes([sequence]) * 32,
               cumulativeTotal=total * REWARD, amount=answers * REWARD, relayFees=answers * FEE, answers=answers,
               manifestCid=raw_cid(bytes(32)).to_bytes())
    stream.events[-1] = replace(stream.events[-1], transaction_hash=stream.events[-2].transaction_hash)


def opened(stream: Stream, at: int, worker: str) -> None:
    stream.add("SettledWordsOpened", at, batchId=1, worker=worker)


def test_restated_words_pay_nothing_and_opened_workers_answer_directly():
    """WORKER settled in words 0 and 1, then in word 0 again (word 1 restated with no bits); OTHER
    settled, opened, then answers directly and claims: clean, and money as the escrow moves it."""
    s = Stream()
    batch(s)
    post(s, 100, 1, [(WORKER, 0, 0b11), (WORKER, 1, 1 << 3), (OTHER, 0, 1 << 9)], total=4)
    post(s, 200, 2, [(WORKER, 0, 1 << 2), (WORKER, 1, 0)], total=5)
    opened(s, 300, OTHER)
    submit_many(s, [10], 400, worker=OTHER)  # not settled: fine once opened
    claim(s, 500, WORKER, 4 * REWARD, 4 * REWARD)
    result = replay(s)
    assert result.findings == []
    ledger = result.batches[1]
    assert (ledger.totals.settled_answers, ledger.totals.settlements, ledger.totals.submitted) == (5, 2, 1)
    assert ledger.pool == REWARD and ledger.funds == 200 * (REWARD + FEE) - 6 * (REWARD + FEE)
    assert result.settlement.settled_count[(1, WORKER)] == 4
    first, second = result.settlement.settlements
    assert (first.prior, second.prior) == ((0, 0, 0), (0b11, 1 << 3))  # what `settle`'s `before` had to be
    assert result.settlement.sealed == {(1, WORKER)} and result.settlement.opened == {(1, OTHER)}


def test_sealed_words_rules_broken_by_hand_are_each_a_finding():
    s = Stream()
    batch(s)
    post(s, 100, 1, [(WORKER, 0, 1), (OTHER, 0, 1 << 1)], total=2)
    submit_many(s, [5], 150, worker=WORKER)  # WORKER's words are sealed: the escrow must skip this
    post(s, 200, 2, [(WORKER, 1, 0), (OTHER, 0, 1 << 2)], total=3)  # restates a word WORKER lacks, misses 0
    opened(s, 300, OTHER)
    opened(s, 310, OTHER)
    opened(s, 320, THIRD)  # nothing settled
    # OTHER was opened: settling it again is fine, but an entry of no bits must still name a word it
    # has (the escrow's SettlementEmptyWord against its stored words), and task 1 is settled already.
    post(s, 400, 3, [(OTHER, 0, 1 << 1 | 1 << 3), (OTHER, 1, 0)], total=5)
    submit_many(s, [1], 500, worker=OTHER)  # settled by settlement 1
    submit_many(s, [7], 510, worker=OTHER)  # unsettled, opened: fine
    found = replay(s).findings
    assert codes(found) == [
        ("accepted_while_sealed", 5), ("restated_unsettled_word", None), ("restatement_missing", None),
        ("opened_twice", None), ("opened_without_settlement", None), ("restated_unsettled_word", None),
        ("settled_twice", 1), ("paid_by_both_paths", 1)]
    assert {f.check for f in found} == {"payouts"}
    assert [f.worker for f in found[1:7]] == [WORKER, WORKER, OTHER, THIRD, OTHER, OTHER]
    assert "restates word 1" in found[1].message and "[0]" in found[2].message
    assert "settlement 3 restates word 1" in found[5].message
    assert found[0].tx == s.events[3].transaction_hash and found[0].block == 150
    assert "settled_after_opening" not in {f.code for f in found}  # no such rule since openings are settleable


def opened_then_settled_again() -> Stream:
    """WORKER settled in words 0 and 1, opened, answers task 5 directly, then settled again in word
    0 only (no restating entry for word 1; `before` is ignored for it); OTHER stays sealed and its
    second settlement restates its word 1 with no bits; WORKER claims all three settled answers."""
    s = Stream()
    batch(s)
    post(s, 100, 1, [(WORKER, 0, 0b1), (WORKER, 1, 1 << 2), (OTHER, 0, 1 << 1), (OTHER, 1, 1 << 1)], total=4)
    opened(s, 200, WORKER)
    submit_many(s, [5], 250, worker=WORKER)  # unsettled, opened: the direct path is fine
    post(s, 300, 2, [(WORKER, 0, 1 << 3), (OTHER, 0, 1 << 4), (OTHER, 1, 0)], total=6)
    claim(s, 400, WORKER, 3 * REWARD, 3 * REWARD)  # above its settled answers if task 3 went uncounted
    return s


def test_an_opened_worker_settled_again_without_restating_is_honest():
    s = opened_then_settled_again()
    result = replay(s)
    assert result.findings == [], [f.to_json() for f in result.findings]
    st = result.settlement
    assert st.settled_count[(1, WORKER)] == 3 and st.settled[(1, WORKER, 3)] == 2
    assert st.settled_words[(1, WORKER)] == {0: 0b1001, 1: 1 << 2}  # as the escrow's stored words
    assert st.opened == {(1, WORKER)} and st.sealed == {(1, OTHER)}  # settling again does not seal it
    ledger = result.batches[1]
    assert (ledger.totals.settled_answers, ledger.totals.submitted, ledger.pool) == (6, 1, 3 * REWARD)
    ref = st.settlements[1]
    assert ref.prior == (None, 1 << 1, 1 << 1)  # no `before` owed for the opened worker's entry

    requester_key = "0x" + "33" * 32
    result.batches[1].totals.requester = address_of(requester_key)
    posted = Settlement(1, 2, ref.root, ref.cumulative_total, ref.manifest_raw, ref.words)
    signature = sign(Domain(1, ESCROW).digest(posted.struct_hash()), requester_key)

    def findings(before):
        calls = {ref.event.transaction_hash: [SettleCall(posted, before, signature)]}
        return settle_call_findings([ref], calls, result, 1, ESCROW)

    assert findings((0xDEAD, 1 << 1, 1 << 1)) == []  # garbage for the opened worker: ignored
    assert findings((0, 1 << 1, 1 << 1)) == findings((1 << 3, 1 << 1, 1 << 1)) == []
    (wrong,) = findings((0xDEAD, 1 << 1, 0))  # the sealed worker's `before` still counts
    assert (wrong.code, wrong.worker) == ("settlement_prior_mismatch", OTHER)
    assert "word 1: 0x0, its settled bits 0x2" in wrong.message and "0xdead" not in wrong.message
    (short,) = findings((1 << 1, 1 << 1))  # one word per entry, opened or not
    assert (short.code, short.worker) == ("settlement_prior_mismatch", None)
    assert "2 for 3 entries" in short.message


def test_an_opened_worker_settled_again_is_held_to_one_answer_one_path():
    """Its answers are tracked as a sealed worker's: settling its direct answer (pending) or an
    answer settled before, or accepting directly an answer its later settlement paid, are findings;
    a sealed worker settled without restating is still `restatement_missing`."""
    s = opened_then_settled_again()
    submit_many(s, [3], 500, worker=WORKER)  # paid by settlement 2, after the opening
    post(s, 600, 3, [(WORKER, 0, 1 | 1 << 5)], total=8)  # 0: settled by settlement 1; 5: pending directly
    post(s, 700, 4, [(OTHER, 0, 1 << 6)], total=9)  # OTHER is sealed: its word 1 must be restated
    found = replay(s).findings
    assert codes(found) == [("paid_by_both_paths", 3), ("settled_twice", 0), ("paid_by_both_paths", 5),
                            ("restatement_missing", None)]
    assert [f.worker for f in found] == [WORKER, WORKER, WORKER, OTHER]
    assert "[1]" in found[3].message
    assert "accepted_while_sealed" not in {f.code for f in found}  # WORKER stays opened


def test_settle_calldata_before_must_be_the_workers_earlier_bits():
    s = Stream()
    batch(s)
    post(s, 100, 1, [(WORKER, 0, 0b11), (WORKER, 1, 1 << 3)], total=3)
    post(s, 200, 2, [(WORKER, 0, 1 << 2), (WORKER, 1, 0)], total=4)
    result = replay(s)
    ref = result.settlement.settlements[1]
    requester_key = "0x" + "33" * 32
    result.batches[1].totals.requester = address_of(requester_key)
    posted = Settlement(1, 2, ref.root, ref.cumulative_total, ref.manifest_raw, ref.words)
    signature = sign(Domain(1, ESCROW).digest(posted.struct_hash()), requester_key)

    def findings(before):
        calls = {ref.event.transaction_hash: [SettleCall(posted, before, signature)]}
        return settle_call_findings([ref], calls, result, 1, ESCROW)

    assert findings((0b11, 1 << 3)) == []
    (wrong,) = findings((0b11, 1 << 4))
    assert (wrong.code, wrong.check, wrong.worker, wrong.batch) == ("settlement_prior_mismatch", "payouts", WORKER, 1)
    assert "word 1: 0x10, its settled bits 0x8" in wrong.message
    assert [f.code for f in findings((0b11,))] == ["settlement_prior_mismatch"]  # one entry's `before` missing


def test_calls_inside_a_multicall_are_read_from_calldata():
    settlement = Settlement(7, 2, b"\x01" * 32, 5 * REWARD, b"\x01\x55", (SettledWord(WORKER, 0, 4),
                                                                         SettledWord(WORKER, 1, 0)))
    settle = SETTLE_SELECTOR + encode(SETTLE_TYPES, [settlement.as_tuple(), [3, 8], b"\x02" * 65])
    answer = Answer(7, 9, b"\x03" * 32, WORKER)
    submit = SUBMIT_SELECTOR + encode(["(uint64,uint32,bytes32,address)[]", "bytes[]"],
                                      [[answer.as_tuple()], [b"\x04" * 65]])
    other = bytes.fromhex("12345678") + bytes(32)  # another call of the escrow (say permitDeposit)

    def multicall(*calls: bytes) -> bytes:
        return MULTICALL_SELECTOR + encode(["bytes[]"], [list(calls)])

    direct = decode_settle_calldata(settle)
    assert direct == [SettleCall(settlement, (3, 8), b"\x02" * 65)]
    assert unwrap_multicall(decode_settle_calldata, multicall(other, settle)) == direct
    assert unwrap_multicall(decode_settle_calldata, multicall(multicall(settle), settle)) == direct * 2
    assert unwrap_multicall(decode_submit_calldata, multicall(settle, submit)) == decode_submit_calldata(submit)
    assert unwrap_multicall(decode_submit_calldata, multicall(settle, other)) is None
    assert unwrap_multicall(decode_settle_calldata, MULTICALL_SELECTOR + b"\x00" * 5) is None  # malformed
