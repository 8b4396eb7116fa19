"""The indexer against a real anvil: contract state, reorganisations, confirmations, restarts."""

from __future__ import annotations

import pytest
from indexer_history import actors, dump, indexer, opening, own_chain, review_phase, rpc  # noqa: F401  (fixtures)

from kempelen.chain.contracts import ETH, Chain
from kempelen.indexer.errors import ReorgTooDeep
from kempelen.indexer.runner import IndexerThread
from kempelen.indexer.source import RangeSizer
from kempelen.protocol.events import reviewed_tasks


def fresh_index(chain: Chain, tmp_path, name: str = "fresh") -> dict:
    """The canonical chain indexed from scratch into an empty SQLite database."""
    url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
    indexer(chain, url).catch_up()
    return dump(url, chain.chain_id)


def test_projections_match_contract_state(actors, database_url):
    eth_batch, usdc_batch = opening(actors)
    review_phase(actors, eth_batch, usdc_batch)
    chain = actors.chain
    last = indexer(chain, database_url).catch_up()
    assert last.caught_up and last.last_block == chain.w3.eth.block_number

    index = dump(database_url, chain.chain_id)
    logs = rpc(chain.rpc_url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest",
                                              "address": [chain.deployment.escrow,
                                                          chain.deployment.reputation]})
    assert len(index["chain_events"]) == len(logs)
    for batch in index["indexed_batches"]:
        on_chain = chain.escrow.functions.batch(batch["batch_id"]).call()
        assert (batch["funds"], batch["pending"], batch["deadline"], batch["answers_per_task"]) == (
            on_chain[9], on_chain[10], on_chain[1], on_chain[3])
    statuses = {1: "pending", 2: None, 3: "rejected"}  # Paid is approved or released
    for answer in index["indexed_answers"]:
        status, _ = chain.escrow.functions.answerStatus(
            answer["batch_id"], answer["worker"], answer["task_index"]).call()
        expected = statuses[status]
        assert answer["status"] == expected or (expected is None and answer["status"] in
                                                ("approved", "released"))
    assert len(index["indexed_answers"]) == 8
    # One AnswersSubmitted per run of a worker's answers in a 96-task group: w3's two USDC answers
    # share one; w1's two ETH answers, split by w2's, take two logs of one transaction.
    submitted = [e["args"] for e in index["chain_events"] if e["name"] == "AnswersSubmitted"]
    assert sorted(len(args["answerDigests"]) for args in submitted) == [1, 1, 1, 1, 1, 1, 2]
    digests = {(a["batch_id"], a["worker"], a["task_index"]): a["answer_digest"] for a in index["indexed_answers"]}
    assert digests == {(args["batchId"], args["worker"], task): digest for args in submitted
                       for task, digest in zip(reviewed_tasks(args), args["answerDigests"])}
    for balance in index["indexed_balances"]:
        owed = chain.escrow.functions.balanceOf(balance["token"], balance["account"]).call()
        assert balance["credited"] - balance["withdrawn"] == owed
    w1 = actors.address(actors.workers[0])
    assert any(b["account"] == w1 and b["token"] == ETH and b["withdrawn"] == 10 * 10**18
               for b in index["indexed_balances"])  # above 2**63: stored exactly
    for rep in index["indexed_reputation"]:
        worker = chain.reputation.functions.workerRecord(rep["address"]).call()
        requester = chain.reputation.functions.requesterRecord(rep["address"]).call()
        assert [rep["worker_approved"], rep["worker_rejected"], rep["worker_released"]] == list(worker)
        assert [rep["requester_approved"], rep["requester_rejected"],
                rep["requester_released"]] == list(requester)


@pytest.mark.parametrize("fork_at", ["after_answers", "after_deploy", "shorter_chain"])
def test_reorg_leaves_tables_equal_to_canonical_chain(actors, database_url, tmp_path, fork_at):
    chain = actors.chain
    snapshot = rpc(chain.rpc_url, "evm_snapshot") if fork_at == "after_deploy" else None
    batches = opening(actors)
    if snapshot is None:
        snapshot = rpc(chain.rpc_url, "evm_snapshot")
    review_phase(actors, *batches, variant=0)
    live = indexer(chain, database_url)
    live.catch_up()
    indexed_before = dump(database_url, chain.chain_id)

    assert rpc(chain.rpc_url, "evm_revert", snapshot)
    if fork_at == "after_deploy":
        batches = opening(actors)  # same calls, new blocks: different hashes and timestamps
    if fork_at != "shorter_chain":
        review_phase(actors, *batches, variant=1)
    else:
        actors.approve(actors.requester, batches[0], [(actors.workers[0], 0)])

    steps = []
    live.catch_up(on_step=steps.append)
    assert any(step.fork_block is not None for step in steps)
    after = dump(database_url, chain.chain_id)
    assert after != indexed_before
    assert after == fresh_index(chain, tmp_path)


