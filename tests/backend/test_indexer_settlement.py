"""The indexer mirrors settlements (ISettlement) against a real anvil: settlements, settled answers,
claims and the money they move, equal to the escrow's own state, through reorganisations."""

from __future__ import annotations

import copy

import pytest
from indexer_history import (  # noqa: F401  (fixtures)
    actors,
    dump,
    indexer,
    opening,
    own_chain,
    review_phase,
    rpc,
    settlement_phase,
)
from sqlalchemy import insert, select, text

from kempelen.chain.contracts import Chain
from kempelen.db import make_engine, migrate
from kempelen.indexer.models import IndexedBatch


def fresh_index(chain: Chain, tmp_path) -> dict:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    indexer(chain, url).catch_up()
    return dump(url, chain.chain_id)


def test_settlements_claims_and_money_match_the_escrow(actors, database_url):
    batches = opening(actors)
    settlement_phase(actors, *batches)
    review_phase(actors, *batches)
    chain, escrow = actors.chain, actors.chain.escrow.functions
    indexer(chain, database_url).catch_up()
    index = dump(database_url, chain.chain_id)
    eth_batch, usdc_batch = batches
    w1, w2, w3 = (actors.address(k) for k in actors.workers)

    settlements = {(s["batch_id"], s["sequence"]): s for s in index["indexed_settlements"]}
    assert sorted(settlements) == [(eth_batch, 1), (eth_batch, 2), (usdc_batch, 1), (usdc_batch, 2),
                                   (usdc_batch, 3)]
    for (batch_id, _), s in settlements.items():
        reward, fee = escrow.batch(batch_id).call()[7:9]
        assert (s["amount"], s["relay_fees"]) == (s["answers"] * reward, s["answers"] * fee)
    latest = settlements[(eth_batch, 2)]
    assert escrow.settlementOf(eth_batch).call() == [2, bytes.fromhex(latest["root"][2:]),
                                                     latest["cumulative_total"]]
    assert latest["manifest_cid"].startswith("bafk") and latest["answers"] == 1
    assert settlements[(usdc_batch, 1)]["poster"] == w2
    assert [settlements[(usdc_batch, n)]["answers"] for n in (1, 2, 3)] == [4, 1, 1]

    settled = {(a["batch_id"], a["worker"], a["task_index"]): a["sequence"]
               for a in index["indexed_settled_answers"]}
    assert settled == {(eth_batch, w2, 1): 1, (eth_batch, w3, 3): 1, (eth_batch, w1, 3): 1,
                       (eth_batch, w2, 2): 2, (usdc_batch, w1, 5): 1, (usdc_batch, w1, 6): 1,
                       (usdc_batch, w1, 195): 1, (usdc_batch, w2, 7): 1, (usdc_batch, w1, 8): 2,
                       (usdc_batch, w2, 196): 3}
    # The second USDC settlement restates w1's word 1 (task 195) with no bits: logged, no row.
    restating = [e["args"]["settled"] for e in index["chain_events"] if e["name"] == "AnswersSettled"
                 and e["args"]["batchId"] == usdc_batch and e["args"]["sequence"] == 2]
    assert restating == [[{"worker": w1, "wordIndex": 0, "bits": 1 << 8}, {"worker": w1, "wordIndex": 1, "bits": 0}]]
    # The third settles w2 after its words were opened: its new word only, word 0 not restated.
    reopened = [e for e in index["chain_events"] if e["name"] == "AnswersSettled"
                and e["args"]["batchId"] == usdc_batch and e["args"]["sequence"] == 3]
    assert [e["args"]["settled"] for e in reopened] == [[{"worker": w2, "wordIndex": 1, "bits": 1 << 4}]]
    for batch_id in batches:  # the escrow's settled counts are the rows' (its words are sealed digests)
        reward = escrow.batch(batch_id).call()[7]
        for worker in (w1, w2, w3):
            rows = sum(1 for b, w, _ in settled if (b, w) == (batch_id, worker))
            assert escrow.earningsOf(batch_id, worker).call()[0] == rows * reward

    # w2's words in the USDC batch: sealed (its answer to task 9 skipped), opened, then task 9 is
    # accepted on the direct path and its settled task 7 skipped as already answered.
    (opened,) = index["indexed_settled_words_opened"]
    (log,) = [e for e in index["chain_events"] if e["name"] == "SettledWordsOpened"]
    assert opened == {"chain_id": chain.chain_id, "batch_id": usdc_batch, "worker": w2,
                      "opened_block": log["block_number"], "opened_tx": log["transaction_hash"],
                      "opened_log_index": log["log_index"]}
    skipped = [(e["args"]["taskIndex"], e["args"]["reason"], e["block_number"]) for e in index["chain_events"]
               if e["name"] == "AnswerSkipped" and e["args"]["worker"] == w2]
    sealed, already = 9, 6  # ITaskEscrow.SkipReason.SettlementSealed, AlreadyAnswered
    assert [(task, reason) for task, reason, _ in skipped] == [(9, sealed), (7, already)]
    assert skipped[0][2] < opened["opened_block"] < skipped[1][2]
    direct = {(a["batch_id"], a["worker"], a["task_index"]) for a in index["indexed_answers"]}
    assert (usdc_batch, w2, 9) in direct and (usdc_batch, w2, 7) not in direct
    assert (usdc_batch, w3, 5) in direct  # w1's answer to task 5 was settled, w3's went the direct way
    assert escrow.answerStatus(usdc_batch, w2, 9).call()[0] == 1  # pending
    assert reopened[0]["block_number"] > skipped[1][2]  # w2 settled again after the opening

    claims = sorted((c["batch_id"], c["worker"], c["amount"], c["cumulative"]) for c in index["indexed_claims"])
    five_eth = 5 * 10**18
    assert claims == [(eth_batch, w2, five_eth, five_eth), (eth_batch, w2, five_eth, 2 * five_eth),
                      (usdc_batch, w1, 3_000_000, 3_000_000)]

    for batch in index["indexed_batches"]:
        b = batch["batch_id"]
        on_chain = escrow.batch(b).call()
        assert (batch["funds"], batch["pending"]) == (on_chain[9], on_chain[10])
        settled_total = escrow.settlementOf(b).call()[2]
        claimed = sum(escrow.earningsOf(b, w).call()[1] for w in (w1, w2, w3))
        assert (batch["settled_rewards"], batch["claimed"]) == (settled_total, claimed)
        assert batch["answers_settled"] == sum(1 for key in settled if key[0] == b)
        # Every wei the batch took in is somewhere: unallocated, held for pending answers, in the
        # claimable pool, credited to workers (reviews and claims) or relays, or refunded.
        assert batch["deposit"] + batch["topped_up"] == (
            batch["funds"] + batch["pending"] * batch["reward"] + batch["settled_rewards"] - batch["claimed"]
            + batch["rewards_paid"] + batch["relay_fees_paid"] + batch["reclaimed"])
    for balance in index["indexed_balances"]:
        owed = escrow.balanceOf(balance["token"], balance["account"]).call()
        assert balance["credited"] - balance["withdrawn"] == owed, balance


