"""Merkle trees in OpenZeppelin's StandardMerkleTree format: the root a settlement signs, the
proofs workers claim with (OpenZeppelin MerkleProof on-chain), and the JSON standard tools read.

Same algorithm as npm @openzeppelin/merkle-tree 1.0.x, so roots, proofs and dumps are
interchangeable (cross-checked in the tests): leaf = keccak256(keccak256(abi.encode(value)));
leaves sorted by hash; the tree is an array with the root at 0, children of i at 2i+1 and 2i+2,
leaves at the end; a node hashes its two children in ascending byte order.

Settlement trees use EARNINGS_ENCODING: (worker address, cumulative earnings in the batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_hash.auto import keccak
from eth_utils import is_address, to_checksum_address

from kempelen.errors import KempelenError

FORMAT = "standard-v1"
EARNINGS_ENCODING = ("address", "uint256")


class MerkleError(KempelenError):
    """A tree that cannot be built or loaded, or a value that is not in it."""


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(value)))): OpenZeppelin's standard leaf."""
    try:
        encoded = abi_encode(list(leaf_encoding), [_abi_value(t, v) for t, v in zip(leaf_encoding, value, strict=True)])
    except (EncodingError, ValueError, TypeError, OverflowError) as exc:
        raise MerkleError(f"value {list(value)!r} does not encode as {list(leaf_encoding)}: {exc}") from None
    return keccak(keccak(encoded))


