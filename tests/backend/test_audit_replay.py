"""The pure core on hand-made event streams: the rules the real contracts never let us break on-chain."""

from __future__ import annotations

from dataclasses import replace

from kempelen.audit import checks
from kempelen.audit.model import ETH
from kempelen.audit.replay import Replay
from kempelen.audit.scan import ChainHistory, ChainState, SettleCall
from kempelen.audit.settlement_checks import settle_call_findings
from kempelen.audit.signatures import recover_signers
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.events import Event
from kempelen.protocol.signing import (
    Answer,
    Domain,
    SettledWord,
    Settlement,
    address_of,
    settled_words,
    sign,
)

ESCROW = "0x00000000000000000000000000000000000000E5"
REPUTATION = "0x00000000000000000000000000000000000000Ab"
REQUESTER = "0x0000000000000000000000000000000000000001"
WORKER = "0x0000000000000000000000000000000000000002"
RELAY = "0x0000000000000000000000000000000000000003"
REWARD, FEE, WINDOW = 100, 1, 600


class Stream:
    """Events in chain order, one block per event, block number = timestamp for readability."""

    def __init__(self):
        self.events: list[Event] = []

    def add(self, name: str, at: int, address: str = ESCROW, **args) -> None:
        tx = "0x" + f"{len(self.events):064x}"
        self.events.append(Event(name, args, address, at, "0x" + "00" * 32, tx, 0, len(self.events)))

    def times(self) -> dict[int, int]:
        return {e.block_number: e.block_number for e in self.events}


def batch(stream: Stream, tasks: int = 200) -> None:
    stream.add("BatchCreated", 10, batchId=1, requester=REQUESTER, token=ETH, taskCount=tasks, answersPerTask=1,
               reward=REWARD, relayFee=FEE, deadline=5_000, reviewWindow=WINDOW, minReputation=0,
               goldCommitment=bytes(32), deposit=tasks * (REWARD + FEE), manifestCid=raw_cid(bytes(32)).to_bytes())


def submit(stream: Stream, task: int, at: int) -> None:
    submit_many(stream, [task], at)


def submit_many(stream: Stream, tasks: list[int], at: int, worker: str = WORKER, digests: list[bytes] | None = None,
                same_tx: bool = False) -> None:
    """One AnswersSubmitted naming the worker's answers to `tasks` (one 96-task group), as the
    escrow logs a run of them; `same_tx`: in the transaction of the previous event."""
    first = min(tasks) - min(tasks) % 96
    digests = [bytes([t % 256]) * 32 for t in sorted(tasks)] if digests is None else digests
    stream.add("AnswersSubmitted", at, batchId=1, worker=worker, relayer=RELAY, firstTask=first,
               tasks=sum(1 << (t - first) for t in tasks), answerDigests=digests)
    if same_tx:
        stream.events[-1] = replace(stream.events[-1], transaction_hash=stream.events[-2].transaction_hash)


def review(stream: Stream, name: str, at: int, task: int, **extra) -> None:
    """A review event naming one answer (the escrow names a worker's answers per 96-task group)."""
    stream.add(name, at, batchId=1, worker=WORKER, firstTask=task - task % 96, tasks=1 << task % 96, **extra)


def replay(stream: Stream) -> Replay:
    return Replay(ESCROW, stream.times(), {}).run(stream.events)


def codes(findings) -> list[tuple[str, int | None]]:
    return [(f.code, f.task) for f in findings]


def test_review_deadline_follows_the_latest_submission_of_the_96_task_group():
    s = Stream()
    batch(s)
    submit(s, 0, 1_000)
    submit(s, 96, 1_000)  # another group: its own clock
    submit(s, 1, 1_400)  # same group as task 0: moves task 0's deadline to 2_000
    review(s, "AnswersApproved", 1_900, 0)  # in time by the group rule
    review(s, "AnswersApproved", 1_900, 96)  # 1_600 passed
    review(s, "AnswersReleased", 1_950, 1)  # window open until 2_000
    review(s, "AnswersReleased", 2_001, 0)  # already paid
    assert codes(replay(s).findings) == [
        ("reviewed_after_window", 96), ("released_inside_window", 1), ("paid_twice", 0)]


