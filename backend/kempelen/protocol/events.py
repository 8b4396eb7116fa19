"""Contract events as plain data: a pure decoder from raw JSON-RPC logs, no I/O.

web3.py's event decoding runs ~2,000 logs/s; the indexer and the auditor decode
hundreds of thousands, so this decodes raw `eth_getLogs` entries with eth-abi directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address


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


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in param['components'])}){param['type'][5:]}"
    return param["type"]


def _hex_to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes.fromhex(value[2:])


def _as_int(value: str | int) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _as_hex(value: str | bytes) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


class _EventSpec:
    __slots__ = ("name", "indexed", "data_names", "data_types")

    def __init__(self, entry: dict):
        self.name = entry["name"]
        self.indexed = [(i["name"], _abi_type(i)) for i in entry["inputs"] if i["indexed"]]
        plain = [i for i in entry["inputs"] if not i["indexed"]]
        self.data_names = [i["name"] for i in plain]
        self.data_types = [_abi_type(i) for i in plain]


def _normalize(abi_type: str, value: Any) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    return value


class EventDecoder:
    """Decodes logs of the contracts whose ABIs it was given (by topic0)."""

    def __init__(self, *abis: list[dict]):
        self._specs: dict[bytes, _EventSpec] = {}
        for abi in abis:
            for entry in abi:
                if entry["type"] == "event" and not entry.get("anonymous"):
                    signature = f"{entry['name']}({','.join(_abi_type(i) for i in entry['inputs'])})"
                    self._specs[keccak(text=signature)] = _EventSpec(entry)

    def topics(self, *names: str) -> list[str]:
        """topic0 values (0x hex) of the named events, all known events when none named."""
        return ["0x" + t.hex() for t, s in self._specs.items() if not names or s.name in names]

    def decode(self, log: dict) -> Event | None:
        """Decode one log (raw JSON-RPC or web3 form); None if its event is unknown."""
        topics = log["topics"]
        if not topics:
            return None
        spec = self._specs.get(_hex_to_bytes(topics[0]))
        if spec is None:
            return None
        args: dict[str, Any] = {}
        for (name, abi_type), topic in zip(spec.indexed, topics[1:]):
            (value,) = abi_decode([abi_type], _hex_to_bytes(topic))
            args[name] = _normalize(abi_type, value)
        if spec.data_types:
            values = abi_decode(spec.data_types, _hex_to_bytes(log["data"]))
            for name, abi_type, value in zip(spec.data_names, spec.data_types, values):
                args[name] = _normalize(abi_type, value)
        return Event(
            name=spec.name,
            args=args,
            address=to_checksum_address(log["address"]),
            block_number=_as_int(log["blockNumber"]),
            block_hash=_as_hex(log["blockHash"]),
            transaction_hash=_as_hex(log["transactionHash"]),
            transaction_index=_as_int(log["transactionIndex"]),
            log_index=_as_int(log["logIndex"]),
        )

    def decode_all(self, logs: Iterable[dict]) -> list[Event]:
        return [event for log in logs if (event := self.decode(log)) is not None]
