"""The indexer and ISettlement's sealed settled words, no chain: AnswersSettled entries with no
bits (a later settlement restating a worker's earlier words) give no rows, SettledWordsOpened
gives one row and moves no money, through a reorganisation, and the migration that adds its
table fills it from the events an index already holds."""

from __future__ import annotations

import pytest
from eth_abi import encode
from sqlalchemy import insert, select
from web3 import Web3

from kempelen.chain import artifacts
from kempelen.db import MIGRATIONS_DIR, make_engine, migrate
from kempelen.indexer.decoding import LogDecoder
from kempelen.indexer.models import (
    ChainEvent,
    IndexedBatch,
    IndexedSettledAnswer,
    IndexedSettledWordsOpened,
)
from kempelen.indexer.projection import project
from kempelen.indexer.store import IndexStore
from kempelen.protocol.events import EventDecoder

ESCROW = Web3.to_checksum_address("0x" + "e5" * 20)
WORKER = Web3.to_checksum_address("0x" + "77" * 20)
OTHER = Web3.to_checksum_address("0x" + "88" * 20)
POSTER = Web3.to_checksum_address("0x" + "44" * 20)
REWARD, FEE = 10**20, 5


def event(name: str, block: int, log_index: int = 0, **args) -> dict:
    """A `chain_events` row as the indexer stores it."""
    return {"chain_id": 1, "block_number": block, "log_index": log_index, "block_hash": f"0x{block:064x}",
            "transaction_hash": f"0x{block:062x}{log_index:02x}", "transaction_index": 0, "address": ESCROW,
            "name": name, "args": args, "batch_id": args.get("batchId")}


def created(block: int = 1) -> dict:
    return event("BatchCreated", block, batchId=1, requester=POSTER, token="0xT", taskCount=400, answersPerTask=1,
                 reward=str(REWARD), relayFee=FEE, deadline=100, reviewWindow=10, minReputation=0,
                 goldCommitment="0x" + "00" * 32, deposit=str(400 * (REWARD + FEE)), manifestCid="0x01")


def settlement(block: int, sequence: int, entries: list[tuple[str, int, int]], answers: int, total: int) -> list[dict]:
    """AnswersSettled (entries as (worker, word, bits)) and SettlementPosted, as the escrow logs them."""
    words = [{"worker": w, "wordIndex": i, "bits": str(b) if b > 2**53 else b} for w, i, b in entries]
    return [event("AnswersSettled", block, 0, batchId=1, sequence=sequence, settled=words),
            event("SettlementPosted", block, 1, batchId=1, sequence=sequence, poster=POSTER,
                  root="0x" + f"{sequence:02x}" * 32, cumulativeTotal=str(total * REWARD),
                  amount=str(answers * REWARD), relayFees=answers * FEE, answers=answers, manifestCid="0x01")]


def history() -> list[dict]:
    """WORKER settled in words 0 and 1, then again in word 0 (restating word 1 with no bits);
    OTHER settled once, then its words opened."""
    return [created(),
            *settlement(2, 1, [(WORKER, 0, 0b11), (WORKER, 1, 1 << 191), (OTHER, 0, 1 << 5)], 4, 4),
            *settlement(3, 2, [(WORKER, 0, 0b100), (WORKER, 1, 0)], 1, 5),
            event("SettledWordsOpened", 4, 3, batchId=1, worker=OTHER)]


def test_restating_entries_give_no_rows_and_opening_moves_no_money():
    rows = history()
    changes = project(1, rows, {})
    assert sorted((k[1], k[2], a["sequence"]) for k, a in changes.settled_answers.items()) == [
        (WORKER, 0, 1), (WORKER, 1, 1), (WORKER, 2, 2), (WORKER, 383, 1), (OTHER, 5, 1)]
    assert changes.opened == {(1, OTHER): {"chain_id": 1, "batch_id": 1, "worker": OTHER, "opened_block": 4,
                                           "opened_tx": rows[-1]["transaction_hash"], "opened_log_index": 3}}
    delta = changes.batch_deltas[1]
    assert (delta["answers_settled"], delta["settled_rewards"], delta["funds"]) == (5, 5 * REWARD, -5 * (REWARD + FEE))
    assert delta["updated_block"] == 3  # the opening touched no counter of the batch
    opening_only = project(1, rows[-1:], {})
    assert opening_only.opened and not opening_only.batch_deltas and not opening_only.balances
    only_restating = project(1, settlement(5, 3, [(WORKER, 0, 0), (WORKER, 1, 0)], 0, 5)[:1], {})
    assert only_restating.settled_answers == {}  # (the escrow refuses such a settlement: SettlementEmptyWord)


