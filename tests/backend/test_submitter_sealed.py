"""Sealed settled words at the submitter (real anvil, SQLite and PostgreSQL): at the fallback a
worker with settled words gets them opened (openSettled) before its other held answers go direct;
an answer skipped as SettlementSealed is held again and retried, never lost; a queued settlement is
sent with the `before` the chain's events give at send time, and still lands when the worker's
words were opened after it was signed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from eth_account import Account
from sqlalchemy import select
from submitter_support import answer_rows, create_batch, enqueue

from kempelen.chain.contracts import ETH
from kempelen.chain.settled import settled_history
from kempelen.db import make_engine, migrate
from kempelen.ipfs.unixfs import file_cid
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.sealed import open_words
from kempelen.protocol.settlement import ManifestAnswer, build_settlement
from kempelen.protocol.signing import Answer, SettledWord, Settlement, answer_digest, sign
from kempelen.relay import jobs
from kempelen.relay.models import RelayJob
from kempelen.relay.packing import PackingPolicy
from kempelen.relay.receipts import SKIP_REASONS, escrow_decoder
from kempelen.relay.relayer import Relayer
from kempelen.relay.settlement import (
    open_settled_calldata,
    open_settled_of,
    settle_calldata,
    settle_of,
)
from kempelen.relay.submitter import Submitter, SubmitterConfig

RELAYER, REQUESTER = 8, 1
REWARD = 10**12
ALICE, BOB = 4, 5


@pytest.fixture
def submitter(chain, keys, database_url, snapshot):
    migrate(database_url)
    engine = make_engine(database_url)
    config = SubmitterConfig(policy=PackingPolicy(flush_after=0.0), idle_sleep=0.01, hold_check_every=0.0)
    yield Submitter(engine, Relayer(chain, keys[RELAYER]), config)
    engine.dispose()


def row(chain, key: str, batch_id: int, task: int, *, hold_until: int | None = None) -> dict:
    """A relay_answers row as the intake stores it: held until `hold_until`, else queued."""
    worker = Account.from_key(key).address
    payload = f'{{"label": "{worker[-4:]} {task}"}}'.encode()
    digest = answer_digest(payload)
    message = chain.domain.digest(Answer(batch_id, task, digest, worker).struct_hash())
    return {"receipt_id": "0x" + message.hex(), "chain_id": chain.chain_id, "batch_id": batch_id,
            "task_index": task, "worker": worker, "answer_digest": digest, "signature": sign(message, key),
            "payload": payload, "payload_cid": str(raw_cid(digest)), "accepted_at": datetime.now(UTC),
            "status": "accepted" if hold_until is None else "held", "hold_until": hold_until}


def manifest_answer(r: dict) -> ManifestAnswer:
    return ManifestAnswer(r["worker"], r["task_index"], r["answer_digest"], r["signature"])


def signed_settlement(chain, keys, batch_id, answers, previous=None):
    """The requester's next settlement of `answers`, restating earlier words: (settlement, before,
    signature, manifest)."""
    book = settled_history(chain, batch_id).book
    _, manifest = build_settlement(previous, answers, domain=chain.domain, batch_id=batch_id, token=ETH,
                                   reward=REWARD, cid_of=file_cid)
    settlement = manifest.settlement(file_cid(manifest.to_json()), book)
    signature = sign(chain.domain.digest(settlement.struct_hash()), keys[REQUESTER])
    return settlement, book.before(settlement.settled), signature, manifest


def settle_onchain(chain, keys, batch_id, answers, previous=None):
    settlement, before, signature, manifest = signed_settlement(chain, keys, batch_id, answers, previous)
    chain.transact(keys[9], chain.escrow.functions.settle(settlement.as_tuple(), before, signature))
    return manifest


def statuses(submitter) -> dict[tuple[str, int], str]:
    return {(r.worker, r.task_index): r.status for r in answer_rows(submitter.engine)}


def run_until_settled(submitter, timeout: float = 30.0) -> dict[tuple[str, int], str]:
    """Step the submitter until no answer is held, queued or in flight and no job waits."""
    deadline = time.monotonic() + timeout
    while True:
        submitter.step()
        found = statuses(submitter)
        with submitter.engine.connect() as conn:
            waiting = jobs.pending_count(conn, submitter.chain_id)
        if not {"held", "accepted", "submitted"} & set(found.values()) and not waiting:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.02)


def open_jobs(submitter) -> list:
    with submitter.engine.connect() as conn:
        rows = conn.execute(select(RelayJob.__table__).where(RelayJob.__table__.c.kind == "open")).all()
    return [(r.batch_id, r.requested_by, r.status) for r in rows]


def skip_reasons(chain, batch_id) -> list[str]:
    decoder = escrow_decoder()
    logs = chain.w3.eth.get_logs({"address": chain.escrow.address, "fromBlock": 0, "toBlock": "latest",
                                  "topics": [decoder.topics("AnswerSkipped")[0],
                                             "0x" + batch_id.to_bytes(32, "big").hex()]})
    return [SKIP_REASONS[e.args["reason"]] for e in decoder.decode_all(logs)]


def test_the_escrow_skip_reasons_are_known():
    assert SKIP_REASONS.index("SettlementSealed") == 9 and len(SKIP_REASONS) == 10


def test_relayed_calls_encode_as_the_escrow_abi_does(chain):
    worker = Account.from_key("0x" + "11" * 32).address
    settlement = Settlement(7, 2, b"\x01" * 32, 3 * REWARD, bytes(file_cid(b"m").to_bytes()),
                            (SettledWord(worker, 0, 0b10), SettledWord(worker, 1, 0)))
    calldata = settle_calldata(settlement, [0b1, 1 << 5], b"\x02" * 65)
    assert "0x" + calldata.hex() == chain.escrow.encode_abi(
        "settle", args=[settlement.as_tuple(), [0b1, 1 << 5], b"\x02" * 65])
    assert settle_of(calldata) == (settlement, [0b1, 1 << 5], b"\x02" * 65)
    opened = open_settled_calldata(7, worker, [0b1, 1 << 5])
    assert "0x" + opened.hex() == chain.escrow.encode_abi("openSettled", args=[7, worker, [0b1, 1 << 5]])
    assert open_settled_of(opened) == (7, worker, [0b1, 1 << 5])
    with pytest.raises(ValueError, match="not a settle call"):
        settle_of(opened)


def test_fallback_opens_a_sealed_worker_then_sends_its_unsettled_answers_direct(chain, keys, submitter):
    batch_id = create_batch(chain, keys[REQUESTER], task_count=4, answers_per_task=2, reward=REWARD)
    fallback = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    alice, bob = Account.from_key(keys[ALICE]).address, Account.from_key(keys[BOB]).address
    rows = [row(chain, keys[ALICE], batch_id, t, hold_until=fallback) for t in range(3)]
    rows.append(row(chain, keys[BOB], batch_id, 0, hold_until=fallback))
    enqueue(submitter.engine, rows)
    settle_onchain(chain, keys, batch_id, [manifest_answer(rows[0])])  # alice's task 0: her words are sealed

    submitter.step()  # reconciles: marks the settled answer, sends nothing before the fallback
    assert statuses(submitter) == {(alice, 0): "settled", (alice, 1): "held", (alice, 2): "held", (bob, 0): "held"}
    chain.w3.provider.make_request("evm_increaseTime", [3600 + 60])
    chain.w3.provider.make_request("evm_mine", [])

    assert run_until_settled(submitter) == {(alice, 0): "settled", (alice, 1): "onchain", (alice, 2): "onchain",
                                            (bob, 0): "onchain"}
    assert open_jobs(submitter) == [(batch_id, alice.lower(), "mined")]  # bob had nothing settled: no opening
    book = settled_history(chain, batch_id).book
    assert book.opened == {alice} and book.of_worker(alice) == {0: 1}
    assert "SettlementSealed" not in skip_reasons(chain, batch_id)  # alice's answers waited for the opening
    status = lambda w, t: chain.escrow.functions.answerStatus(batch_id, w, t).call()[0]  # noqa: E731
    assert [status(alice, t) for t in range(3)] == [0, 1, 1]  # settled stays off the direct path; Pending
    assert chain.escrow.functions.earningsOf(batch_id, alice).call() == [REWARD, 0]


def test_a_settlement_sealed_skip_is_held_again_and_retried(chain, keys, submitter):
    """A settlement lands while the worker's answers wait in the queue: the escrow skips them as
    SettlementSealed; the relay holds them again, marks the settled one "settled", opens the
    worker's words and sends the other again."""
    batch_id = create_batch(chain, keys[REQUESTER], task_count=4, answers_per_task=2, reward=REWARD)
    alice = Account.from_key(keys[ALICE]).address
    rows = [row(chain, keys[ALICE], batch_id, t) for t in range(2)]
    enqueue(submitter.engine, rows)
    settle_onchain(chain, keys, batch_id, [manifest_answer(rows[0])])

    assert run_until_settled(submitter) == {(alice, 0): "settled", (alice, 1): "onchain"}
    assert skip_reasons(chain, batch_id) == ["SettlementSealed"] * 2  # both were sent once and skipped
    assert open_jobs(submitter) == [(batch_id, alice.lower(), "mined")]
    assert chain.escrow.functions.answerStatus(batch_id, alice, 1).call()[0] == 1
    assert {r.skip_reason for r in answer_rows(submitter.engine)} == {None}


