"""Sealed settled words: what the escrow remembers of a batch's settlements, computed off-chain.

The escrow does not store which tasks a worker's settlements paid (ISettlement). Per (batch,
worker) it keeps counts and a 192-bit digest of the worker's settled words:

    chain_0 = 0;  chain_k+1 = uint192(keccak256(abi.encode(chain_k, wordIndex, word)))

over its nonzero words in ascending word index (bit b of word w = task 192 * w + b). The words are
public in the batch's AnswersSettled events, so anyone rebuilds them (`SettledBook`) and gives the
escrow what it checks against the digest:

- `settle(settlement, before, signature)`: the signed entries restate every earlier word of each
  worker the settlement pays (`restated`, bits 0 where nothing is new), and `before[i]` is the
  worker's earlier bits in entry i's word (`before`).
- `openSettled(batchId, worker, words)`: all of a worker's words, dense from word 0 (`open_words`),
  after which its unsettled answers can take the direct path. The escrow then keeps that worker's
  words in storage: later settlements of it need no restating and the escrow ignores their
  `before`.

Pure functions: no chain access here (the SDK, relay and auditor feed in events).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from kempelen.errors import KempelenError
from kempelen.protocol.signing import TASKS_PER_SETTLED_WORD, SettledWord

DIGEST_BITS = 192
DIGEST_MASK = (1 << DIGEST_BITS) - 1


def settled_digest(words: Mapping[int, int]) -> int:
    """The escrow's digest of one worker's settled words (word index -> bits); 0 for none."""
    digest = 0
    for word_index in sorted(words):
        word = words[word_index]
        if word:
            digest = int.from_bytes(keccak(digest.to_bytes(32, "big") + word_index.to_bytes(32, "big")
                                           + word.to_bytes(32, "big")), "big") & DIGEST_MASK
    return digest


def open_words(words: Mapping[int, int]) -> list[int]:
    """`openSettled`'s `words` argument: word j at index j, from 0 to the highest nonzero word."""
    top = max((i for i, w in words.items() if w), default=-1)
    return [words.get(i, 0) for i in range(top + 1)]


@dataclass
class SettledBook:
    """A batch's settled words per worker (checksummed address -> word index -> bits), and which
    workers' words were opened (SettledWordsOpened): rebuilt from the batch's events in order."""

    words: dict[str, dict[int, int]] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, entries: Iterable[SettledWord], opened: Iterable[str] = ()) -> SettledBook:
        book = cls()
        book.add(entries)
        book.opened = {to_checksum_address(w) for w in opened}
        return book

    def add(self, entries: Iterable[SettledWord]) -> None:
        """Applies one settlement's entries (restating entries with bits 0 add nothing)."""
        for entry in entries:
            if entry.bits:
                worker = self.words.setdefault(to_checksum_address(entry.worker), {})
                worker[entry.word_index] = worker.get(entry.word_index, 0) | entry.bits

    def of_worker(self, worker: str) -> dict[int, int]:
        return dict(self.words.get(to_checksum_address(worker), {}))

    def is_settled(self, worker: str, task_index: int) -> bool:
        word = self.words.get(to_checksum_address(worker), {}).get(task_index // TASKS_PER_SETTLED_WORD, 0)
        return bool(word >> (task_index % TASKS_PER_SETTLED_WORD) & 1)

    def is_sealed(self, worker: str) -> bool:
        """The worker has settled words the escrow holds only as a digest: its answers in the batch
        are skipped (SkipReason.SettlementSealed) until they are opened."""
        worker = to_checksum_address(worker)
        return bool(self.words.get(worker)) and worker not in self.opened

    def digest(self, worker: str) -> int:
        return settled_digest(self.words.get(to_checksum_address(worker), {}))

    def restated(self, new: Iterable[SettledWord]) -> tuple[SettledWord, ...]:
        """The signed `settled` entries of a settlement paying the `new` words (settled_words of
        its answers): for each sealed worker in them, every earlier word of that worker is there
        too (bits 0 if nothing new), sorted as the escrow requires; an opened worker's words are
        in storage, so its entries are only the new ones. Refuses an answer already settled."""
        by_key: dict[tuple[int, int], SettledWord] = {}
        workers = set()
        for entry in new:
            worker = to_checksum_address(entry.worker)
            overlap = self.words.get(worker, {}).get(entry.word_index, 0) & entry.bits
            if overlap:
                task = entry.word_index * TASKS_PER_SETTLED_WORD + (overlap & -overlap).bit_length() - 1
                raise KempelenError(f"the answer of {worker} to task {task} is already settled")
            by_key[(int(worker, 16), entry.word_index)] = SettledWord(worker, entry.word_index, entry.bits)
            if worker not in self.opened:
                workers.add(worker)
        for worker in workers:
            for word_index in self.words.get(worker, {}):
                by_key.setdefault((int(worker, 16), word_index), SettledWord(worker, word_index, 0))
        return tuple(by_key[key] for key in sorted(by_key))

    def before(self, entries: Iterable[SettledWord]) -> list[int]:
        """`settle`'s `before` argument for the signed entries: each worker's earlier bits in the
        entry's word (what the escrow checks for a sealed worker and ignores for an opened one)."""
        return [self.words.get(to_checksum_address(e.worker), {}).get(e.word_index, 0) for e in entries]