def test_reorg_at_same_height_is_followed(actors, sqlite_url, tmp_path):
    chain = actors.chain
    opening(actors)
    snapshot = rpc(chain.rpc_url, "evm_snapshot")
    actors.approve(actors.requester, 1, [(actors.workers[0], 0)])
    live = indexer(chain, sqlite_url)
    live.catch_up()
    height = chain.w3.eth.block_number
    rpc(chain.rpc_url, "evm_revert", snapshot)
    actors.reject(actors.requester, 1, [(actors.workers[0], 0)])
    assert chain.w3.eth.block_number == height

    live.catch_up()
    index = dump(sqlite_url, chain.chain_id)
    assert index == fresh_index(chain, tmp_path)
    assert {a["status"] for a in index["indexed_answers"] if a["batch_id"] == 1
            and a["task_index"] == 0 and a["worker"] == actors.address(actors.workers[0])} == {
        "rejected"}


def test_reorg_below_the_kept_window_is_refused(actors, sqlite_url):
    chain = actors.chain
    snapshot = rpc(chain.rpc_url, "evm_snapshot")
    opening(actors)
    rpc(chain.rpc_url, "anvil_mine", hex(20))
    live = indexer(chain, sqlite_url, window=4)
    live.sizer = RangeSizer(initial=2, maximum=2)
    live.catch_up()
    rpc(chain.rpc_url, "evm_revert", snapshot)
    rpc(chain.rpc_url, "anvil_mine", hex(30))
    with pytest.raises(ReorgTooDeep, match="fresh database"):
        live.catch_up()


def test_confirmation_depth_is_respected(actors, database_url):
    chain = actors.chain
    opening(actors)  # its last two blocks: the ETH batch's answers, then the USDC batch's
    live = indexer(chain, database_url, confirmations=2)
    head = chain.w3.eth.block_number
    assert live.catch_up().last_block == head - 2
    index = dump(database_url, chain.chain_id)
    assert max(e["block_number"] for e in index["chain_events"]) <= head - 2
    assert index["indexed_answers"] == []

    rpc(chain.rpc_url, "evm_mine")
    assert live.catch_up().last_block == head - 1
    assert len(dump(database_url, chain.chain_id)["indexed_answers"]) == 4
    rpc(chain.rpc_url, "anvil_mine", hex(5))
    assert live.catch_up().last_block == head + 4
    assert len(dump(database_url, chain.chain_id)["indexed_answers"]) == 8


def test_resume_after_restart_equals_uninterrupted_run(actors, database_url, tmp_path):
    chain = actors.chain
    review_phase(actors, *opening(actors))
    first = indexer(chain, database_url)
    first.sizer = RangeSizer(initial=1, maximum=1)
    for _ in range(9):
        first.step()
    assert 0 < first.store.checkpoint().last_block < chain.w3.eth.block_number
    first.store.engine.dispose()

    resumed = indexer(chain, database_url, confirmations=0)
    assert resumed.checkpoint.last_block == first.store.checkpoint().last_block
    resumed.catch_up()
    assert dump(database_url, chain.chain_id) == fresh_index(chain, tmp_path)


def test_follow_thread_picks_up_new_blocks_and_stops(actors, sqlite_url):
    chain = actors.chain
    thread = IndexerThread(indexer(chain, sqlite_url), poll_interval=0.1).start()
    try:
        opening(actors)
        head = chain.w3.eth.block_number
        for _ in range(100):
            if thread.indexer.store.checkpoint().last_block >= head:
                break
            thread.stop_event.wait(0.1)
        assert thread.indexer.store.checkpoint().last_block >= head
        assert len(dump(sqlite_url, chain.chain_id)["indexed_answers"]) == 8
    finally:
        thread.stop()
    assert not thread.thread.is_alive() and thread.error is None
