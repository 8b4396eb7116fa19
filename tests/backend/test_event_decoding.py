"""protocol.events.EventDecoder slices dynamic data (bytes, arrays of one-word items) straight from
the hex; it must agree with eth-abi on every well-formed log and leave every doubtful one to it."""

from __future__ import annotations

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from kempelen.chain import artifacts
from kempelen.protocol.events import EventDecoder

DECODER = EventDecoder(artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi)
WORKER = "0x" + "ab" * 20
SUBMITTED = ("AnswersSubmitted(uint64,address,address,uint32,uint256,bytes32[])", ["uint32", "uint256", "bytes32[]"])
OUTCOMES = ("OutcomesRecorded(address,uint8,address[],uint64[])", ["address[]", "uint64[]"])
REJECTED = ("AnswersRejected(uint64,address,uint32,uint256,bytes)", ["uint32", "uint256", "bytes"])
SETTLED = ("AnswersSettled(uint64,uint32,(address,uint32,uint256)[])", ["(address,uint32,uint256)[]"])
OPENED = "SettledWordsOpened(uint64,address)"


def log(signature: str, topics: list[bytes], data: bytes) -> dict:
    return {"topics": ["0x" + keccak(text=signature).hex(), *("0x" + t.hex() for t in topics)],
            "data": "0x" + data.hex(), "address": WORKER, "blockNumber": "0x1", "blockHash": "0x" + "00" * 32,
            "transactionHash": "0x" + "11" * 32, "transactionIndex": "0x0", "logIndex": "0x0"}


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def reference(types: list[str], data: bytes) -> list:
    """eth-abi's values in EventDecoder's form (addresses checksummed, arrays as lists)."""
    def form(kind, value):
        if kind.endswith("[]"):
            return [form(kind[:-2], v) for v in value]
        return to_checksum_address(value) if kind == "address" else value
    return [form(kind, value) for kind, value in zip(types, abi_decode(types, data))]


digests = st.lists(st.binary(min_size=32, max_size=32), max_size=96)
addresses = st.lists(st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()), max_size=12)


@given(first=st.integers(0, 2**32 - 1), tasks=st.integers(0, 2**96 - 1), answer_digests=digests)
def test_submitted_answers_match_eth_abi(first, tasks, answer_digests):
    data = abi_encode(SUBMITTED[1], [first, tasks, answer_digests])
    event = DECODER.decode(log(SUBMITTED[0], [word(7), word(int(WORKER, 16)), word(1)], data))
    got = [event.args["firstTask"], event.args["tasks"], event.args["answerDigests"]]
    assert got == reference(SUBMITTED[1], data)


@given(workers=addresses, counts=st.lists(st.integers(0, 2**64 - 1), max_size=12))
def test_outcomes_match_eth_abi(workers, counts):
    data = abi_encode(OUTCOMES[1], [workers, counts])
    event = DECODER.decode(log(OUTCOMES[0], [word(int(WORKER, 16)), word(0)], data))
    assert [event.args["workers"], event.args["counts"]] == reference(OUTCOMES[1], data)


@given(reason=st.binary(max_size=100))
def test_reason_bytes_match_eth_abi(reason):
    data = abi_encode(REJECTED[1], [0, 1, reason])
    event = DECODER.decode(log(REJECTED[0], [word(7), word(int(WORKER, 16))], data))
    assert event.args["reasonCid"] == reference(REJECTED[1], data)[2]


@given(entries=st.lists(st.tuples(st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
                                  st.integers(0, 2**32 - 1), st.integers(0, 2**192 - 1) | st.just(0)), max_size=8))
def test_settled_words_match_eth_abi_restating_entries_included(entries):
    """AnswersSettled's SettledWord[] (entries with bits 0 restate earlier words) as eth-abi reads it."""
    data = abi_encode(SETTLED[1], [entries])
    event = DECODER.decode(log(SETTLED[0], [word(7), word(2)], data))
    (expected,) = abi_decode(SETTLED[1], data)
    assert event.args["settled"] == [{"worker": to_checksum_address(w), "wordIndex": i, "bits": b}
                                     for w, i, b in expected]


def test_settled_words_opened_is_read_from_its_topics():
    event = DECODER.decode(log(OPENED, [word(9), word(int(WORKER, 16))], b""))
    assert (event.name, event.args) == ("SettledWordsOpened", {"batchId": 9, "worker": to_checksum_address(WORKER)})


def test_doubtful_data_is_left_to_eth_abi():
    good = abi_encode(REJECTED[1], [0, 1, b"\x01\x55"])
    dirty_padding = good[:-1] + b"\x01"  # bytes after the reason's end must be zero
    dirty_count = abi_encode(OUTCOMES[1], [[WORKER], [5]])
    dirty_count = dirty_count[:-32] + word(2**64)  # a uint64 item out of range
    dirty_address = abi_encode(OUTCOMES[1], [[WORKER], [5]])
    dirty_address = dirty_address[:160] + b"\x01" + dirty_address[161:]  # high bytes of an address item
    overrun = abi_encode(SUBMITTED[1], [0, 1, [b"\x00" * 32]])[:-32]  # one digest named, none there
    cases = [(REJECTED, dirty_padding), (OUTCOMES, dirty_count), (OUTCOMES, dirty_address), (SUBMITTED, overrun)]
    for (signature, types), data in cases:
        with pytest.raises(DecodingError):
            abi_decode(types, data)  # eth-abi refuses each ...
        topics = [word(7), word(int(WORKER, 16))] + ([word(1)] if signature == SUBMITTED[0] else [])
        if signature == OUTCOMES[0]:
            topics = [word(int(WORKER, 16)), word(0)]
        with pytest.raises(DecodingError):
            DECODER.decode(log(signature, topics, data))  # ... and so does the decoder, through it
