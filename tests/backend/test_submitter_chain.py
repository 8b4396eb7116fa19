"""The submitter against a real anvil and both databases: packs land once, bad answers are isolated,
nonces re-sync, stuck and dropped transactions are recovered, crashes are reconciled."""

from __future__ import annotations

import pytest
from kempelen.chain.anvil import Anvil
from kempelen.chain.contracts import Chain, deploy_protocol
from kempelen.db import make_engine, migrate
from kempelen.protocol.signing import Domain
from kempelen.relay.packing import PackingPolicy
from kempelen.relay.relayer import PackReverts, Relayer
from kempelen.relay.submitter import Submitter, SubmitterConfig
from sqlalchemy import update
from submitter_support import (
    answer_rows,
    answers_table,
    create_batch,
    enqueue,
    landed_answers,
    rpc,
    signed_rows,
    submitted_events,
    transaction_rows,
    worker_keys,
)

RELAYER = 8  # dev key index of the relayer; keys[1] funds batches


@pytest.fixture(scope="module")
def own_chain(keys, tmp_path_factory):
    """A chain of this module's own: these tests stop mining and drop transactions."""
    node = Anvil(log_path=tmp_path_factory.mktemp("anvil-submitter") / "anvil.log").start()
    try:
        yield Chain(node.url, deploy_protocol(node.url, keys[0]))
    finally:
        node.stop()


@pytest.fixture
def engine(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def batch_id(own_chain, keys) -> int:
    return create_batch(own_chain, keys[1])


@pytest.fixture
def relayer(own_chain, keys) -> Relayer:
    return Relayer(own_chain, keys[RELAYER])


def submitter(engine, relayer, **config) -> Submitter:
    policy = PackingPolicy(max_answers=config.pop("max_answers", 100), flush_after=0.0)
    return Submitter(engine, relayer, SubmitterConfig(policy=policy, idle_sleep=0.01, **config))


def assert_each_on_chain_once(chain: Chain, engine, batch_id: int, expected: int) -> None:
    rows = answer_rows(engine)
    landed = [r for r in rows if r.status == "onchain"]
    assert len(landed) == expected
    assert all(r.block_number for r in landed)
    keys = [(worker, task) for worker, task, _ in landed_answers(chain, batch_id)]
    assert len(keys) == len(set(keys)) == expected  # exactly once each
    assert set(keys) == {(r.worker, r.task_index) for r in landed}
    for row in landed[:: max(1, expected // 10)]:
        status, _ = chain.escrow.functions.answerStatus(batch_id, row.worker, row.task_index).call()
        assert status == 1  # Pending


def automine(chain: Chain, on: bool) -> None:
    rpc(chain, "evm_setAutomine", on)


def test_answers_land_once_in_size_bounded_packs(own_chain, engine, batch_id, relayer):
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(5), 250))
    submitter(engine, relayer).drain(timeout=60)
    assert_each_on_chain_once(own_chain, engine, batch_id, 250)
    txs = transaction_rows(engine)
    assert [t.status for t in txs] == ["mined"] * 3
    assert sorted(len(t.answer_ids) for t in txs) == [50, 100, 100]
    # Packs go out sorted by worker and task: one AnswersSubmitted per worker and transaction
    # (every task is below 96), naming all of that worker's answers in it.
    events = submitted_events(own_chain, batch_id)
    assert len(events) == 3 * 5
    assert len({(e.transaction_hash, e.args["worker"]) for e in events}) == len(events)
    assert {r.tx_hash for r in answer_rows(engine)} == {t.tx_hash for t in txs}


def test_an_answer_signed_for_another_chain_is_skipped_and_the_rest_land(own_chain, engine, batch_id, relayer):
    rows = signed_rows(own_chain.domain, batch_id, worker_keys(3), 20)
    foreign = Domain(own_chain.chain_id + 1, own_chain.deployment.escrow)
    rows += [{**row, "chain_id": own_chain.chain_id}  # queued here, but signed for elsewhere
             for row in signed_rows(foreign, batch_id, worker_keys(1), 1, first_task=500)]
    enqueue(engine, rows)
    submitter(engine, relayer).drain(timeout=60)
    bad = [r for r in answer_rows(engine) if r.status != "onchain"]
    assert [(r.task_index, r.skip_reason) for r in bad] == [(500, "BadSignature")]
    assert_each_on_chain_once(own_chain, engine, batch_id, 20)
    assert len(transaction_rows(engine)) == 1  # skipped inside the pack, not by a second transaction


def test_the_nonce_resyncs_after_an_external_transaction_from_the_same_key(own_chain, engine, batch_id,
                                                                           relayer, keys):
    workers = worker_keys(2)
    enqueue(engine, signed_rows(own_chain.domain, batch_id, workers, 10))
    worker = submitter(engine, relayer)
    worker.drain(timeout=60)
    # The operator sends a transaction by hand with the relayer's key: our local nonce is stale.
    own_chain.w3.eth.send_transaction({"from": relayer.address, "to": relayer.address, "value": 1})
    enqueue(engine, signed_rows(own_chain.domain, batch_id, workers, 10, first_task=100))
    worker.drain(timeout=60)
    assert_each_on_chain_once(own_chain, engine, batch_id, 20)
    txs = transaction_rows(engine)
    assert [t.status for t in txs] == ["mined", "dropped", "mined"]
    assert txs[1].nonce == txs[0].nonce + 1 and txs[2].nonce == txs[0].nonce + 2


def test_a_stuck_transaction_is_replaced_at_the_same_nonce_with_higher_fees(own_chain, engine, batch_id,
                                                                           relayer):
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(2), 6))
    worker = submitter(engine, relayer, replace_after=0.2)
    automine(own_chain, False)
    try:
        worker.step()  # sent, not mined
        assert [t.status for t in transaction_rows(engine)] == ["pending"]
        import time
        time.sleep(0.3)
        worker.step()  # stuck: replaced
        first, second = transaction_rows(engine)
        assert first.nonce == second.nonce
        assert second.max_fee_per_gas * 8 >= first.max_fee_per_gas * 9
        rpc(own_chain, "evm_mine")
    finally:
        automine(own_chain, True)
    worker.drain(timeout=30)
    statuses = {t.tx_hash: t.status for t in transaction_rows(engine)}
    assert sorted(statuses.values()) == ["mined", "replaced"]
    assert_each_on_chain_once(own_chain, engine, batch_id, 6)
    mined = next(h for h, s in statuses.items() if s == "mined")
    assert {r.tx_hash for r in answer_rows(engine)} == {mined}


