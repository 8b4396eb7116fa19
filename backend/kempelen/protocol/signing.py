"""EIP-712 messages of the protocol: what workers sign, and fast recovery of who signed.

The contract verifies with OpenZeppelin's EIP712/ECDSA; this module computes the same
digests so the relay and the auditor can check signatures off-chain. It is cross-checked
against eth-account's `encode_typed_data` in the tests, and the contract tests have the escrow
accept signatures made over these digests. We build digests directly because eth-account's
generic encoder recovers ~150 signatures/s while this path, on coincurve, does thousands.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

import coincurve
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from kempelen.errors import KempelenError

DOMAIN_NAME = "Kempelen"
DOMAIN_VERSION = "1"

_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ANSWER_TYPE = "Answer(uint64 batchId,uint32 taskIndex,bytes32 answerDigest,address worker)"
WITHDRAWAL_TYPE = "Withdrawal(address account,address token,uint256 nonce,uint256 deadline)"
SETTLED_WORD_TYPE = "SettledWord(address worker,uint32 wordIndex,uint256 bits)"
SETTLEMENT_TYPE = (
    "Settlement(uint64 batchId,uint32 sequence,bytes32 root,uint256 cumulativeTotal,bytes manifestCid,"
    "SettledWord[] settled)" + SETTLED_WORD_TYPE
)
_ANSWER_TYPEHASH = keccak(ANSWER_TYPE.encode())
_WITHDRAWAL_TYPEHASH = keccak(WITHDRAWAL_TYPE.encode())
_SETTLED_WORD_TYPEHASH = keccak(SETTLED_WORD_TYPE.encode())
_SETTLEMENT_TYPEHASH = keccak(SETTLEMENT_TYPE.encode())
TASKS_PER_SETTLED_WORD = 192  # ISettlement: bit b of word w settles task 192 * w + b

# secp256k1 group order; signatures with s above half of it are malleated copies.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2


class SignatureError(KempelenError):
    """A signature that cannot be parsed or does not recover to a key."""


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    raw = bytes.fromhex(address[2:] if address.startswith(("0x", "0X")) else address)
    if len(raw) != 20:
        raise KempelenError(f"not a 20-byte address: {address!r}")
    return bytes(12) + raw


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one escrow deployment."""

    chain_id: int
    escrow: str

    @cached_property
    def separator(self) -> bytes:
        return keccak(
            _DOMAIN_TYPEHASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + _word(self.chain_id)
            + _address_word(self.escrow)
        )

    def digest(self, struct_hash: bytes) -> bytes:
        return keccak(b"\x19\x01" + self.separator + struct_hash)

    def typed_data(self) -> dict:
        """The domain in eth-account / wallet (eth_signTypedData_v4) form."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.escrow),
        }


@dataclass(frozen=True)
class Answer:
    """A worker's answer to one task of a batch; answer_digest = sha256(answer payload)."""

    batch_id: int
    task_index: int
    answer_digest: bytes
    worker: str

    def struct_hash(self) -> bytes:
        return keccak(
            _ANSWER_TYPEHASH
            + _word(self.batch_id)
            + _word(self.task_index)
            + self.answer_digest
            + _address_word(self.worker)
        )

    def as_tuple(self) -> tuple:
        """The ABI tuple of ITaskEscrow.Answer."""
        return (self.batch_id, self.task_index, self.answer_digest, to_checksum_address(self.worker))

    def typed_data(self, domain: Domain) -> dict:
        """Full EIP-712 message, for wallets that sign typed data."""
        return {
            "types": {
                "EIP712Domain": _EIP712_DOMAIN_FIELDS,
                "Answer": [
                    {"name": "batchId", "type": "uint64"},
                    {"name": "taskIndex", "type": "uint32"},
                    {"name": "answerDigest", "type": "bytes32"},
                    {"name": "worker", "type": "address"},
                ],
            },
            "primaryType": "Answer",
            "domain": domain.typed_data(),
            "message": {
                "batchId": self.batch_id,
                "taskIndex": self.task_index,
                "answerDigest": self.answer_digest,
                "worker": to_checksum_address(self.worker),
            },
        }


@dataclass(frozen=True)
class Withdrawal:
    """A worker's authorization for anyone to pay out its balance to itself."""

    account: str
    token: str
    nonce: int
    deadline: int

    def struct_hash(self) -> bytes:
        return keccak(
            _WITHDRAWAL_TYPEHASH
            + _address_word(self.account)
            + _address_word(self.token)
            + _word(self.nonce)
            + _word(self.deadline)
        )


_EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class SettledWord:
    """Newly settled tasks of one worker: bit b of `bits` settles task 192 * word_index + b."""

    worker: str
    word_index: int
    bits: int

    def struct_hash(self) -> bytes:
        return keccak(
            _SETTLED_WORD_TYPEHASH + _address_word(self.worker) + _word(self.word_index) + _word(self.bits)
        )

    def as_tuple(self) -> tuple:
        """The ABI tuple of ISettlement.SettledWord."""
        return (to_checksum_address(self.worker), self.word_index, self.bits)

    def task_indexes(self) -> list[int]:
        first = self.word_index * TASKS_PER_SETTLED_WORD
        return [first + b for b in range(TASKS_PER_SETTLED_WORD) if self.bits >> b & 1]