def node_hash(a: bytes, b: bytes) -> bytes:
    """A parent node: the children hashed in ascending order (OpenZeppelin's commutative pair hash)."""
    return keccak(a + b if a <= b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    for sibling in proof:
        leaf = node_hash(leaf, sibling)
    return leaf


def verify(root: bytes, leaf_encoding: Sequence[str], value: Sequence, proof: Sequence[bytes]) -> bool:
    """Whether `proof` proves `value` under `root`, as MerkleProof.verify does on-chain."""
    return process_proof(leaf_hash(leaf_encoding, value), [_hash_bytes(p) for p in proof]) == _hash_bytes(root)


@dataclass(frozen=True)
class StandardMerkleTree:
    """A built tree: `tree` holds every node (root first), `values` the leaves' values in the
    order given, `tree_indexes[i]` where value i's leaf sits."""

    leaf_encoding: tuple[str, ...]
    tree: tuple[bytes, ...]
    values: tuple[tuple, ...]
    tree_indexes: tuple[int, ...]

    @classmethod
    def of(cls, values: Sequence[Sequence], leaf_encoding: Sequence[str], sort_leaves: bool = True):
        if not values:
            raise MerkleError("a Merkle tree needs at least one value")
        encoding = tuple(leaf_encoding)
        hashed = [(leaf_hash(encoding, v), i) for i, v in enumerate(values)]
        if sort_leaves:
            hashed.sort(key=lambda pair: pair[0])
        tree = _make_tree([h for h, _ in hashed])
        indexes = [0] * len(values)
        for leaf_index, (_, value_index) in enumerate(hashed):
            indexes[value_index] = len(tree) - 1 - leaf_index
        return cls(encoding, tuple(tree), tuple(tuple(v) for v in values), tuple(indexes))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def leaf(self, index: int) -> bytes:
        return self.tree[self.tree_indexes[index]]

    def proof(self, index: int) -> list[bytes]:
        """Proof of values[index] (the order the values were given in)."""
        if not 0 <= index < len(self.values):
            raise MerkleError(f"no value {index} in a tree of {len(self.values)}")
        proof, node = [], self.tree_indexes[index]
        while node > 0:
            proof.append(self.tree[node + 1 if node % 2 else node - 1])
            node = (node - 1) // 2
        return proof

    def index_of(self, value: Sequence) -> int:
        target = leaf_hash(self.leaf_encoding, value)
        for i in range(len(self.values)):
            if self.leaf(i) == target:
                return i
        raise MerkleError(f"value {list(value)!r} is not in the tree")

    def verify(self, index: int, proof: Sequence[bytes]) -> bool:
        return verify(self.root, self.leaf_encoding, self.values[index], proof)

    def dump(self) -> dict:
        """OpenZeppelin's JSON form (`StandardMerkleTree.load` in JavaScript reads it)."""
        return {
            "format": FORMAT,
            "leafEncoding": list(self.leaf_encoding),
            "tree": ["0x" + node.hex() for node in self.tree],
            "values": [
                {"value": [_json_value(t, v) for t, v in zip(self.leaf_encoding, value)], "treeIndex": index}
                for value, index in zip(self.values, self.tree_indexes)
            ],
        }

    @classmethod
    def load(cls, data: Mapping) -> StandardMerkleTree:
        """A tree from its dump, checked: every node must hash from its children, every value
        to its leaf (a file that fails is refused, never half-trusted)."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise MerkleError(f"not a {FORMAT} Merkle tree dump")
        try:
            encoding = tuple(data["leafEncoding"])
            tree = tuple(_hash_bytes(node) for node in data["tree"])
            values = tuple(tuple(entry["value"]) for entry in data["values"])
            indexes = tuple(int(entry["treeIndex"]) for entry in data["values"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MerkleError(f"malformed Merkle tree dump: {exc!r}") from None
        loaded = cls(encoding, tree, values, indexes)
        loaded.validate()
        return loaded

    def validate(self) -> None:
        tree = self.tree
        leaves = (len(tree) + 1) // 2
        if not tree or len(tree) % 2 == 0:
            raise MerkleError(f"a tree has an odd number of nodes, not {len(tree)}")
        for i in range(len(tree) - leaves):
            if tree[i] != node_hash(tree[2 * i + 1], tree[2 * i + 2]):
                raise MerkleError(f"node {i} is not the hash of its children")
        for value, index in zip(self.values, self.tree_indexes):
            if not len(tree) - leaves <= index < len(tree):
                raise MerkleError(f"tree index {index} is not a leaf")
            if tree[index] != leaf_hash(self.leaf_encoding, value):
                raise MerkleError(f"value {list(value)!r} does not hash to leaf {index}")


def earnings_tree(earnings: Mapping[str, int]) -> StandardMerkleTree:
    """The settlement tree of workers' cumulative earnings in one batch (worker -> amount)."""
    values = [(to_checksum_address(worker), int(amount)) for worker, amount in sorted(earnings.items())]
    return StandardMerkleTree.of(values, EARNINGS_ENCODING)


def _make_tree(leaves: list[bytes]) -> list[bytes]:
    tree: list[bytes] = [b""] * (2 * len(leaves) - 1)
    for i, leaf in enumerate(leaves):
        tree[len(tree) - 1 - i] = leaf
    for i in range(len(tree) - 1 - len(leaves), -1, -1):
        tree[i] = node_hash(tree[2 * i + 1], tree[2 * i + 2])
    return tree


def _hash_bytes(node) -> bytes:
    raw = bytes.fromhex(node.removeprefix("0x")) if isinstance(node, str) else bytes(node)
    if len(raw) != 32:
        raise MerkleError(f"not a 32-byte hash: {node!r}")
    return raw


def _abi_value(abi_type: str, value):
    """JSON-friendly values (decimal strings for integers, hex for bytes) as eth-abi wants them."""
    if abi_type.startswith(("uint", "int")) and isinstance(value, str):
        return int(value, 0)
    if abi_type == "address":
        if not isinstance(value, str) or not is_address(value):
            raise ValueError(f"not an address: {value!r}")
        return to_checksum_address(value)
    if abi_type.startswith("bytes") and isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return value


def _json_value(abi_type: str, value):
    """How a value is written in a dump: addresses checksummed, integers as decimal strings."""
    if abi_type.startswith(("uint", "int")):
        return str(int(value, 0) if isinstance(value, str) else value)
    if abi_type == "address":
        return to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value
