"""Pure packing core of the submitter: which queued answers go into the next transaction, and its calldata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from kempelen.protocol.signing import to_compact

SUBMIT_ANSWERS_SIGNATURE = "submitAnswers((uint64,uint32,bytes32,address)[],bytes[])"
SUBMIT_ANSWERS_SELECTOR = keccak(text=SUBMIT_ANSWERS_SIGNATURE)[:4]

# Gas of one accepted answer, measured on TaskEscrow (docs/relay.md, "Submitter and recovery"):
# a fresh answer word and count word cost ~45k; answers sharing words with the previous one
# in the pack cost far less. The budget check uses the worst case so a pack never nears the
# block gas limit; the transaction itself is sized by eth_estimateGas.
GAS_PER_ANSWER_WORST = 60_000
GAS_PER_TRANSACTION = 40_000


@dataclass(frozen=True)
class QueuedAnswer:
    """An acknowledged answer waiting in relay_answers (status "accepted") for its transaction."""

    id: int
    batch_id: int
    task_index: int
    worker: str
    answer_digest: bytes
    signature: bytes
    accepted_at: float  # unix seconds

    @property
    def key(self) -> tuple[int, str, int]:
        """How the escrow names an answer: one per (batch, worker, task)."""
        return (self.batch_id, self.worker.lower(), self.task_index)

    def as_tuple(self) -> tuple:
        """The ABI tuple of ITaskEscrow.Answer."""
        return (self.batch_id, self.task_index, self.answer_digest, to_checksum_address(self.worker))


@dataclass(frozen=True)
class PackingPolicy:
    """Size and time bounds of one submitAnswers transaction."""

    max_answers: int = 200
    max_gas: int = 12_000_000  # well under a 30M block: leaves room for other traffic
    flush_after: float = 2.0  # seconds the oldest queued answer may wait for a fuller pack
    compact_signatures: bool = True  # EIP-2098: 64 instead of 65 (padded to 96) bytes each

    def __post_init__(self):
        if self.max_answers < 1:
            raise ValueError("max_answers must be at least 1")
        if self.max_gas < GAS_PER_TRANSACTION + GAS_PER_ANSWER_WORST:
            raise ValueError(f"max_gas must allow at least one answer "
                             f"({GAS_PER_TRANSACTION + GAS_PER_ANSWER_WORST} gas)")
        if self.flush_after < 0:
            raise ValueError("flush_after must not be negative")

    @property
    def capacity(self) -> int:
        """Answers per transaction under both the count and the gas bound."""
        by_gas = (self.max_gas - GAS_PER_TRANSACTION) // GAS_PER_ANSWER_WORST
        return max(1, min(self.max_answers, by_gas))


def choose_pack(queued: Sequence[QueuedAnswer], policy: PackingPolicy, now: float) -> list[QueuedAnswer]:
    """The answers to submit now, in queue order, or [] to wait for a fuller pack.

    `queued` is the head of the queue (oldest first). A pack goes out when it is full or when
    its oldest answer has waited `flush_after` seconds: full packs amortize the transaction's
    base cost, the time bound keeps a trickle of answers from waiting forever.
    """
    if not queued:
        return []
    pack = list(queued[: policy.capacity])
    if len(pack) >= policy.capacity or now - pack[0].accepted_at >= policy.flush_after:
        return pack
    return []


def unencodable(answer: QueuedAnswer) -> str | None:
    """Why the answer cannot even be ABI-encoded (so it must not block its pack), or None."""
    if not 0 <= answer.batch_id < 2**64:
        return "batch id out of uint64 range"
    if not 0 <= answer.task_index < 2**32:
        return "task index out of uint32 range"
    if len(answer.answer_digest) != 32:
        return "answer digest is not 32 bytes"
    worker = answer.worker.removeprefix("0x")
    if len(worker) != 40 or any(c not in "0123456789abcdefABCDEF" for c in worker):
        return "worker is not an address"
    return None


def order_for_gas(pack: Sequence[QueuedAnswer]) -> list[QueuedAnswer]:
    """The pack sorted by batch, worker, task: the escrow caches a batch across a run of answers
    and one storage word holds a worker's 96 consecutive tasks, so neighbours submit cheaper."""
    return sorted(pack, key=lambda a: (a.batch_id, a.worker.lower(), a.task_index, a.id))


def submit_calldata(pack: Sequence[QueuedAnswer], *, compact: bool = True) -> bytes:
    """ABI-encoded `submitAnswers(answers, signatures)` for the pack, in the given order."""
    answers = [a.as_tuple() for a in pack]
    signatures = [_compact(a.signature) if compact else a.signature for a in pack]
    body = abi_encode(["(uint64,uint32,bytes32,address)[]", "bytes[]"], [answers, signatures])
    return SUBMIT_ANSWERS_SELECTOR + body


def _compact(signature: bytes) -> bytes:
    # Only well-formed 65-byte signatures have an EIP-2098 form; anything else goes as it came
    # and the escrow skips it as BadSignature instead of the relay mangling it.
    if len(signature) == 65 and signature[64] in (27, 28):
        return to_compact(signature)
    return signature


def split(pack: Sequence[QueuedAnswer]) -> tuple[list[QueuedAnswer], list[QueuedAnswer]]:
    """Halves of a pack, for isolating an answer that makes a whole transaction revert."""
    middle = len(pack) // 2
    return list(pack[:middle]), list(pack[middle:])
