"""Settlement manifests (`kempelen/settlement-manifest/1`): build, parse and verify, no I/O.

A requester's settlement of a batch (ISettlement) names, by CID, a manifest listing every answer
it newly pays with the worker's signature, the workers' cumulative earnings in the batch and the
OpenZeppelin StandardMerkleTree of those earnings whose root the settlement signs. The requester's
SDK builds it (`build_settlement`), workers take their claim from it (`claim_for`) and the auditor
checks it against the chain (`verify_manifest`). The format and its rules: docs/settlement.md.

Nothing here reads the network or a store: the caller passes `cid_of` (bytes -> the CID a content
store gives them, `kempelen.ipfs.unixfs.file_cid`) because protocol code may not import ipfs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from eth_utils import is_address, to_checksum_address

from kempelen.errors import InvalidCID, KempelenError
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.manifest import ManifestError, canonical_json
from kempelen.protocol.merkle import (
    EARNINGS_ENCODING,
    MerkleError,
    StandardMerkleTree,
    earnings_tree,
)
from kempelen.protocol.sealed import SettledBook
from kempelen.protocol.signing import (
    Answer,
    Domain,
    SettledWord,
    Settlement,
    SignatureError,
    recover,
    settled_words,
)

FORMAT = "kempelen/settlement-manifest/1"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_KEYS = frozenset({"format", "chainId", "escrow", "batchId", "sequence", "previous", "token", "reward",
                   "answers", "earnings", "cumulativeTotal", "tree"})
_ANSWER_KEYS = frozenset({"worker", "taskIndex", "answerCid", "answerDigest", "signature"})
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_UINT32, _UINT64, _UINT256 = 2**32, 2**64, 2**256


class SettlementManifestError(ManifestError):
    """A settlement manifest that does not parse, or a settlement that cannot be built."""


class NotInSettlement(KempelenError):
    """The worker has no leaf in this settlement's earnings tree."""


