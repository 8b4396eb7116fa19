"""Pure parts of the indexer (decoding, projection, range sizing) and its schema, no chain."""

from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_abi import encode
from eth_abi.exceptions import DecodingError
from sqlalchemy import insert, select

from kempelen.chain import artifacts
from kempelen.db import Base, make_engine, migrate
from kempelen.indexer.decoding import LogDecoder
from kempelen.indexer.errors import IndexerError, RpcError
from kempelen.indexer.models import PROJECTION_TABLES, ChainEvent, IndexedBalance
from kempelen.indexer.projection import BatchTerms, cid_text, event_row, json_value, project
from kempelen.indexer.runner import Indexer
from kempelen.indexer.source import BlockRef, LogSource, RangeSizer
from kempelen.indexer.store import IndexStore
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


LOG_PLACE = {"address": ESCROW, "blockHash": "0x" + "ab" * 32, "blockNumber": "0x10",
             "transactionHash": "0x" + "cd" * 32, "transactionIndex": "0x2", "logIndex": "0x7"}


def submitted_log(decoder: EventDecoder, batch_id: int, first_task: int, tasks: int,
                  digests: list[bytes]) -> dict:
    """A raw AnswersSubmitted log: task first_task + b for every set bit b of `tasks`."""
    return {**LOG_PLACE,
            "topics": [decoder.topics("AnswersSubmitted")[0], topic(batch_id), topic(WORKER), topic(RELAYER)],
            # firstTask as a uint256 word: the same bytes, but a test may overflow the uint32
            "data": "0x" + encode(["uint256", "uint256", "bytes32[]"], [first_task, tasks, digests]).hex()}


def outcomes_log(decoder: EventDecoder, workers: list[str], counts: list[int]) -> dict:
    """A raw OutcomesRecorded log: requester RELAYER (any address), outcome rejected."""
    return {**LOG_PLACE, "topics": [decoder.topics("OutcomesRecorded")[0], topic(RELAYER), topic(1)],
            "data": "0x" + encode(["address[]", "uint64[]"], [workers, counts]).hex()}


def test_log_decoder_equals_event_decoder_then_event_row():
    abis = (artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi)
    fast, reference = LogDecoder(5, *abis), EventDecoder(*abis)
    digests = [hashlib.sha256(f"answer {i}".encode()).digest() for i in range(3)]
    rejected = reference.topics("AnswersRejected")[0]
    reason = raw_cid(digests[0]).to_bytes()
    logs = [
        submitted_log(reference, 2**64 - 1, 96, 0b1011 | 1 << 95, [*digests, digests[0]]),
        {**LOG_PLACE, "topics": [rejected, topic(9), topic(WORKER)],
         "data": "0x" + word(96) + word(2**95 + 9) + word(96) + word(len(reason)) + reason.hex().ljust(64 * 2, "0")},
        outcomes_log(reference, [WORKER, RELAYER, WORKER], [2, 1, 2**63]),
    ]
    for log in logs:
        assert fast.row(log) == event_row(5, reference.decode(log))
    assert fast.row(logs[2])["args"]["counts"] == [2, 1, str(2**63)]
    stored = fast.row(logs[0])
    assert stored["args"]["batchId"] == str(2**64 - 1) and stored["args"]["tasks"] == str(0b1011 | 1 << 95)
    assert stored["args"]["answerDigests"] == ["0x" + d.hex() for d in [*digests, digests[0]]]
    assert stored["batch_id"] is None  # past int64: only skipped answers can say so
    assert fast.row({**LOG_PLACE, "topics": ["0x" + "11" * 32], "data": "0x"}) is None
    with pytest.raises(ValueError, match="out of range"):
        fast.row({**LOG_PLACE, "topics": [reference.topics("AnswersApproved")[0], topic(9), topic(WORKER)],
                  "data": "0x" + word(2**32) + word(1)})  # a uint32 of 33 bits
    with pytest.raises(DecodingError):
        fast.row(submitted_log(reference, 1, 2**32, 1, digests[:1]))  # the same, in eth-abi's hands