@pytest.mark.parametrize("fork_at", ["before_settlements", "between_settlements"])
def test_reorg_of_settlements_leaves_tables_equal_to_canonical_chain(actors, database_url, tmp_path, fork_at):
    chain = actors.chain
    batches = opening(actors)
    w1, w2, w3 = actors.workers
    if fork_at == "before_settlements":
        snapshot = rpc(chain.rpc_url, "evm_snapshot")
        settlement_phase(actors, *batches)
    else:
        actors.settle(actors.requester, batches[0], [(w2, 1), (w3, 3)])
        actors.claim(batches[0], w3)
        snapshot = rpc(chain.rpc_url, "evm_snapshot")
        books = copy.deepcopy(actors.books)
        actors.settle(actors.requester, batches[0], [(w1, 3)])
        actors.claim(batches[0], w1)
        actors.open_settled(batches[0], w3)
    live = indexer(chain, database_url)
    live.catch_up()
    before = dump(database_url, chain.chain_id)
    assert before["indexed_settlements"] and before["indexed_claims"] and before["indexed_settled_words_opened"]

    assert rpc(chain.rpc_url, "evm_revert", snapshot)
    if fork_at == "before_settlements":
        actors.books.clear()
        actors.settle(actors.requester2, batches[1], [(w3, 9)])  # a different settlement, same sequence
    else:
        actors.books = books
        actors.settle(actors.requester, batches[0], [(w2, 2), (w1, 2)])  # w2 again: restated
        actors.claim(batches[0], w2, sender=actors.relayer)
        actors.open_settled(batches[0], w2)
    steps = []
    live.catch_up(on_step=steps.append)
    assert any(step.fork_block is not None for step in steps)
    after = dump(database_url, chain.chain_id)
    assert after != before
    assert after == fresh_index(chain, tmp_path)


def test_migration_adds_settlement_columns_to_an_existing_index(database_url):
    """An index from before settlements gets zero pool columns for its batches; one that already
    stored settlement events (an old indexer ignored their money) is refused, not left wrong."""
    from alembic import command
    from alembic.config import Config

    from kempelen.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "7c3e9a1f4b20")
    engine = make_engine(database_url)
    row = {"chain_id": 1, "batch_id": 7, "requester": "0xR", "token": "0xT", "task_count": 1,
           "answers_per_task": 1, "reward": 3, "relay_fee": 1, "deadline": 9, "review_window": 9,
           "min_reputation": 0, "gold_commitment": "0x", "manifest_cid": "m", "deposit": 4, "funds": 4,
           "pending": 0, "answers_submitted": 0, "answers_approved": 0, "answers_rejected": 0,
           "answers_released": 0, "rewards_paid": 0, "relay_fees_paid": 0, "bonuses_paid": 0,
           "topped_up": 0, "reclaimed": 0, "created_block": 1, "created_tx": "0x", "updated_block": 1}
    with engine.begin() as conn:  # only the old columns: the model's insert names just these
        conn.execute(insert(IndexedBatch.__table__), [row])
    migrate(database_url)
    with engine.connect() as conn:
        migrated = conn.execute(select(IndexedBatch.__table__).where(
            IndexedBatch.__table__.c.batch_id == 7)).mappings().one()
    assert (migrated["answers_settled"], migrated["settled_rewards"], migrated["claimed"]) == (0, 0, 0)
    assert migrated["deposit"] == 4

    command.downgrade(config, "7c3e9a1f4b20")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO chain_events (chain_id, block_number, log_index, block_hash, "
                          "transaction_hash, transaction_index, address, name, args, batch_id) VALUES "
                          "(1, 5, 0, '0x', '0x', 0, '0x', 'EarningsClaimed', '{}', 7)"))
    with pytest.raises(RuntimeError, match="re-index into a fresh database"):
        migrate(database_url)
    engine.dispose()