def test_payouts_without_answer_after_rejection_and_reclaims_before_the_deadline():
    s = Stream()
    batch(s, tasks=2)
    submit(s, 0, 100)
    review(s, "AnswersRejected", 200, 0, reasonCid=b"")
    review(s, "AnswersApproved", 300, 0)
    review(s, "AnswersReleased", 4_000, 1)
    s.add("BatchReclaimed", 4_500, batchId=1, requester=REQUESTER, amount=0)
    found = replay(s).findings
    assert codes(found) == [("paid_after_rejection", 0), ("payout_without_answer", 1),
                            ("reclaimed_before_deadline", None), ("under_refund", None)]


def test_withdrawing_more_than_owed_is_overdrawn():
    s = Stream()
    batch(s, tasks=1)
    submit(s, 0, 100)
    s.add("Withdrawn", 200, account=RELAY, token=ETH, amount=FEE + 1)
    assert codes(replay(s).findings) == [("overdrawn", None)]


def test_reputation_must_record_every_review_and_its_counters_must_add_up():
    s = Stream()
    batch(s, tasks=2)
    submit_many(s, [0, 1], 100)
    review(s, "AnswersApproved", 200, 0)
    review(s, "AnswersApproved", 300, 1)
    review_tx = s.events[-1].transaction_hash
    # Only the first approval is recorded, and in a transaction of its own.
    s.add("OutcomesRecorded", 200, REPUTATION, requester=REQUESTER, outcome=0, workers=[WORKER], counts=[1])
    s.events[-1] = replace(s.events[-1], transaction_hash=s.events[-3].transaction_hash)
    state = ChainState(worker_records={WORKER: (2, 0, 0)}, requester_records={REQUESTER: (1, 0, 0)})
    history = ChainHistory(1, ESCROW, REPUTATION, 0, 300, 300, s.events, {}, {}, s.times(), state)
    found = checks.reputation_findings(history, replay(s))
    assert [(f.code, f.tx) for f in found] == [("outcome_mismatch", review_tx), ("counter_mismatch", None)]
    assert "(2, 0, 0)" in found[1].message and "(1, 0, 0)" in found[1].message


def test_one_outcomes_event_records_a_whole_review_call():
    """One OutcomesRecorded per review call, naming every worker it reviewed (one may recur);
    one whose arrays differ in length is a finding, not a crash."""
    s = Stream()
    batch(s, tasks=200)
    submit_many(s, [0, 96], 100)
    submit_many(s, [5], 100, worker=OTHER)
    review(s, "AnswersApproved", 200, 0)
    for event in (dict(worker=OTHER, firstTask=0, tasks=1 << 5), dict(worker=WORKER, firstTask=96, tasks=1)):
        s.add("AnswersApproved", 200, batchId=1, **event)
        s.events[-1] = replace(s.events[-1], transaction_hash=s.events[-2].transaction_hash)
    s.add("OutcomesRecorded", 200, REPUTATION, requester=REQUESTER, outcome=0, workers=[WORKER, OTHER, WORKER],
          counts=[1, 1, 1])
    s.events[-1] = replace(s.events[-1], transaction_hash=s.events[-2].transaction_hash)
    s.add("OutcomesRecorded", 300, REPUTATION, requester=REQUESTER, outcome=1, workers=[WORKER], counts=[])
    state = ChainState(worker_records={WORKER: (2, 0, 0), OTHER: (1, 0, 0)}, requester_records={REQUESTER: (3, 0, 0)})
    history = ChainHistory(1, ESCROW, REPUTATION, 0, 300, 300, s.events, {}, {}, s.times(), state)
    found = checks.reputation_findings(history, replay(s))
    assert [(f.code, f.tx) for f in found] == [("outcome_mismatch", s.events[-1].transaction_hash)]
    assert "1 workers but carries 0 counts" in found[0].message