def test_answers_submitted_decodes_as_eth_abi_decodes_it():
    """AnswersSubmitted's one-word fields and trailing bytes32[] come out as eth-abi reads them,
    in the canonical layout and in every other one it reads or refuses (a guard for any faster
    path that slices them from the hex: it must agree on every input)."""
    from eth_abi import decode

    decoder = EventDecoder(artifacts.load("TaskEscrow").abi)
    types = ["uint32", "uint256", "bytes32[]"]

    def both(data: str):
        def eth_abi():
            first, tasks, digests = decode(types, bytes.fromhex(data[2:]))
            return first, tasks, [bytes(d) for d in digests]

        def sliced():
            args = decoder.decode({**submitted_log(decoder, 1, 0, 0, []), "data": data}).args
            return args["firstTask"], args["tasks"], args["answerDigests"]

        outcomes = []
        for read in (eth_abi, sliced):
            try:
                outcomes.append(read())
            except Exception:  # noqa: BLE001  eth-abi raises many types: that both refuse is enough
                outcomes.append("refused")
        return outcomes

    digests = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    canonical = encode(types, [96, 0b1011 << 5, digests]).hex()
    head, offset, length, items = canonical[:128], canonical[128:192], canonical[192:256], canonical[256:]
    cases = {
        "canonical": canonical, "empty": encode(types, [0, 0, []]).hex(),
        "offset past a gap": head + word(128) + word(0) + length + items,  # eth-abi follows it
        "a trailing word": canonical + word(7), "length too large": head + offset + word(4) + items,
        "length past the data": head + offset + word(2**255) + items, "cut short": canonical[:-64],
        "odd digit": canonical[:-1], "not hex": canonical[:300] + "zz" + canonical[302:],
        "upper case": canonical.upper(), "uint32 overflow": word(2**32) + canonical[64:],
    }
    refused = set()
    for case, data in cases.items():
        expected, got = both("0x" + data)
        assert got == expected, case
        if got == "refused":
            refused.add(case)
    assert refused == {"length too large", "length past the data", "cut short", "odd digit", "not hex",
                       "uint32 overflow"}
    assert both("0x" + canonical)[1] == (96, 0b1011 << 5, digests)


def test_answers_submitted_whose_bitmap_and_digests_disagree_is_refused():
    """Three tasks, two digests: which answer is which cannot be told, so the log is refused as
    undecodable (the runner stops with its position and writes nothing) instead of half-stored."""
    decoder = LogDecoder(5, artifacts.load("TaskEscrow").abi)
    digests = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    with pytest.raises(ValueError, match="names 3 tasks but carries 2 digests"):
        decoder.row(submitted_log(decoder._decoder, 1, 0, 0b111, digests))
    with pytest.raises(ValueError, match="names 0 tasks but carries 2 digests"):
        decoder.row(submitted_log(decoder._decoder, 1, 0, 0, digests))
    with pytest.raises(ValueError, match="carries 2 digests"):  # the same rows read back on a reorg
        project(1, [row("AnswersSubmitted", 2, batchId=1, worker=WORKER, relayer=RELAYER, firstTask=0,
                        tasks=0b111, answerDigests=["0x" + d.hex() for d in digests])], {})


def test_outcomes_recorded_whose_workers_and_counts_differ_is_refused():
    decoder = LogDecoder(5, artifacts.load("Reputation").abi)
    with pytest.raises(ValueError, match="names 2 workers but carries 1 counts"):
        decoder.row(outcomes_log(decoder._decoder, [WORKER, RELAYER], [1]))


class OneLogSource(LogSource):
    """A chain of two blocks whose second holds `log`."""

    def __init__(self, log: dict):
        self.log = log

    def chain_id(self) -> int:
        return 5

    def head(self) -> int:
        return 2

    def block(self, number: int) -> BlockRef | None:
        return BlockRef(number, f"0x{number:064x}", f"0x{number - 1:064x}") if number <= 2 else None

    def logs(self, from_block: int, to_block: int) -> list[dict]:
        return [self.log] if from_block <= 2 <= to_block else []


