"""Word-slicing decoders for the hot paths of an audit: static-typed events and submitAnswers calldata.

An audit decodes a few logs and one calldata entry per answer. eth-abi spends ~30 us per
decode call and eth-utils ~50-150 us per checksummed address, i.e. most of an audit's time;
these decoders read the 32-byte words directly and memoize checksums (a history has few
distinct addresses). They produce exactly what kempelen.protocol.events.EventDecoder and
eth-abi produce (tested against them) and defer to those for anything else.
"""

from __future__ import annotations

from functools import lru_cache

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from kempelen.protocol.events import Event, EventDecoder


def _static_kind(abi_type: str) -> str | None:
    """'uint', 'address', 'bytes32' or 'bool' for one-word static types; None otherwise."""
    if "[" in abi_type or abi_type.startswith("tuple"):
        return None
    if abi_type.startswith("uint"):
        return "uint"
    return abi_type if abi_type in ("address", "bytes32", "bool") else None


@lru_cache(maxsize=1 << 16)
def checksum(address_hex: str) -> str:
    """EIP-55 form of a 0x-prefixed (any case) address, memoized."""
    return to_checksum_address(address_hex)


def _word_value(kind: str, word: str):
    if kind == "address":
        return checksum("0x" + word[24:])
    if kind == "bytes32":
        return bytes.fromhex(word)
    if kind == "bool":
        return int(word, 16) != 0
    return int(word, 16)


class FastEventDecoder:
    """EventDecoder with a fast path for events whose fields are all one-word static types."""

    def __init__(self, *abis: list[dict]):
        self.slow = EventDecoder(*abis)
        # topic0 hex -> (name, [(field, kind, topic index or None, data word index or None)])
        self._fast: dict[str, tuple[str, list[tuple]]] = {}
        for abi in abis:
            for entry in abi:
                if entry["type"] != "event" or entry.get("anonymous"):
                    continue
                types = [i["type"] for i in entry["inputs"]]
                if not all(_static_kind(t) for t in types):
                    continue
                topic0 = "0x" + keccak(text=f"{entry['name']}({','.join(types)})").hex()
                fields, topic, word = [], 1, 0
                for param in entry["inputs"]:
                    kind = _static_kind(param["type"])
                    if param["indexed"]:
                        fields.append((param["name"], kind, topic, None))
                        topic += 1
                    else:
                        fields.append((param["name"], kind, None, word))
                        word += 1
                self._fast[topic0] = (entry["name"], fields)

    def decode(self, log: dict) -> Event | None:
        topics = log["topics"]
        spec = self._fast.get(topics[0].lower()) if topics and isinstance(topics[0], str) else None
        if spec is None:
            return self.slow.decode(log)
        name, fields = spec
        data = log["data"]
        args = {}
        for field, kind, topic, word in fields:
            text = topics[topic][2:] if topic is not None else data[2 + 64 * word : 66 + 64 * word]
            args[field] = _word_value(kind, text)
        return Event(name, args, checksum(log["address"]), int(log["blockNumber"], 16), log["blockHash"],
                     log["transactionHash"], int(log["transactionIndex"], 16), int(log["logIndex"], 16))

    def decode_all(self, logs: list[dict]) -> list[Event]:
        return [event for log in logs if (event := self.decode(log)) is not None]


_SUBMIT_TYPES = ["(uint64,uint32,bytes32,address)[]", "bytes[]"]


def decode_submit_args(body: bytes) -> list[tuple[tuple[int, int, bytes, str], bytes]]:
    """submitAnswers(Answer[], bytes[]) arguments (calldata after the selector).

    Raises ValueError when the layout is not the canonical one; callers fall back to eth-abi.
    """
    def word(at: int) -> int:
        if at + 32 > len(body):
            raise ValueError("calldata too short")
        return int.from_bytes(body[at : at + 32], "big")

    answers_at, signatures_at = word(0), word(32)
    count = word(answers_at)
    if word(signatures_at) != count or answers_at + 32 + count * 128 > len(body):
        raise ValueError("answers and signatures differ in number")
    result = []
    offsets = signatures_at + 32
    for i in range(count):
        at = answers_at + 32 + i * 128
        batch_id, task, digest, worker = word(at), word(at + 32), body[at + 64 : at + 96], word(at + 96)
        if batch_id >> 64 or task >> 32 or worker >> 160:
            raise ValueError("answer field out of range")
        sig_at = offsets + word(offsets + 32 * i)
        length = word(sig_at)
        if sig_at + 32 + length > len(body):
            raise ValueError("signature out of bounds")
        worker_hex = "0x" + body[at + 108 : at + 128].hex()
        signature = bytes(body[sig_at + 32 : sig_at + 32 + length])
        result.append(((batch_id, task, bytes(digest), checksum(worker_hex)), signature))
    return result


def decode_submit_args_strict(body: bytes) -> list[tuple[tuple[int, int, bytes, str], bytes]]:
    """The same through eth-abi: the reference the fast path is tested against."""
    answers, signatures = abi_decode(_SUBMIT_TYPES, body)
    if len(answers) != len(signatures):
        raise ValueError("answers and signatures differ in number")
    return [((a[0], a[1], a[2], checksum(a[3])), sig) for a, sig in zip(answers, signatures)]