# -- AnswersSubmitted: a worker's answers per 96-task group, one log each run ------------------------


def test_an_event_naming_several_answers_replays_each_of_them():
    s = Stream()
    batch(s)
    submit_many(s, [0, 1, 5], 100)
    submit_many(s, [96, 97], 100, same_tx=True)  # the worker's next group, in the same call
    submit_many(s, [3], 100, same_tx=True)  # an unsorted call: group 0 again in another event
    submit_many(s, [1], 150)  # accepted twice
    review(s, "AnswersApproved", 200, 5)
    result = replay(s)
    assert codes(result.findings) == [("answered_twice", 1), ("task_over_answered", 1)]
    assert [(a.task, a.digest, a.log_index) for a in result.submitted] == [
        (0, bytes(32), 1), (1, b"\x01" * 32, 1), (5, b"\x05" * 32, 1), (96, b"\x60" * 32, 2),
        (97, b"\x61" * 32, 2), (3, b"\x03" * 32, 3), (1, b"\x01" * 32, 4)]
    ledger = result.batches[1]
    assert (ledger.totals.submitted, ledger.pending, ledger.totals.approved) == (7, 6, 1)
    assert ledger.funds == 200 * (REWARD + FEE) - 7 * (REWARD + FEE)
    assert result.accounts[(ETH, RELAY)] == 7 * FEE and result.accounts[(ETH, WORKER)] == REWARD


def test_answers_submitted_whose_bitmap_and_digests_disagree_is_a_finding():
    s = Stream()
    batch(s)
    submit_many(s, [0, 1, 2], 100, digests=[bytes(32), b"\x01" * 32])  # three tasks, two digests
    submit_many(s, [3], 100)  # later events still replay
    result = replay(s)
    (malformed,) = result.findings
    assert (malformed.check, malformed.code, malformed.batch, malformed.worker, malformed.task) == (
        "payouts", "submission_malformed", 1, WORKER, None)
    assert malformed.tx == s.events[1].transaction_hash and malformed.block == 100
    assert "names 3 tasks but carries 2 digests" in malformed.message
    assert [a.task for a in result.submitted] == [3] and result.batches[1].totals.submitted == 1


def test_signatures_pair_with_the_answers_of_grouped_events_by_content():
    """Events follow neither the calldata's order nor one log per answer; a copy of an answer
    relayed twice in one call (the escrow skips one) is paired with the signature its worker made."""
    worker_key, stranger_key = "0x" + "42" * 32, "0x" + "24" * 32
    worker, domain = address_of(worker_key), Domain(1, ESCROW)

    def relayed(task: int, key: str = worker_key) -> tuple:
        answer = (1, task, bytes([task]) * 32, worker)
        return answer, sign(domain.digest(Answer(*answer).struct_hash()), key)

    s = Stream()
    batch(s)
    s.add("AnswerSkipped", 100, batchId=1, worker=worker, taskIndex=7, reason=3)  # the bad copy of task 7
    submit_many(s, [2, 7], 100, worker=worker, same_tx=True)
    submit_many(s, [1], 100, worker=worker, same_tx=True)
    submit_many(s, [4], 100, worker=worker)  # the relay's call holds a forged signature for it
    submit_many(s, [6], 100, worker=worker, same_tx=True)  # not in that call's calldata
    submit_many(s, [5], 100, worker=worker)  # no calldata for this transaction
    result = replay(s)
    tx = [e.transaction_hash for e in s.events]
    history = ChainHistory(1, ESCROW, None, 0, 100, 100, s.events, {
        tx[1]: [relayed(2), relayed(7, stranger_key), relayed(1), relayed(7)],
        tx[4]: [relayed(4, stranger_key), relayed(3)],
    }, {}, s.times(), ChainState())
    items, owners, found = checks.pair_signatures(history, result.submitted)
    assert [(a.task, a.tx) for a in owners] == [(2, tx[1]), (7, tx[1]), (1, tx[1]), (4, tx[4])]
    assert [item for item in items if item[0][1] == 7] == [relayed(7)]
    assert [(f.code, f.task) for f in found] == [("answer_not_in_calldata", 6), ("calldata_unavailable", 5)]
    signers = recover_signers(1, ESCROW, items)
    assert [(f.code, f.task) for f in checks.signature_findings(owners, signers)] == [("bad_signature", 4)]