def test_a_queued_settlement_is_sent_with_the_before_the_chain_gives(chain, keys, submitter):
    """A settle job whose `before` is stale (zeros) is brought up to date when it is sent."""
    batch_id = create_batch(chain, keys[REQUESTER], task_count=200, answers_per_task=1, reward=REWARD)
    alice = Account.from_key(keys[ALICE]).address
    rows = [row(chain, keys[ALICE], batch_id, t, hold_until=2**40) for t in (195, 0)]
    first = settle_onchain(chain, keys, batch_id, [manifest_answer(rows[0])])
    settlement, before, signature, _ = signed_settlement(chain, keys, batch_id, [manifest_answer(rows[1])], first)
    assert [(w.word_index, w.bits) for w in settlement.settled] == [(0, 1), (1, 0)] and before == [0, 1 << 3]
    with submitter.engine.begin() as conn:
        job_id = jobs.add(conn, submitter.chain_id, "settle", settle_calldata(settlement, [0, 0], signature),
                          batch_id=batch_id)

    run_until_settled(submitter)
    with submitter.engine.connect() as conn:
        job = jobs.get(conn, job_id)
    assert job.status == "mined", job.error
    assert settled_history(chain, batch_id).book.of_worker(alice) == {0: 1, 1: 1 << 3}
    assert chain.escrow.functions.earningsOf(batch_id, alice).call() == [2 * REWARD, 0]


