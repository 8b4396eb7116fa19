"""Pure parts of the indexer (decoding, projection, range sizing) and its schema, no chain."""

from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select

from kempelen.chain import artifacts
from kempelen.db import Base, make_engine, migrate
from kempelen.indexer.decoding import LogDecoder
from kempelen.indexer.errors import RpcError
from kempelen.indexer.models import PROJECTION_TABLES, IndexedBalance
from kempelen.indexer.projection import BatchTerms, cid_text, event_row, json_value, project
from kempelen.indexer.source import RangeSizer
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.events import EventDecoder

ESCROW = "0x" + "e5" * 20
WORKER = "0x" + "77" * 20
RELAYER = "0x" + "44" * 20


def word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def topic(value: int | str) -> str:
    return "0x" + (word(value) if isinstance(value, int) else "00" * 12 + value[2:])


def test_json_value_keeps_big_ints_exact_and_bytes_hex():
    assert json_value(2**53) == 2**53
    assert json_value(2**53 + 1) == str(2**53 + 1)
    assert json_value(b"\x01\xff") == "0x01ff"
    assert json_value((1, b"\x02", [2**200])) == [1, "0x02", [str(2**200)]]


def test_cid_text_keeps_bytes_that_are_not_a_cid():
    cid = raw_cid(hashlib.sha256(b"x").digest())
    assert cid_text("0x" + cid.to_bytes().hex()) == str(cid)
    assert cid_text("0xdeadbeef") == "0xdeadbeef"
    assert cid_text("0x") == "0x"


def test_log_decoder_equals_event_decoder_then_event_row():
    abis = (artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi)
    fast, reference = LogDecoder(5, *abis), EventDecoder(*abis)
    digest = hashlib.sha256(b"answer").digest()
    common = {"address": ESCROW, "blockHash": "0x" + "ab" * 32, "blockNumber": "0x10",
              "transactionHash": "0x" + "cd" * 32, "transactionIndex": "0x2", "logIndex": "0x7"}
    submitted = reference.topics("AnswerSubmitted")[0]
    rejected = reference.topics("AnswersRejected")[0]
    reason = raw_cid(digest).to_bytes()
    logs = [
        {**common, "topics": [submitted, topic(2**64 - 1), topic(WORKER), topic(RELAYER)],
         "data": "0x" + word(3) + digest.hex()},
        {**common, "topics": [rejected, topic(9), topic(WORKER)],
         "data": "0x" + word(96) + word(2**95 + 9) + word(96) + word(len(reason)) + reason.hex().ljust(64 * 2, "0")},
    ]
    for log in logs:
        assert fast.row(log) == event_row(5, reference.decode(log))
    assert fast.row(logs[0])["args"]["batchId"] == str(2**64 - 1)
    assert fast.row(logs[0])["batch_id"] is None  # past int64: only skipped answers can say so
    assert fast.row({**common, "topics": ["0x" + "11" * 32], "data": "0x"}) is None
    with pytest.raises(ValueError, match="out of range"):
        fast.row({**logs[0], "data": "0x" + word(2**32) + digest.hex()})  # a uint32 of 33 bits


def test_struct_arrays_decode_as_web3_decodes_them():
    """AnswersSettled carries SettledWord[]: dicts by field name, checksummed workers, as web3."""
    from eth_abi import encode
    from web3 import Web3

    abi = artifacts.load("TaskEscrow").abi
    settled = [(WORKER, 0, 2**191 + 5), ("0x" + "ab" * 20, 3, 1)]
    log = {"address": ESCROW, "blockHash": "0x" + "ab" * 32, "blockNumber": "0x10",
           "transactionHash": "0x" + "cd" * 32, "transactionIndex": "0x2", "logIndex": "0x7",
           "topics": [EventDecoder(abi).topics("AnswersSettled")[0], topic(9), topic(2)],
           "data": "0x" + encode(["(address,uint32,uint256)[]"], [settled]).hex()}
    decoded = EventDecoder(abi).decode(log)
    reference = Web3().eth.contract(abi=abi).events.AnswersSettled().process_log(
        {**log, "topics": [bytes.fromhex(t[2:]) for t in log["topics"]], "data": bytes.fromhex(log["data"][2:]),
         "blockNumber": 16, "transactionIndex": 2, "logIndex": 7})
    assert decoded.args == dict(reference["args"])
    assert decoded.args["settled"][1] == {"worker": Web3.to_checksum_address("0x" + "ab" * 20),
                                          "wordIndex": 3, "bits": 1}
    stored = LogDecoder(5, abi).row(log)["args"]["settled"]
    assert stored[0] == {"worker": Web3.to_checksum_address(WORKER), "wordIndex": 0, "bits": str(2**191 + 5)}


