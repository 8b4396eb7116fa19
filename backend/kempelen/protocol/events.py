"""Contract events as plain data: a pure decoder from raw JSON-RPC logs, no I/O.

web3.py's event decoding runs ~2,000 logs/s and eth-abi alone ~30 us a call; the indexer and
the auditor decode hundreds of thousands of logs. Events whose fields are all one 32-byte word
(most of ours) are sliced straight from the hex, and checksummed addresses are memoized
(workers and relays recur on every page of logs); so are `bytes` and arrays of one-word items
(AnswersSubmitted's digests, OutcomesRecorded's workers and counts) where the data is exactly
what eth-abi would accept. Anything else goes through eth-abi, and comes out as web3.py gives
it: addresses checksummed, structs (tuples) as dicts by field name, arrays as lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from kempelen.protocol.tasksets import set_tasks


@dataclass(frozen=True)
class Event:
    """One decoded log: `name` and `args` as the ABI names them, plus where it happened."""

    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int


@lru_cache(maxsize=1 << 16)
def checksum(address_hex: str) -> str:
    """EIP-55 form of a 0x-prefixed address in any case, memoized (it costs more than recovery)."""
    return to_checksum_address(address_hex)


def abi_type(param: dict) -> str:
    """The canonical type of an ABI parameter (tuples spelled out)."""
    if param["type"].startswith("tuple"):
        return f"({','.join(abi_type(c) for c in param['components'])}){param['type'][5:]}"
    return param["type"]


def _word_reader(kind: str) -> Callable[[str], Any] | None:
    """Reader of one 32-byte word (64 hex digits) of a static one-word type; None otherwise."""
    if "[" in kind or kind.startswith("("):
        return None
    if kind == "address":
        return lambda word: checksum("0x" + word[24:])
    if kind == "bool":
        return lambda word: int(word, 16) != 0
    if kind.startswith("uint"):
        bound = 1 << int(kind[4:] or 256)

        def read_uint(word: str) -> int:
            value = int(word, 16)
            if value >= bound:  # as eth-abi: a malformed log, not a value to trust
                raise ValueError(f"{kind} word out of range: 0x{word}")
            return value

        return read_uint
    if kind.startswith("int"):
        return lambda word: int.from_bytes(bytes.fromhex(word), "big", signed=True)
    if kind.startswith("bytes") and kind != "bytes":
        size = int(kind[5:])
        return lambda word: bytes.fromhex(word[: 2 * size])
    return None


def _hex(value: str | bytes) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _int(value: str | int) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _python_value(kind: str, value: Any) -> Any:
    if kind == "address":
        return checksum(value)
    if kind.endswith("]") and isinstance(value, (list, tuple)):
        inner = kind[: kind.rindex("[")]
        return [_python_value(inner, item) for item in value]
    return value


def _value_reader(param: dict) -> Callable[[Any], Any]:
    """Turns eth-abi's value of an ABI parameter into web3.py's form: a struct (tuple) becomes a
    dict by component name (e.g. AnswersSettled's SettledWord[]), recursively."""
    kind = param["type"]
    if kind.endswith("]"):
        read_item = _value_reader({**param, "type": kind[: kind.rindex("[")]})
        return lambda value: [read_item(item) for item in value]
    if kind == "tuple":
        fields = [(c["name"], _value_reader(c)) for c in param["components"]]
        return lambda value: {name: read(item) for (name, read), item in zip(fields, value)}
    return lambda value: _python_value(kind, value)


def _tail_reader(kind: str) -> Callable[[str, int, int], Any] | None:
    """Reader of a dynamic value (`bytes`, or an array of one-word items) from the data's hex
    digits at word `start` (its length word); None for any other type. Returns _MALFORMED for
    anything eth-abi might read otherwise (overrun, dirty padding, out-of-range item): such
    data goes through eth-abi, which decides."""
    if kind == "bytes":
        def read_bytes(raw: str, start: int, words: int) -> Any:
            size = int(raw[64 * start: 64 * start + 64], 16)
            padded = 64 * (-(-size // 32))  # hex digits of the value padded to whole words
            body = raw[64 * start + 64: 64 * start + 64 + padded]
            if len(body) != padded or body[2 * size:].strip("0"):
                return _MALFORMED
            return bytes.fromhex(body[: 2 * size])
        return read_bytes
    if not kind.endswith("[]"):
        return None
    inner = kind[:-2]
    read_item = _word_reader(inner)
    if read_item is None or inner == "bool" or (inner.startswith("bytes") and inner != "bytes32"):
        return None  # items eth-abi checks beyond their range (0/1, right padding): its call
    clean = (lambda word: not word[:24].strip("0")) if inner == "address" else (lambda word: True)

    def read_array(raw: str, start: int, words: int) -> Any:
        count = int(raw[64 * start: 64 * start + 64], 16)
        if start + 1 + count > words:
            return _MALFORMED
        items = [raw[64 * (start + 1 + j): 64 * (start + 2 + j)] for j in range(count)]
        if not all(map(clean, items)):
            return _MALFORMED
        return [read_item(item) for item in items]
    return read_array


_MALFORMED = object()


class _EventSpec:
    __slots__ = ("name", "topics", "data_names", "data_types", "data_words", "data_readers", "data_layout")

    def __init__(self, entry: dict):
        self.name = entry["name"]
        # A dynamic indexed value (string, bytes, array) is only its keccak: kept as bytes.
        self.topics = [(i["name"], _word_reader(abi_type(i)) or _word_reader("bytes32"))
                       for i in entry["inputs"] if i["indexed"]]
        plain = [i for i in entry["inputs"] if not i["indexed"]]
        self.data_names = [i["name"] for i in plain]
        self.data_types = [abi_type(i) for i in plain]
        readers = [_word_reader(t) for t in self.data_types]
        self.data_words = list(zip(self.data_names, readers)) if all(readers) else None
        self.data_readers = [_value_reader(i) for i in plain]
        # Head words and dynamic tails of one-word items (AnswersSubmitted's digests,
        # OutcomesRecorded's arrays, reason CIDs), sliced from the hex like the all-word events.
        layout = [(name, _word_reader(t), _tail_reader(t)) for name, t in zip(self.data_names, self.data_types)]
        self.data_layout = layout if all(word or tail for _, word, tail in layout) else None

    def read_data(self, data: str, args: dict) -> None:
        if self.data_words is not None and len(data) == 2 + 64 * len(self.data_words):
            for i, (name, read) in enumerate(self.data_words):
                args[name] = read(data[2 + 64 * i: 66 + 64 * i])
            return
        if self.data_layout is not None and self._read_layout(data[2:], args):
            return
        values = abi_decode(self.data_types, bytes.fromhex(data[2:]))
        for name, read, value in zip(self.data_names, self.data_readers, values):
            args[name] = read(value)


    def _read_layout(self, raw: str, args: dict) -> bool:
        """Heads and tails straight from the hex; False (args untouched) where eth-abi must decide."""
        words = len(raw) // 64
        if len(raw) % 64 or words < len(self.data_layout):
            return False
        values = {}
        try:
            for i, (name, read_word, read_tail) in enumerate(self.data_layout):
                head = raw[64 * i: 64 * i + 64]
                if read_word is not None:
                    values[name] = read_word(head)
                    continue
                offset = int(head, 16)
                if offset % 32 or offset // 32 >= words:
                    return False
                value = read_tail(raw, offset // 32, words)
                if value is _MALFORMED:
                    return False
                values[name] = value
        except ValueError:
            return False
        args.update(values)
        return True


class EventDecoder:
    """Decodes logs of the contracts whose ABIs it was given (by topic0)."""

    def __init__(self, *abis: list[dict]):
        self._specs: dict[str, _EventSpec] = {}
        for abi in abis:
            for entry in abi:
                if entry["type"] == "event" and not entry.get("anonymous"):
                    signature = f"{entry['name']}({','.join(abi_type(i) for i in entry['inputs'])})"
                    self._specs["0x" + keccak(text=signature).hex()] = _EventSpec(entry)

    def topics(self, *names: str) -> list[str]:
        """topic0 values (0x hex) of the named events, all known events when none named."""
        return [t for t, s in self._specs.items() if not names or s.name in names]

    def decode(self, log: dict) -> Event | None:
        """Decode one log (raw JSON-RPC or web3 form); None if its event is unknown."""
        topics = [_hex(t) for t in log["topics"]]
        spec = self._specs.get(topics[0].lower()) if topics else None
        if spec is None or len(topics) != len(spec.topics) + 1:
            return None
        args = {name: read(topic[2:]) for (name, read), topic in zip(spec.topics, topics[1:])}
        if spec.data_types:
            spec.read_data(_hex(log["data"]), args)
        return Event(
            name=spec.name,
            args=args,
            address=checksum(_hex(log["address"]) if not isinstance(log["address"], str) else log["address"]),
            block_number=_int(log["blockNumber"]),
            block_hash=_hex(log["blockHash"]),
            transaction_hash=_hex(log["transactionHash"]),
            transaction_index=_int(log["transactionIndex"]),
            log_index=_int(log["logIndex"]),
        )

    def decode_all(self, logs: Iterable[dict]) -> list[Event]:
        return [event for log in logs if (event := self.decode(log)) is not None]


# Review events name one worker's answers in one group of 96 tasks (ITaskEscrow): task
# firstTask + b for every set bit b of `tasks`. Outcome names as IReputation.Outcome orders them.
REVIEW_OUTCOMES = {"AnswersApproved": "approved", "AnswersRejected": "rejected", "AnswersReleased": "released"}


def submitted_answers(args: dict) -> list[tuple[int, Any]]:
    """(taskIndex, answerDigest) of each answer an AnswersSubmitted event's args name, ascending
    by task: the event lists the digests in the order of the set bits of its task bitmap. Args as
    decoded (digests as bytes) or as stored (0x hex): digests come out in the form they came in.
    Raises ValueError when the bitmap and the digests disagree."""
    tasks, digests = reviewed_tasks(args), list(args["answerDigests"])
    if len(tasks) != len(digests):
        raise ValueError(f"AnswersSubmitted names {len(tasks)} tasks but carries {len(digests)} digests")
    return list(zip(tasks, digests))


def recorded_outcomes(args: dict) -> list[tuple[Any, int]]:
    """(worker, count) of each entry an OutcomesRecorded event's args name: counts[i] answers of
    workers[i], one review call's with one requester (a worker may recur). Args as decoded or as
    stored. Raises ValueError when the two arrays differ in length."""
    workers, counts = list(args["workers"]), list(args["counts"])
    if len(workers) != len(counts):
        raise ValueError(f"OutcomesRecorded names {len(workers)} workers but carries {len(counts)} counts")
    return [(worker, int(count)) for worker, count in zip(workers, counts)]


def reviewed_tasks(args: dict) -> list[int]:
    """The task indexes a review event's args name, ascending (args as decoded or as stored)."""
    return set_tasks(int(args["firstTask"]), int(args["tasks"]))