def test_a_queued_settlement_lands_when_the_worker_is_opened_before_it_is_sent(chain, keys, submitter):
    """Signed while the worker was sealed (restating its word 1, `before` from the digest), queued,
    then a stranger's openSettled lands before the submitter sends it: the escrow settles it against
    the stored words and ignores `before`, so the opening changes its gas, not its outcome."""
    batch_id = create_batch(chain, keys[REQUESTER], task_count=200, answers_per_task=1, reward=REWARD)
    alice = Account.from_key(keys[ALICE]).address
    rows = [row(chain, keys[ALICE], batch_id, t, hold_until=2**40) for t in (195, 0)]
    first = settle_onchain(chain, keys, batch_id, [manifest_answer(rows[0])])
    settlement, before, signature, _ = signed_settlement(chain, keys, batch_id, [manifest_answer(rows[1])], first)
    assert [(w.word_index, w.bits) for w in settlement.settled] == [(0, 1), (1, 0)] and before == [0, 1 << 3]
    with submitter.engine.begin() as conn:
        job_id = jobs.add(conn, submitter.chain_id, "settle", settle_calldata(settlement, before, signature),
                          batch_id=batch_id)
    words = open_words(settled_history(chain, batch_id).book.of_worker(alice))
    chain.transact(keys[9], chain.escrow.functions.openSettled(batch_id, alice, words))
    assert settled_history(chain, batch_id).book.opened == {alice}

    run_until_settled(submitter)
    with submitter.engine.connect() as conn:
        job = jobs.get(conn, job_id)
    assert job.status == "mined", job.error
    book = settled_history(chain, batch_id).book
    assert book.opened == {alice} and book.of_worker(alice) == {0: 1, 1: 1 << 3}
    assert chain.escrow.functions.earningsOf(batch_id, alice).call() == [2 * REWARD, 0]
    assert open_jobs(submitter) == []  # the relay opened nothing itself