def row(name: str, block: int, **args) -> dict:
    return {"chain_id": 1, "block_number": block, "log_index": 0, "transaction_hash": f"0x{block:064x}",
            "name": name, "args": args, "batch_id": args.get("batchId")}


def created(batch_id: int, block: int) -> dict:
    return row("BatchCreated", block, batchId=batch_id, requester="0xR", token="0xT", taskCount=2,
               answersPerTask=1, reward=str(10**20), relayFee=5, deadline=100, reviewWindow=10,
               minReputation=0, goldCommitment="0x" + "00" * 32, deposit=str(2 * (10**20 + 5)),
               manifestCid="0xbad")


def answer(name: str, block: int, task: int = 0, **extra) -> dict:
    if name.startswith("Answers"):  # review events name a worker's answers per 96-task group
        return row(name, block, batchId=1, worker=WORKER, firstTask=task - task % 96, tasks=str(1 << task % 96),
                   **extra)
    return row(name, block, batchId=1, worker=WORKER, taskIndex=task, **extra)


def test_projection_follows_money_and_status():
    digest = "0x" + "11" * 32
    rows = [created(1, 1), answer("AnswerSubmitted", 2, relayer=RELAYER, answerDigest=digest),
            answer("AnswerSubmitted", 2, task=1, relayer=RELAYER, answerDigest=digest),
            answer("AnswersApproved", 3), answer("AnswersRejected", 3, task=1, reasonCid="0x01"),
            row("BatchExtended", 4, batchId=1, deadline=200, answersPerTask=2, topUp=7),
            row("Withdrawn", 5, account=WORKER, token="0xT", amount=str(10**20))]
    changes = project(1, rows, {})
    batch = changes.batches[1]
    delta = changes.batch_deltas[1]
    assert batch["manifest_cid"] == "0xbad" and not changes.reviews
    assert batch["funds"] + delta["funds"] == 2 * (10**20 + 5) - 2 * (10**20 + 5) + 10**20 + 7
    assert (delta["pending"], delta["answers_approved"], delta["answers_rejected"]) == (0, 1, 1)
    assert (delta["deadline"], delta["answers_per_task"], delta["updated_block"]) == (200, 2, 4)
    statuses = {key[2]: a["status"] for key, a in changes.answers.items()}
    assert statuses == {0: "approved", 1: "rejected"}
    assert changes.answers[(1, WORKER, 0)]["answer_cid"] == str(raw_cid(bytes.fromhex("11" * 32)))
    assert changes.balances == {("0xT", RELAYER): [10, 0], ("0xT", WORKER): [10**20, 10**20]}


def test_projection_prices_older_batches_with_given_terms_and_skips_unknown_ones():
    review = [answer("AnswersReleased", 9)]
    known = project(1, review, {1: BatchTerms("0xT", 3, 1)})
    assert known.reviews[(1, WORKER, 0)]["status"] == "released"
    assert known.balances == {("0xT", WORKER): [3, 0]}
    unknown = project(1, review, {})  # created before the first indexed block
    assert unknown.reviews and not unknown.balances and not unknown.batch_deltas