def test_an_opened_worker_settled_again_gives_rows_as_any_other():
    """After its opening OTHER is settled in word 1 alone (no entry restating its word 0, as the
    escrow allows for an opened worker): one row, counted and paid like any settled answer."""
    rows = [*history(), *settlement(5, 3, [(OTHER, 1, 1 << 2)], 1, 6)]
    changes = project(1, rows, {})
    assert changes.settled_answers[(1, OTHER, 194)]["sequence"] == 3
    assert len(changes.settled_answers) == 6 and list(changes.opened) == [(1, OTHER)]
    delta = changes.batch_deltas[1]
    assert (delta["answers_settled"], delta["settled_rewards"], delta["funds"]) == (6, 6 * REWARD, -6 * (REWARD + FEE))


def test_decoder_reads_opened_words_and_restating_entries():
    abi = artifacts.load("TaskEscrow").abi
    topics = EventDecoder(abi)
    base = {"address": ESCROW, "blockHash": "0x" + "ab" * 32, "blockNumber": "0x10",
            "transactionHash": "0x" + "cd" * 32, "transactionIndex": "0x2", "logIndex": "0x7"}
    opened = {**base, "data": "0x", "topics": [topics.topics("SettledWordsOpened")[0], "0x" + f"{9:064x}",
                                               "0x" + "00" * 12 + OTHER[2:].lower()]}
    row = LogDecoder(5, abi).row(opened)
    assert (row["name"], row["args"], row["batch_id"]) == ("SettledWordsOpened", {"batchId": 9, "worker": OTHER}, 9)
    settled = {**base, "topics": [topics.topics("AnswersSettled")[0], "0x" + f"{9:064x}", "0x" + f"{2:064x}"],
               "data": "0x" + encode(["(address,uint32,uint256)[]"], [[(WORKER, 0, 4), (WORKER, 1, 0)]]).hex()}
    assert LogDecoder(5, abi).row(settled)["args"]["settled"] == [
        {"worker": WORKER, "wordIndex": 0, "bits": 4}, {"worker": WORKER, "wordIndex": 1, "bits": 0}]


def test_store_writes_opened_words_and_a_reorg_rebuilds_them(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    store = IndexStore(engine, 1, ESCROW, POSTER)
    store.open(1)
    rows = history()
    store.append(0, rows, {r["block_number"]: r["block_hash"] for r in rows}, 4)

    def table(model) -> list[dict]:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(model.__table__)).mappings()]

    assert [(r["worker"], r["opened_block"], r["opened_log_index"]) for r in table(IndexedSettledWordsOpened)] == [
        (OTHER, 4, 3)]
    assert len(table(IndexedSettledAnswer)) == 5 and table(IndexedBatch)[0]["answers_settled"] == 5
    store.rollback(4, 3, rows[-2]["block_hash"])  # the opening's block is reorganised away
    assert table(IndexedSettledWordsOpened) == []
    assert len(table(IndexedSettledAnswer)) == 5 and table(IndexedBatch)[0]["answers_settled"] == 5
    store.rollback(3, 2, rows[1]["block_hash"])  # and the second settlement's
    assert sorted(r["task_index"] for r in table(IndexedSettledAnswer)) == [0, 1, 5, 383]
    assert table(IndexedBatch)[0]["answers_settled"] == 4
    engine.dispose()


def test_migration_fills_opened_words_from_stored_events(database_url):
    """An index written by an indexer that stored SettledWordsOpened without projecting it gets
    its rows (the first opening of a worker in a batch); downgrading drops the table."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "9b2d5e8c1f47")
    engine = make_engine(database_url)
    stored = [event("SettledWordsOpened", 7, 2, batchId=3, worker=OTHER),
              event("SettledWordsOpened", 9, 0, batchId=3, worker=OTHER),  # no escrow logs this twice
              event("SettledWordsOpened", 9, 1, batchId=4, worker=WORKER), created(2)]
    with engine.begin() as conn:
        conn.execute(insert(ChainEvent.__table__), stored)
    migrate(database_url)
    with engine.connect() as conn:
        found = conn.execute(select(IndexedSettledWordsOpened.__table__).order_by("batch_id")).mappings().all()
    assert [(r["batch_id"], r["worker"], r["opened_block"], r["opened_tx"], r["opened_log_index"]) for r in found] == [
        (3, OTHER, 7, stored[0]["transaction_hash"], 2), (4, WORKER, 9, stored[2]["transaction_hash"], 1)]
    command.downgrade(config, "9b2d5e8c1f47")
    with engine.connect() as conn, pytest.raises(Exception, match="indexed_settled_words_opened"):
        conn.execute(select(IndexedSettledWordsOpened.__table__)).all()
    engine.dispose()