def test_a_transaction_dropped_from_the_mempool_is_broadcast_again(own_chain, engine, batch_id, relayer):
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(2), 6))
    worker = submitter(engine, relayer)
    automine(own_chain, False)
    try:
        worker.step()
        (tx,) = transaction_rows(engine)
        rpc(own_chain, "anvil_dropTransaction", tx.tx_hash)
        assert not relayer.is_known(tx.tx_hash)
        worker.step()  # unknown to the node and not stuck yet: the same bytes again
        assert relayer.is_known(tx.tx_hash)
        rpc(own_chain, "evm_mine")
    finally:
        automine(own_chain, True)
    worker.drain(timeout=30)
    assert [(t.tx_hash, t.status) for t in transaction_rows(engine)] == [(tx.tx_hash, "mined")]
    assert_each_on_chain_once(own_chain, engine, batch_id, 6)


class _Crash(BaseException):
    """The process dies here (BaseException: nothing in the submitter may swallow it)."""


class CrashBeforeBroadcast(Relayer):
    def broadcast(self, raw):
        raise _Crash


class RevertsWith(Relayer):
    """The real chain, except that a pack holding `poisoned` reverts (the escrow never does)."""

    poisoned: int = -1
    packs: list

    def estimate_gas(self, calldata):
        self.packs.append(calldata)
        if self.poisoned_calldata in calldata:
            raise PackReverts("EscrowSomethingUnexpected()")
        return super().estimate_gas(calldata)


def test_a_crash_between_commit_and_broadcast_sends_the_recorded_transaction(own_chain, engine, batch_id,
                                                                             keys):
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(3), 30))
    crashed = submitter(engine, CrashBeforeBroadcast(own_chain, keys[RELAYER]))
    with pytest.raises(_Crash):
        crashed.step()
    crashed.lock.release()  # the kernel or PostgreSQL does this when a process dies
    (recorded,) = transaction_rows(engine)
    assert {r.status for r in answer_rows(engine)} == {"submitted"}
    submitter(engine, Relayer(own_chain, keys[RELAYER])).drain(timeout=60)
    assert [(t.tx_hash, t.status) for t in transaction_rows(engine)] == [(recorded.tx_hash, "mined")]
    assert_each_on_chain_once(own_chain, engine, batch_id, 30)


def test_a_crash_after_broadcast_settles_from_the_receipt_without_resending(own_chain, engine, batch_id,
                                                                           relayer):
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(3), 30))
    crashed = submitter(engine, relayer)
    crashed.step()  # recorded, broadcast and mined; the receipt is never read
    crashed.lock.release()
    assert {r.status for r in answer_rows(engine)} == {"submitted"}
    submitter(engine, relayer).drain(timeout=60)
    assert [t.status for t in transaction_rows(engine)] == ["mined"]
    assert_each_on_chain_once(own_chain, engine, batch_id, 30)