def test_projection_of_settlements_and_claims():
    """Funds -> pool + poster's fees on a settlement (bitmaps expanded), pool -> worker on a claim."""
    reward, fee = 10**20, 5
    rows = [created(1, 1),
            row("AnswersSettled", 2, batchId=1, sequence=1,
                settled=[{"worker": WORKER, "wordIndex": 0, "bits": 0b101},
                         {"worker": WORKER, "wordIndex": 1, "bits": str(1 << 191)}]),
            row("SettlementPosted", 2, batchId=1, sequence=1, poster=RELAYER, root="0x" + "aa" * 32,
                cumulativeTotal=str(3 * reward), amount=str(3 * reward), relayFees=3 * fee, answers=3,
                manifestCid="0x01"),
            row("EarningsClaimed", 3, batchId=1, worker=WORKER, amount=str(2 * reward),
                cumulative=str(2 * reward))]
    changes = project(1, rows, {})
    assert sorted(key[2] for key in changes.settled_answers) == [0, 2, 383]
    assert changes.settlements[(1, 1)]["manifest_cid"] == "0x01" and changes.settlements[(1, 1)]["answers"] == 3
    assert changes.claims[(1, WORKER, 2 * reward)]["amount"] == 2 * reward
    delta = changes.batch_deltas[1]
    assert delta["funds"] == -3 * (reward + fee)
    assert (delta["answers_settled"], delta["settled_rewards"], delta["claimed"]) == (3, 3 * reward, 2 * reward)
    assert (delta["rewards_paid"], delta["relay_fees_paid"]) == (2 * reward, 3 * fee)
    assert changes.balances == {("0xT", RELAYER): [3 * fee, 0], ("0xT", WORKER): [2 * reward, 0]}
    unknown = project(1, rows[1:], {})  # a batch created before the first indexed block
    assert unknown.settlements and unknown.claims and not unknown.balances and not unknown.batch_deltas


def test_negated_accounts_undo_only_sums():
    changes = project(1, [row("OutcomeRecorded", 1, worker=WORKER, requester="0xR", outcome=2,
                              count=4)], {})
    assert changes.reputation[WORKER][2] == 4 and changes.reputation["0xR"][5] == 4
    undo = changes.negated_accounts()
    assert undo.reputation[WORKER][2] == -4 and not undo.answers and not undo.batches


def test_range_sizer_aims_at_target_and_halves_on_refusal():
    sizer = RangeSizer(initial=1000, maximum=50_000, target_logs=10_000)
    sizer.fetched(1000, 0)
    assert sizer.size == 2000
    sizer.fetched(2000, 40_000)
    assert sizer.size == 500
    sizer.fetched(500, 100)
    assert sizer.size == 1000  # grows at most 2x
    sizer.refused(1000)
    assert sizer.size == 500
    tiny = RangeSizer(initial=1, minimum=1)
    with pytest.raises(RpcError):
        tiny.refused(1)


def test_migration_creates_exactly_the_models(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    mine = {"chain_events", "indexed_blocks", "index_checkpoints",
            *(model.__tablename__ for model in PROJECTION_TABLES)}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    ours = [d for d in diff if any(name in repr(d) for name in mine)]
    assert ours == []
    engine.dispose()


def test_uint256_round_trips_exactly(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    table = IndexedBalance.__table__
    amounts = [0, 2**63 + 1, 10**30 + 7, 2**256 - 1]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"chain_id": 1, "token": "0xT", "account": f"0x{i}",
                                      "credited": a, "withdrawn": a // 2} for i, a in enumerate(amounts)])
    with engine.connect() as conn:
        found = conn.execute(select(table.c.credited, table.c.withdrawn)
                             .order_by(table.c.credited)).all()
    assert found == [(a, a // 2) for a in amounts]  # also ordered numerically on SQLite
    with pytest.raises(Exception, match="uint256"), engine.begin() as conn:
        conn.execute(insert(table), [{"chain_id": 1, "token": "0xT", "account": "0xneg",
                                      "credited": -1, "withdrawn": 0}])
    engine.dispose()