@dataclass(frozen=True)
class ManifestAnswer:
    """One answer a settlement pays: the worker's signed Answer, as the relay received it."""

    worker: str  # checksummed
    task_index: int
    answer_digest: bytes  # sha256 of the answer bytes
    signature: bytes  # 65-byte r||s||v or 64-byte EIP-2098
    answer_cid: str = ""  # defaults to the raw CID of answer_digest (answers are one block)

    def __post_init__(self) -> None:
        if not isinstance(self.worker, str) or not is_address(self.worker):
            raise SettlementManifestError(f"answer worker is not an address: {self.worker!r}")
        object.__setattr__(self, "worker", to_checksum_address(self.worker))
        if not isinstance(self.task_index, int) or isinstance(self.task_index, bool) \
                or not 0 <= self.task_index < _UINT32:
            raise SettlementManifestError(f"task index must be a uint32, not {self.task_index!r}")
        if not isinstance(self.answer_digest, bytes) or len(self.answer_digest) != 32:
            raise SettlementManifestError("answer digest must be 32 bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) not in (64, 65):
            raise SettlementManifestError("answer signature must be 64 or 65 bytes")
        if not self.answer_cid:
            object.__setattr__(self, "answer_cid", str(raw_cid(self.answer_digest)))

    @classmethod
    def of(cls, answer: Answer, signature: bytes) -> ManifestAnswer:
        return cls(answer.worker, answer.task_index, answer.answer_digest, bytes(signature))

    @property
    def key(self) -> tuple[str, int]:
        """The manifest's sort order: worker in lower case, then task index."""
        return (self.worker.lower(), self.task_index)

    def answer(self, batch_id: int) -> Answer:
        return Answer(batch_id, self.task_index, self.answer_digest, self.worker)

    def to_document(self) -> dict:
        return {"worker": self.worker, "taskIndex": self.task_index, "answerCid": self.answer_cid,
                "answerDigest": "0x" + self.answer_digest.hex(), "signature": "0x" + self.signature.hex()}


@dataclass(frozen=True)
class SettlementManifest:
    """A parsed or built manifest. `earnings` are cumulative per worker over the batch's
    settlements so far; `answers` only those this settlement newly pays."""

    chain_id: int
    escrow: str
    batch_id: int
    sequence: int
    previous: str | None  # CID text of the batch's previous settlement manifest
    token: str
    reward: int
    answers: tuple[ManifestAnswer, ...]
    earnings: Mapping[str, int]
    cumulative_total: int
    tree: StandardMerkleTree = field(repr=False)

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def domain(self) -> Domain:
        return Domain(self.chain_id, self.escrow)

    def settled(self) -> tuple[SettledWord, ...]:
        """The `settled` entries a Settlement of these answers carries."""
        return tuple(settled_words((a.worker, a.task_index) for a in self.answers))

    def settlement(self, manifest_cid: CID | str | bytes, book: SettledBook | None = None) -> Settlement:
        """The struct the requester signs for this manifest stored under `manifest_cid`. `book`:
        the batch's settled words before it (from AnswersSettled), whose words of the workers
        paid here the entries restate (kempelen.protocol.sealed); None for the first settlement."""
        settled = self.settled() if book is None else book.restated(self.settled())
        return Settlement(self.batch_id, self.sequence, self.root, self.cumulative_total,
                          CID.parse(manifest_cid).to_bytes(), settled)

    def to_json(self) -> bytes:
        return canonical_json({
            "format": FORMAT,
            "chainId": self.chain_id,
            "escrow": self.escrow,
            "batchId": self.batch_id,
            "sequence": self.sequence,
            "previous": self.previous,
            "token": self.token,
            "reward": str(self.reward),
            "answers": [a.to_document() for a in self.answers],
            "earnings": {worker: str(amount) for worker, amount in self.earnings.items()},
            "cumulativeTotal": str(self.cumulative_total),
            "tree": self.tree.dump(),
        })

    @classmethod
    def from_json(cls, data: bytes | str) -> SettlementManifest:
        """Parse a manifest; malformed input raises SettlementManifestError naming what is wrong.
        Only the form is checked here: `verify_manifest` judges whether the content adds up."""
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SettlementManifestError(f"settlement manifest is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SettlementManifestError(f"not a Kempelen settlement manifest (format must be {FORMAT!r})")
        _exact_keys(document, _KEYS, "settlement manifest")
        previous = document["previous"]
        if previous is not None:
            previous = str(_cid(previous, "previous"))
        answers = document["answers"]
        if not isinstance(answers, list):
            raise SettlementManifestError("answers must be a list")
        earnings = document["earnings"]
        if not isinstance(earnings, dict):
            raise SettlementManifestError("earnings must be an object of worker -> decimal string")
        _check_tree_shape(document["tree"])
        try:
            tree = StandardMerkleTree.load(document["tree"])
        except MerkleError as exc:
            raise SettlementManifestError(f"tree: {exc}") from None
        if tree.leaf_encoding == EARNINGS_ENCODING:  # values as built: (checksummed, int)
            values = tuple((to_checksum_address(w), int(v, 0) if isinstance(v, str) else int(v)) for w, v in tree.values)
            tree = StandardMerkleTree(tree.leaf_encoding, tree.tree, values, tree.tree_indexes)
        return cls(
            chain_id=_uint(document["chainId"], "chainId", _UINT256),
            escrow=_address(document["escrow"], "escrow"),
            batch_id=_uint(document["batchId"], "batchId", _UINT64),
            sequence=_uint(document["sequence"], "sequence", _UINT32),
            previous=previous,
            token=_address(document["token"], "token"),
            reward=_decimal(document["reward"], "reward"),
            answers=tuple(_parse_answer(entry, i) for i, entry in enumerate(answers)),
            earnings={_address(w, "earnings key"): _decimal(v, f"earnings[{w}]") for w, v in earnings.items()},
            cumulative_total=_decimal(document["cumulativeTotal"], "cumulativeTotal"),
            tree=tree,
        )


def build_settlement(
    previous: SettlementManifest | None,
    answers: Iterable,
    *,
    domain: Domain,
    batch_id: int,
    token: str,
    reward: int,
    cid_of: Callable[[bytes], CID],
    previous_cid: str | CID | None = None,
    sequence: int | None = None,
) -> tuple[Settlement, SettlementManifest]:
    """The next settlement of a batch and its manifest, paying `answers` on top of `previous`.

    `answers` are ManifestAnswers, SignedAnswer-likes (`.answer`, `.signature`) or (Answer,
    signature) pairs; each must be a valid signature of its worker for this batch and domain,
    and none may repeat or be in `previous`. `cid_of` gives the CID the content store will give
    the manifest's bytes. `previous_cid` defaults to cid_of(previous.to_json()); `sequence` to
    the previous one + 1 (or 1). The result verifies with verify_manifest.
    """
    if reward <= 0:
        raise SettlementManifestError("the batch's reward must be positive")
    new = sorted((_as_manifest_answer(a) for a in answers), key=lambda a: a.key)
    if not new:
        raise SettlementManifestError("nothing to settle: no answers given")
    escrow, token = to_checksum_address(domain.escrow), to_checksum_address(token)
    for answer in new:
        problem = _signature_problem(domain, batch_id, answer)
        if problem:
            raise SettlementManifestError(problem)
    seen = {a.key for a in previous.answers} if previous else set()
    for answer in new:
        if answer.key in seen:
            raise SettlementManifestError(
                f"answer of {answer.worker} to task {answer.task_index} is settled twice")
        seen.add(answer.key)

    if previous is not None:
        for name, ours, theirs in (("chain", domain.chain_id, previous.chain_id), ("escrow", escrow, previous.escrow),
                                   ("batch", batch_id, previous.batch_id), ("token", token, previous.token),
                                   ("reward", reward, previous.reward)):
            if ours != theirs:
                raise SettlementManifestError(f"previous manifest is for {name} {theirs}, not {ours}")
        previous_cid = str(CID.parse(previous_cid) if previous_cid else cid_of(previous.to_json()))
    elif previous_cid is not None:
        raise SettlementManifestError("previous_cid given without the previous manifest")
    last = previous.sequence if previous else 0
    sequence = last + 1 if sequence is None else sequence
    if not last < sequence < _UINT32:
        raise SettlementManifestError(f"sequence {sequence} must be above the previous one ({last}) and a uint32")

    earnings = dict(previous.earnings) if previous else {}
    for answer in new:
        earnings[answer.worker] = earnings.get(answer.worker, 0) + reward
    earnings = dict(sorted(earnings.items()))
    manifest = SettlementManifest(
        chain_id=domain.chain_id, escrow=escrow, batch_id=batch_id, sequence=sequence,
        previous=previous_cid, token=token, reward=reward, answers=tuple(new), earnings=earnings,
        cumulative_total=sum(earnings.values()), tree=earnings_tree(earnings),
    )
    return manifest.settlement(cid_of(manifest.to_json())), manifest


def claim_for(manifest: SettlementManifest, worker: str) -> tuple[int, list[bytes]]:
    """(cumulative earnings, Merkle proof) of `worker` in this settlement, for claim/claimMany."""
    if not is_address(worker):
        raise SettlementManifestError(f"not an address: {worker!r}")
    worker = to_checksum_address(worker)
    for index, (address, amount) in enumerate(manifest.tree.values):
        if to_checksum_address(address) == worker:
            return int(amount), manifest.tree.proof(index)
    raise NotInSettlement(f"{worker} earned nothing in settlement {manifest.sequence} of batch {manifest.batch_id}")


def verify_manifest(
    manifest: SettlementManifest,
    previous: SettlementManifest | None = None,
    *,
    settlement: Settlement | None = None,
    domain: Domain | None = None,
    reward: int | None = None,
    token: str | None = None,
    task_count: int | None = None,
    previous_cid: str | None = None,
) -> list[str]:
    """Every way the manifest fails its rules, as sentences (empty: it is sound).

    Checks what the manifest alone can prove (answers sorted and unique, each signature
    recovering to its worker under the manifest's domain, answer CIDs matching digests, earnings
    = previous + reward x new answers, the total, tree values and root) and, where given, agreement
    with the previous manifest (`previous_cid`: the CID the manifest must name), the posted
    `settlement` (from SettlementPosted + AnswersSettled, or the signed struct: batch, sequence,
    root, total, manifest CID is not compared — hash the bytes for that — and settled words),
    the escrow's `domain` and the batch's `reward`, `token` and `task_count`.
    """
    problems: list[str] = []
    domain_here = manifest.domain
    if domain is not None and (domain.chain_id, to_checksum_address(domain.escrow)) != (
            domain_here.chain_id, domain_here.escrow):
        problems.append(f"manifest is for chain {manifest.chain_id} escrow {manifest.escrow}, "
                        f"not chain {domain.chain_id} escrow {to_checksum_address(domain.escrow)}")
    if reward is not None and manifest.reward != reward:
        problems.append(f"manifest reward {manifest.reward} is not the batch's reward {reward}")
    if token is not None and manifest.token != to_checksum_address(token):
        problems.append(f"manifest token {manifest.token} is not the batch's token {to_checksum_address(token)}")
    if manifest.reward <= 0:
        problems.append("manifest reward must be positive")
    problems += _previous_problems(manifest, previous, previous_cid)
    problems += _answer_problems(manifest, domain_here, previous, task_count)
    problems += _earnings_problems(manifest, previous)
    if settlement is not None:
        problems += _settlement_problems(manifest, settlement)
    return problems


def settled_words_of_event(settled) -> tuple[SettledWord, ...]:
    """The `settled` argument of an AnswersSettled event (web3.py gives each entry as a tuple or
    as a dict by field name, depending on the decoder) as SettledWords."""
    words = []
    for entry in settled:
        if isinstance(entry, Mapping):
            worker, word_index, bits = entry["worker"], entry["wordIndex"], entry["bits"]
        else:
            worker, word_index, bits = entry
        words.append(SettledWord(to_checksum_address(worker), int(word_index), int(bits)))
    return tuple(words)


# ------------------------------------------------------------------------------- verification


def _previous_problems(manifest, previous, previous_cid) -> list[str]:
    if previous is None:
        if manifest.previous is not None:
            return [f"manifest names previous manifest {manifest.previous}, which was not given"]
        return []
    problems = []
    if manifest.previous is None:
        problems.append(f"manifest names no previous manifest, but settlement {previous.sequence} precedes it")
    elif previous_cid is not None and manifest.previous != str(CID.parse(previous_cid)):
        problems.append(f"manifest names previous manifest {manifest.previous}, not {CID.parse(previous_cid)}")
    for name in ("chain_id", "escrow", "batch_id", "token", "reward"):
        if getattr(manifest, name) != getattr(previous, name):
            problems.append(f"{name} {getattr(manifest, name)} differs from the previous manifest's "
                            f"{getattr(previous, name)}")
    if manifest.sequence <= previous.sequence:
        problems.append(f"sequence {manifest.sequence} is not above the previous manifest's {previous.sequence}")
    return problems


def _answer_problems(manifest, domain, previous, task_count) -> list[str]:
    problems = []
    keys = [a.key for a in manifest.answers]
    if keys != sorted(keys):
        problems.append("answers are not sorted by (worker, taskIndex)")
    if len(set(keys)) != len(keys):
        problems.append("an answer is listed twice")
    earlier = {a.key for a in previous.answers} if previous else set()
    for answer in manifest.answers:
        where = f"answer of {answer.worker} to task {answer.task_index}"
        if answer.key in earlier:
            problems.append(f"{where} was already paid by the previous settlement")
        if task_count is not None and answer.task_index >= task_count:
            problems.append(f"{where}: the batch has only {task_count} tasks")
        if answer.answer_cid != str(raw_cid(answer.answer_digest)):
            problems.append(f"{where}: answerCid {answer.answer_cid} is not the raw CID of answerDigest")
        problem = _signature_problem(domain, manifest.batch_id, answer)
        if problem:
            problems.append(problem)
    return problems


def _earnings_problems(manifest, previous) -> list[str]:
    problems = []
    expected = dict(previous.earnings) if previous else {}
    for answer in manifest.answers:
        expected[answer.worker] = expected.get(answer.worker, 0) + manifest.reward
    for worker in sorted(set(expected) | set(manifest.earnings)):
        have, want = manifest.earnings.get(worker), expected.get(worker)
        if have != want:
            problems.append(f"earnings of {worker} are {have}, expected {want} "
                            f"(previous earnings + reward x new answers)")
    total = sum(manifest.earnings.values())
    if manifest.cumulative_total != total:
        problems.append(f"cumulativeTotal {manifest.cumulative_total} is not the sum of earnings {total}")
    if previous is not None:
        expected_total = previous.cumulative_total + manifest.reward * len(manifest.answers)
        if manifest.cumulative_total != expected_total:
            problems.append(f"cumulativeTotal {manifest.cumulative_total} is not the previous total + "
                            f"reward x new answers ({expected_total})")
    if manifest.tree.leaf_encoding != EARNINGS_ENCODING:
        problems.append(f"tree leafEncoding {list(manifest.tree.leaf_encoding)} is not {list(EARNINGS_ENCODING)}")
        return problems
    leaves = {}
    for address, amount in manifest.tree.values:
        worker = to_checksum_address(address)
        if worker in leaves:
            problems.append(f"tree has two leaves for {worker}")
        leaves[worker] = int(amount)
    if leaves != dict(manifest.earnings):
        problems.append("tree values are not the earnings")
    elif manifest.earnings and manifest.root != earnings_tree(manifest.earnings).root:
        # A consistent tree of the same values can still differ: unsorted leaves, or extra leaves
        # no value points at (a hidden claim). Only the standard tree of the earnings counts.
        problems.append("tree root is not the standard tree root of the earnings")
    return problems


def _settlement_problems(manifest, settlement: Settlement) -> list[str]:
    problems = []
    pairs = (("batchId", manifest.batch_id, settlement.batch_id), ("sequence", manifest.sequence, settlement.sequence),
             ("cumulativeTotal", manifest.cumulative_total, settlement.cumulative_total))
    for name, ours, posted in pairs:
        if ours != posted:
            problems.append(f"manifest {name} {ours} is not the settlement's {posted}")
    if manifest.root != bytes(settlement.root):
        problems.append(f"tree root 0x{manifest.root.hex()} is not the settlement's root 0x{bytes(settlement.root).hex()}")
    try:
        words = manifest.settled()
    except KempelenError as exc:
        return [*problems, f"answers do not pack into settled words: {exc}"]
    # Entries with no bits restate a worker's earlier words (for the escrow's digest check): they
    # pay nothing, and the escrow itself refuses any that do not match the worker's digest.
    posted = tuple(SettledWord(to_checksum_address(w.worker), w.word_index, w.bits)
                   for w in settlement.settled if w.bits)
    if words != posted:
        problems.append("the settlement's settled words are not the manifest's answers")
    return problems


def _signature_problem(domain: Domain, batch_id: int, answer: ManifestAnswer) -> str | None:
    where = f"answer of {answer.worker} to task {answer.task_index}"
    try:
        signer = recover(domain.digest(answer.answer(batch_id).struct_hash()), answer.signature)
    except SignatureError as exc:
        return f"{where}: bad signature ({exc})"
    if signer != answer.worker:
        return f"{where}: signature recovers to {signer}, not the worker"
    return None


# ------------------------------------------------------------------------------- parsing


def _as_manifest_answer(value) -> ManifestAnswer:
    if isinstance(value, ManifestAnswer):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Answer):
        return ManifestAnswer.of(value[0], value[1])
    if isinstance(getattr(value, "answer", None), Answer) and isinstance(getattr(value, "signature", None), bytes):
        return ManifestAnswer.of(value.answer, value.signature)
    raise SettlementManifestError(f"not a signed answer: {type(value).__name__}")


def _parse_answer(entry, index: int) -> ManifestAnswer:
    where = f"answers[{index}]"
    if not isinstance(entry, dict):
        raise SettlementManifestError(f"{where} must be an object")
    _exact_keys(entry, _ANSWER_KEYS, where)
    return ManifestAnswer(
        worker=_address(entry["worker"], f"{where}.worker"),
        task_index=_uint(entry["taskIndex"], f"{where}.taskIndex", _UINT32),
        answer_digest=_hex(entry["answerDigest"], f"{where}.answerDigest", (32,)),
        signature=_hex(entry["signature"], f"{where}.signature", (64, 65)),
        answer_cid=str(_cid(entry["answerCid"], f"{where}.answerCid")),
    )


def _check_tree_shape(tree) -> None:
    """The JSON types of a StandardMerkleTree dump, before the merkle module hashes anything."""
    if not isinstance(tree, dict):
        raise SettlementManifestError("tree must be a StandardMerkleTree dump (an object)")
    _exact_keys(tree, frozenset({"format", "leafEncoding", "tree", "values"}), "tree")
    encoding, nodes, values = tree["leafEncoding"], tree["tree"], tree["values"]
    if not isinstance(encoding, list) or not all(isinstance(t, str) for t in encoding):
        raise SettlementManifestError("tree.leafEncoding must be a list of ABI type names")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise SettlementManifestError("tree.tree must be a list of 0x hashes")
    if not isinstance(values, list) or not all(
            isinstance(v, dict) and v.keys() == {"value", "treeIndex"} and isinstance(v["value"], list)
            and isinstance(v["treeIndex"], int) and not isinstance(v["treeIndex"], bool) for v in values):
        raise SettlementManifestError("tree.values must be a list of {value: [...], treeIndex: integer}")


def _exact_keys(document: dict, keys: frozenset, where: str) -> None:
    missing, extra = keys - document.keys(), document.keys() - keys
    if missing:
        raise SettlementManifestError(f"{where} lacks {', '.join(sorted(missing))}")
    if extra:
        raise SettlementManifestError(f"{where} has unknown field(s) {', '.join(sorted(extra))}")


def _uint(value, name: str, bound: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < bound:
        raise SettlementManifestError(f"{name} must be an integer from 0 to {bound - 1}, not {value!r}")
    return value


def _decimal(value, name: str) -> int:
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value) or int(value) >= _UINT256:
        raise SettlementManifestError(f"{name} must be a decimal string of a uint256, not {value!r}")
    return int(value)


def _address(value, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("0x") or not is_address(value):
        raise SettlementManifestError(f"{name} must be a 0x address, not {value!r}")
    return to_checksum_address(value)


def _hex(value, name: str, lengths: tuple[int, ...]) -> bytes:
    try:
        if not isinstance(value, str) or not value.startswith("0x"):
            raise ValueError
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise SettlementManifestError(f"{name} must be 0x-prefixed hex, not {value!r}") from None
    if len(raw) not in lengths:
        raise SettlementManifestError(f"{name} must be {' or '.join(map(str, lengths))} bytes, not {len(raw)}")
    return raw


def _cid(value, name: str) -> CID:
    if not isinstance(value, str):
        raise SettlementManifestError(f"{name} must be a CID string, not {value!r}")
    try:
        return CID.parse(value)
    except InvalidCID as exc:
        raise SettlementManifestError(f"{name}: {exc}") from None