# -- settlements (ISettlement): rules the escrow enforces, broken by hand ---------------------------

OTHER = "0x0000000000000000000000000000000000000004"


def settle(stream: Stream, at: int, sequence: int, pairs: list[tuple[str, int]], *, total: int | None = None,
           amount: int | None = None, answers: int | None = None, with_words: bool = True) -> None:
    """AnswersSettled + SettlementPosted in one transaction, as the escrow emits them."""
    words = [{"worker": w.worker, "wordIndex": w.word_index, "bits": w.bits} for w in settled_words(pairs)]
    count = len(pairs) if answers is None else answers
    if with_words:
        stream.add("AnswersSettled", at, batchId=1, sequence=sequence, settled=words)
    stream.add("SettlementPosted", at, batchId=1, sequence=sequence, poster=RELAY, root=b"\x01" * 32,
               cumulativeTotal=total if total is not None else count * REWARD * sequence,
               amount=count * REWARD if amount is None else amount, relayFees=count * FEE, answers=count,
               manifestCid=raw_cid(bytes(32)).to_bytes())
    if with_words:
        stream.events[-1] = replace(stream.events[-1], transaction_hash=stream.events[-2].transaction_hash)


def claim(stream: Stream, at: int, worker: str, amount: int, cumulative: int) -> None:
    stream.add("EarningsClaimed", at, batchId=1, worker=worker, amount=amount, cumulative=cumulative)


def test_one_answer_one_path_either_way_round():
    s = Stream()
    batch(s)
    submit_many(s, [0, 1], 100)
    review(s, "AnswersRejected", 200, 1, reasonCid=b"\x01")
    settle(s, 300, 1, [(WORKER, 0), (WORKER, 1), (WORKER, 195)])  # 0 is pending; 1 was rejected: fine
    submit(s, 195, 400)  # settled already
    settle(s, 500, 2, [(WORKER, 195)], total=4 * REWARD)  # settled twice (and word 0 not restated)
    found = replay(s).findings
    assert codes(found) == [("paid_by_both_paths", 0), ("paid_by_both_paths", 195), ("restatement_missing", None),
                            ("settled_twice", 195), ("paid_by_both_paths", 195)]  # and pending directly


def test_settlement_money_must_follow_the_batch_terms_and_the_running_total():
    s = Stream()
    batch(s)
    settle(s, 100, 1, [(WORKER, 0), (OTHER, 0)], amount=3 * REWARD, total=3 * REWARD)
    settle(s, 200, 1, [(WORKER, 1)], total=3 * REWARD)  # stale sequence; total should be 4 x reward
    settle(s, 300, 3, [(WORKER, 2)], answers=2, total=5 * REWARD)  # says 2 answers, names 1
    settle(s, 400, 4, [], with_words=False, answers=0, total=5 * REWARD)
    assert codes(replay(s).findings) == [
        ("settlement_wrong_amount", None), ("settlement_stale_sequence", None), ("settlement_wrong_total", None),
        ("settlement_answer_count", None), ("settlement_without_answers", None)]