def test_indexer_stops_at_a_malformed_answers_submitted_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    decoder = EventDecoder(artifacts.load("TaskEscrow").abi)
    log = {**submitted_log(decoder, 1, 0, 0b11, [bytes(32)]), "blockNumber": "0x2", "blockHash": f"0x{2:064x}"}
    store = IndexStore(engine, 5, ESCROW, "0x" + "ab" * 20)
    runner = Indexer(OneLogSource(log), store, from_block=1)
    with pytest.raises(IndexerError, match=r"undecodable log 0x7 in block 0x2: .*2 tasks but carries 1 digests"):
        runner.step()
    assert store.checkpoint().last_block == 0  # nothing indexed: the next run meets the same log again
    with engine.connect() as conn:
        assert conn.execute(select(ChainEvent.__table__)).all() == []
    engine.dispose()


def test_struct_arrays_decode_as_web3_decodes_them():
    """AnswersSettled carries SettledWord[]: dicts by field name, checksummed workers, as web3."""
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
    """A review event naming one answer (they name a worker's answers per 96-task group)."""
    return row(name, block, batchId=1, worker=WORKER, firstTask=task - task % 96, tasks=str(1 << task % 96),
               **extra)


def submitted(block: int, digests: dict[int, str], worker: str = WORKER, batch_id: int = 1) -> dict:
    """An AnswersSubmitted row naming the worker's answers to tasks of one 96-task group, stored
    as the indexer stores it (a bitmap above 2**53 as a decimal string, digests ascending)."""
    first = min(digests) - min(digests) % 96
    bits = sum(1 << (task - first) for task in digests)
    return row("AnswersSubmitted", block, batchId=batch_id, worker=worker, relayer=RELAYER, firstTask=first,
               tasks=json_value(bits), answerDigests=[digests[task] for task in sorted(digests)])


def test_projection_follows_money_and_status():
    digest = "0x" + "11" * 32
    rows = [created(1, 1), submitted(2, {0: digest, 1: digest}),
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


def test_answers_submitted_naming_several_answers_gives_one_row_each():
    """One event per run of a worker's answers in a 96-task group: a row per set bit, each with
    its own digest, the event's relayer and block/tx; money moves per answer."""
    digests = {96 + b: "0x" + f"{b:02x}" * 32 for b in (0, 3, 64, 95)}  # bit 95: the bitmap passes 2**53
    later = {100: "0x" + "ee" * 32}  # the same worker and group again, in another event of the tx
    rows = [created(1, 1), submitted(2, digests), submitted(2, later)]
    rows[2]["log_index"] = 1
    changes = project(1, rows, {})
    assert sorted(changes.answers) == [(1, WORKER, t) for t in (96, 99, 100, 160, 191)]
    for task, digest in {**digests, **later}.items():
        answer_row = changes.answers[(1, WORKER, task)]
        assert (answer_row["answer_digest"], answer_row["relayer"], answer_row["status"]) == (digest, RELAYER,
                                                                                               "pending")
        assert answer_row["answer_cid"] == str(raw_cid(bytes.fromhex(digest[2:])))
        assert (answer_row["submitted_block"], answer_row["submitted_tx"]) == (2, rows[1]["transaction_hash"])
    delta = changes.batch_deltas[1]
    assert (delta["pending"], delta["answers_submitted"], delta["relay_fees_paid"]) == (5, 5, 5 * 5)
    assert delta["funds"] == -5 * (10**20 + 5)
    assert changes.balances == {("0xT", RELAYER): [5 * 5, 0]}
    review = answer("AnswersApproved", 3, task=99)  # reviews and submissions meet per answer
    assert project(1, [*rows, review], {}).answers[(1, WORKER, 99)]["status"] == "approved"


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


def test_one_outcomes_event_counts_each_worker_and_the_requester_by_the_sum():
    changes = project(1, [row("OutcomesRecorded", 1, requester="0xR", outcome=1,
                              workers=[WORKER, "0xW2", WORKER, "0xW3"], counts=[2, 1, 3, 0])], {})
    assert changes.reputation == {WORKER: [0, 5, 0, 0, 0, 0], "0xW2": [0, 1, 0, 0, 0, 0],
                                  "0xR": [0, 0, 0, 0, 6, 0]}  # no row for a count of 0


def test_negated_accounts_undo_only_sums():
    changes = project(1, [row("OutcomesRecorded", 1, requester="0xR", outcome=2, workers=[WORKER],
                              counts=[4])], {})
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