def settled_words(answers) -> list[SettledWord]:
    """The `settled` entries of a Settlement for (worker, task_index) pairs: one word per worker
    and 192 tasks, sorted by (worker address as a number, word index) as the escrow requires."""
    words: dict[tuple[int, int], int] = {}
    for worker, task_index in answers:
        if task_index < 0 or task_index >= 1 << 32:
            raise KempelenError(f"task index out of range: {task_index}")
        key = (int(_address_word(worker).hex(), 16), task_index // TASKS_PER_SETTLED_WORD)
        bit = 1 << task_index % TASKS_PER_SETTLED_WORD
        if words.get(key, 0) & bit:
            raise KempelenError(f"answer settled twice: worker {worker}, task {task_index}")
        words[key] = words.get(key, 0) | bit
    return [
        SettledWord(to_checksum_address(worker.to_bytes(20, "big")), word_index, bits)
        for (worker, word_index), bits in sorted(words.items())
    ]


@dataclass(frozen=True)
class Settlement:
    """A requester's settlement of a batch (ISettlement): the Merkle root of workers' cumulative
    earnings, the batch's cumulative settled total, the manifest's binary CID and the answers
    this settlement newly pays."""

    batch_id: int
    sequence: int
    root: bytes
    cumulative_total: int
    manifest_cid: bytes
    settled: tuple[SettledWord, ...]

    def struct_hash(self) -> bytes:
        settled_hash = keccak(b"".join(word.struct_hash() for word in self.settled))
        return keccak(
            _SETTLEMENT_TYPEHASH
            + _word(self.batch_id)
            + _word(self.sequence)
            + self.root
            + _word(self.cumulative_total)
            + keccak(self.manifest_cid)
            + settled_hash
        )

    def as_tuple(self) -> tuple:
        """The ABI tuple of ISettlement.Settlement, for `settle(settlement, signature)`."""
        return (
            self.batch_id,
            self.sequence,
            self.root,
            self.cumulative_total,
            self.manifest_cid,
            [word.as_tuple() for word in self.settled],
        )

    def answer_count(self) -> int:
        return sum(bin(word.bits).count("1") for word in self.settled)

    def typed_data(self, domain: Domain) -> dict:
        """Full EIP-712 message, for wallets that sign typed data."""
        return {
            "types": {
                "EIP712Domain": _EIP712_DOMAIN_FIELDS,
                "Settlement": [
                    {"name": "batchId", "type": "uint64"},
                    {"name": "sequence", "type": "uint32"},
                    {"name": "root", "type": "bytes32"},
                    {"name": "cumulativeTotal", "type": "uint256"},
                    {"name": "manifestCid", "type": "bytes"},
                    {"name": "settled", "type": "SettledWord[]"},
                ],
                "SettledWord": [
                    {"name": "worker", "type": "address"},
                    {"name": "wordIndex", "type": "uint32"},
                    {"name": "bits", "type": "uint256"},
                ],
            },
            "primaryType": "Settlement",
            "domain": domain.typed_data(),
            "message": {
                "batchId": self.batch_id,
                "sequence": self.sequence,
                "root": self.root,
                "cumulativeTotal": self.cumulative_total,
                "manifestCid": self.manifest_cid,
                "settled": [
                    {"worker": to_checksum_address(w.worker), "wordIndex": w.word_index, "bits": w.bits}
                    for w in self.settled
                ],
            },
        }


def answer_digest(payload: bytes) -> bytes:
    """The digest a worker signs for an answer payload: its sha2-256, as in its raw CID."""
    return hashlib.sha256(payload).digest()


def sign(digest: bytes, private_key: bytes | str) -> bytes:
    """A 65-byte r || s || v signature (v in {27, 28}, low s) of an EIP-712 digest."""
    if isinstance(private_key, str):
        private_key = bytes.fromhex(private_key.removeprefix("0x"))
    signature = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes([signature[64] + 27])


def to_compact(signature: bytes) -> bytes:
    """EIP-2098 form: r || vs, where vs carries v's parity in its top bit."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + _word(s | ((v - 27) << 255))


def recover(digest: bytes, signature: bytes) -> str:
    """The checksummed address that signed `digest`; 65-byte or 64-byte (EIP-2098) form.

    Rejects what OpenZeppelin's ECDSA rejects: high s, v other than 27/28, bad lengths.
    """
    if len(signature) == 65:
        r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    elif len(signature) == 64:
        vs = int.from_bytes(signature[32:], "big")
        r, s, v = signature[:32], vs & ((1 << 255) - 1), (vs >> 255) + 27
    else:
        raise SignatureError(f"signature must be 65 or 64 bytes, got {len(signature)}")
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}")
    if s > _HALF_N:
        raise SignatureError("signature s is in the upper half of the curve order (malleable)")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            r + _word(s) + bytes([v - 27]), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises bare Exception/ValueError on invalid points
        raise SignatureError(f"signature does not recover to a public key: {exc}") from None
    return _checksum(keccak(public_key.format(compressed=False)[1:])[-20:])


@lru_cache(maxsize=1 << 16)
def _checksum(address: bytes) -> str:
    # eth-utils spends longer checksumming than coincurve spends recovering; signers repeat.
    return to_checksum_address(address)


def address_of(private_key: bytes | str) -> str:
    if isinstance(private_key, str):
        private_key = bytes.fromhex(private_key.removeprefix("0x"))
    public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return to_checksum_address(keccak(public_key[1:])[-20:])


def permit_typed_data(token_name: str, chain_id: int, token: str, owner: str, spender: str,
                      value: int, nonce: int, deadline: int) -> dict:
    """An EIP-2612 Permit for a token whose EIP-712 domain is (name, "1", chain, token)."""
    return {
        "types": {
            "EIP712Domain": _EIP712_DOMAIN_FIELDS,
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                       {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                       {"name": "deadline", "type": "uint256"}],
        },
        "primaryType": "Permit",
        "domain": {"name": token_name, "version": "1", "chainId": chain_id,
                   "verifyingContract": to_checksum_address(token)},
        "message": {"owner": to_checksum_address(owner), "spender": to_checksum_address(spender),
                    "value": value, "nonce": nonce, "deadline": deadline},
    }