def test_a_lost_nonce_is_reconciled_from_answer_status(own_chain, engine, batch_id, keys):
    """Recorded, crash before broadcast, then the key's owner uses that nonce by hand; meanwhile a
    third party landed some of the same signed answers. Nothing is lost, nothing lands twice."""
    rows = signed_rows(own_chain.domain, batch_id, worker_keys(3), 12)
    enqueue(engine, rows)
    crashed = submitter(engine, CrashBeforeBroadcast(own_chain, keys[RELAYER]))
    with pytest.raises(_Crash):
        crashed.step()
    crashed.lock.release()
    relayer = Relayer(own_chain, keys[RELAYER])
    own_chain.w3.eth.send_transaction({"from": relayer.address, "to": relayer.address, "value": 1})
    third = [((r["batch_id"], r["task_index"], r["answer_digest"], r["worker"]), r["signature"]) for r in rows[:4]]
    own_chain.transact(keys[2], own_chain.escrow.functions.submitAnswers([a for a, _ in third],
                                                                           [s for _, s in third]))
    submitter(engine, relayer).drain(timeout=60)
    txs = transaction_rows(engine)
    assert [t.status for t in txs] == ["dropped", "mined"]
    assert len(txs[1].answer_ids) == 8  # only those nobody had landed
    assert_each_on_chain_once(own_chain, engine, batch_id, 12)


def test_already_answered_by_the_same_signed_answer_counts_as_on_chain(own_chain, engine, batch_id, relayer,
                                                                       keys):
    workers = worker_keys(2)
    rows = signed_rows(own_chain.domain, batch_id, workers, 4)
    other = signed_rows(own_chain.domain, batch_id, workers, 1, tag="other")[0]  # task 0, another payload
    enqueue(engine, rows)
    landed = [rows[1], other]  # a third party lands row 1 itself, and worker 0's other answer to task 0
    own_chain.transact(keys[2], own_chain.escrow.functions.submitAnswers(
        [(r["batch_id"], r["task_index"], r["answer_digest"], r["worker"]) for r in landed],
        [r["signature"] for r in landed]))
    submitter(engine, relayer).drain(timeout=60)
    by_task = {(r.worker, r.task_index): r for r in answer_rows(engine)}
    assert by_task[(rows[0]["worker"], 0)].status == "skipped"
    assert by_task[(rows[0]["worker"], 0)].skip_reason == "AlreadyAnswered"
    assert by_task[(rows[1]["worker"], 0)].status == "onchain"
    assert {by_task[(r["worker"], r["task_index"])].status for r in rows[2:]} == {"onchain"}


def test_a_pack_that_reverts_is_bisected_and_only_the_culprit_is_skipped(own_chain, engine, batch_id, keys):
    rows = signed_rows(own_chain.domain, batch_id, worker_keys(4), 16)
    enqueue(engine, rows)
    relayer = RevertsWith(own_chain, keys[RELAYER])
    relayer.packs = []
    relayer.poisoned_calldata = rows[5]["answer_digest"]
    submitter(engine, relayer).drain(timeout=60)
    skipped = [r for r in answer_rows(engine) if r.status == "skipped"]
    assert [(r.task_index, r.worker) for r in skipped] == [(rows[5]["task_index"], rows[5]["worker"])]
    assert skipped[0].skip_reason.startswith("reverted: Escrow")
    assert len([r for r in answer_rows(engine) if r.status == "onchain"]) == 15
    assert len(relayer.packs) <= 2 * 5 + 1  # a bisection, not one estimate per answer


def test_only_one_submitter_is_active_per_database(own_chain, engine, relayer):
    first, second = submitter(engine, relayer), submitter(engine, relayer)
    first.step()
    assert first.lock.held
    assert second.step() is False and not second.lock.held
    first.lock.release()
    second.step()
    assert second.lock.held
    second.lock.release()


def test_a_stray_answer_row_cannot_be_claimed_twice(own_chain, engine, batch_id, relayer):
    """If the queue changes under a submitter (a second one running by mistake), it writes nothing."""
    enqueue(engine, signed_rows(own_chain.domain, batch_id, worker_keys(1), 3))
    worker = submitter(engine, relayer)
    with engine.connect() as conn:
        from kempelen.relay import outbox
        head = outbox.queued(conn, own_chain.chain_id, 10)
    with engine.begin() as conn:
        conn.execute(update(answers_table).where(answers_table.c.id == head[0].id).values(status="skipped"))
    from kempelen.relay.outbox import QueueChanged
    with pytest.raises(QueueChanged):
        worker.send(head)
    assert transaction_rows(engine) == []
    assert {r.status for r in answer_rows(engine)} == {"accepted", "skipped"}