def test_claims_never_above_settled_answers_and_never_more_than_the_pool():
    s = Stream()
    batch(s)
    claim(s, 50, WORKER, 0, 0)  # before any settlement (for nothing: only that rule breaks)
    settle(s, 100, 1, [(WORKER, 0), (WORKER, 1)])
    claim(s, 200, WORKER, REWARD, REWARD)
    claim(s, 300, WORKER, 2 * REWARD, 2 * REWARD)  # credits 2 x reward, but only 1 was left to claim
    claim(s, 400, OTHER, 50, 50)  # not a whole reward, and nothing settled for OTHER
    found = replay(s)
    assert codes(found.findings) == [
        ("claim_without_settlement", None), ("claim_wrong_amount", None), ("pool_overdrawn", None),
        ("claim_uneven", None), ("claim_above_settled", None), ("pool_overdrawn", None)]
    assert [f.worker for f in found.findings[-3:]] == [OTHER] * 3
    ledger = found.batches[1]
    assert ledger.pool == 2 * REWARD - 3 * REWARD - 50
    assert ledger.totals.claimed == ledger.totals.paid == 3 * REWARD + 50


def test_balance_sheet_counts_the_pools_and_compares_settlement_state():
    s = Stream()
    batch(s, tasks=4)
    settle(s, 100, 1, [(WORKER, 0), (OTHER, 1)])
    claim(s, 200, WORKER, REWARD, REWARD)
    result = replay(s)
    deposit = 4 * (REWARD + FEE)
    funds = deposit - 2 * (REWARD + FEE)
    honest = ChainState(balances={ETH: deposit}, batches={1: (funds, 0)},
                        settlements={1: (1, b"\x01" * 32, 2 * REWARD)},
                        earnings={(1, WORKER): (REWARD, REWARD), (1, OTHER): (REWARD, 0)},
                        accounts={(ETH, WORKER): REWARD, (ETH, RELAY): 2 * FEE})
    tokens, found = checks.balance_sheet(result, honest)
    assert found == [] and tokens[ETH].owed_replayed == deposit
    assert result.batches[1].totals.locked_onchain == funds + REWARD  # OTHER's leaf is still in the pool
    lying = replace(honest, settlements={1: (1, b"\x02" * 32, 2 * REWARD)},
                    earnings={(1, WORKER): (REWARD, 0), (1, OTHER): (REWARD, 0)})
    _, found = checks.balance_sheet(replay(s), lying)
    assert sorted(f.code for f in found) == ["batch_unbalanced", "earnings_mismatch", "settlement_state_mismatch"]


def test_settlement_must_be_signed_by_the_batch_requester_in_its_calldata():
    s = Stream()
    batch(s)
    settle(s, 100, 1, [(WORKER, 0)])
    result = replay(s)
    (ref,) = result.settlement.settlements
    tx, domain = ref.event.transaction_hash, Domain(1, ESCROW)
    posted = Settlement(1, 1, ref.root, ref.cumulative_total, ref.manifest_raw, ref.words)
    requester_key, stranger_key = "0x" + "33" * 32, "0x" + "22" * 32
    result.batches[1].totals.requester = address_of(requester_key)

    def findings(calls):
        return [f.code for f in settle_call_findings([ref], {tx: calls}, result, 1, ESCROW)]

    def call(settlement, signature):  # a first settlement: nothing settled before, `before` all 0
        return SettleCall(settlement, (0,) * len(settlement.settled), signature)

    assert findings([call(posted, sign(domain.digest(posted.struct_hash()), requester_key))]) == []
    assert findings([call(posted, sign(domain.digest(posted.struct_hash()), stranger_key))]) == [
        "settlement_bad_requester_signature"]
    assert findings([call(posted, b"\x01" * 65)]) == ["settlement_bad_requester_signature"]  # recovers nobody
    other = replace(posted, settled=(SettledWord(WORKER, 0, 0b11),))  # not the answers logged
    assert findings([call(other, sign(domain.digest(other.struct_hash()), requester_key))]) == [
        "settlement_not_in_calldata"]
    assert findings(None) == ["settlement_calldata_unavailable"]
