"""kempelen.protocol.merkle against an independent implementation: npm @openzeppelin/merkle-tree.

Roots, every proof and the JSON dump must be identical for the same values, and each side must
load and verify the other's dumps. Also the settlement pieces of kempelen.protocol.signing
(Settlement digest against eth-account's generic EIP-712 encoder, settled_words packing).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak

from kempelen.errors import KempelenError
from kempelen.protocol.merkle import (
    EARNINGS_ENCODING,
    MerkleError,
    StandardMerkleTree,
    earnings_tree,
    leaf_hash,
    verify,
)
from kempelen.protocol.signing import (
    Domain,
    SettledWord,
    Settlement,
    settled_words,
)

CHECK_JS = Path(__file__).parent / "merkle_js" / "check.mjs"
REPO = Path(__file__).resolve().parents[2]


def _node(mode: str, payload: dict) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the independent Merkle checks (make bootstrap)")
    result = subprocess.run(
        [node, str(CHECK_JS), mode], input=json.dumps(payload), capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"node check.mjs {mode} failed: {result.stderr}")
    return json.loads(result.stdout)


def _address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def _earnings(rng: random.Random, n: int) -> list[tuple[str, int]]:
    """n workers with amounts from 1 wei to 2^200, some repeated amounts."""
    return [(_address(rng), rng.choice([1, 10**6, rng.randrange(1, 2**200)])) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 33, 257])
def test_root_proofs_and_dump_equal_openzeppelin(n):
    rng = random.Random(n)
    values = _earnings(rng, n)
    tree = StandardMerkleTree.of(values, EARNINGS_ENCODING)
    theirs = _node("build", {"leafEncoding": list(EARNINGS_ENCODING), "values": [[a, str(x)] for a, x in values]})

    assert "0x" + tree.root.hex() == theirs["root"]
    assert [["0x" + p.hex() for p in tree.proof(i)] for i in range(n)] == theirs["proofs"]
    ours = tree.dump()
    assert ours["tree"] == theirs["dump"]["tree"]
    assert [v["treeIndex"] for v in ours["values"]] == [v["treeIndex"] for v in theirs["dump"]["values"]]
    assert [[v["value"][0].lower(), v["value"][1]] for v in ours["values"]] == [
        [a.lower(), s] for a, s in (v["value"] for v in theirs["dump"]["values"])
    ]
    for i in range(n):
        assert tree.verify(i, tree.proof(i))


def test_openzeppelin_loads_our_dump_and_we_load_theirs():
    rng = random.Random(7)
    values = _earnings(rng, 12)
    ours = StandardMerkleTree.of(values, EARNINGS_ENCODING)
    loaded_by_them = _node("load", ours.dump())
    assert loaded_by_them["valid"] is True
    assert loaded_by_them["root"] == "0x" + ours.root.hex()

    theirs = _node("build", {"leafEncoding": list(EARNINGS_ENCODING), "values": [[a, str(x)] for a, x in values]})
    loaded = StandardMerkleTree.load(theirs["dump"])
    assert loaded.root == ours.root
    assert all(loaded.verify(i, loaded.proof(i)) for i in range(len(values)))


def test_other_leaf_encodings_match_openzeppelin():
    rng = random.Random(3)
    encoding = ["uint64", "address", "bytes32", "uint256"]
    values = [[rng.randrange(2**64), _address(rng), "0x" + rng.randbytes(32).hex(), rng.randrange(2**256)]
              for _ in range(9)]
    tree = StandardMerkleTree.of(values, encoding)
    theirs = _node("build", {"leafEncoding": encoding, "values": [[str(a), b, c, str(d)] for a, b, c, d in values]})
    assert "0x" + tree.root.hex() == theirs["root"]


def test_proofs_fail_for_other_values_and_roots():
    values = [("0x" + "11" * 20, 5), ("0x" + "22" * 20, 7), ("0x" + "33" * 20, 9)]
    tree = StandardMerkleTree.of(values, EARNINGS_ENCODING)
    proof = tree.proof(1)
    assert verify(tree.root, EARNINGS_ENCODING, values[1], proof)
    assert not verify(tree.root, EARNINGS_ENCODING, (values[1][0], 8), proof)
    assert not verify(tree.root, EARNINGS_ENCODING, values[0], proof)
    assert not verify(keccak(b"other root"), EARNINGS_ENCODING, values[1], proof)
    assert tree.index_of(values[2]) == 2
    with pytest.raises(MerkleError):
        tree.index_of((values[2][0], 10))


def test_earnings_tree_is_order_independent():
    a = {"0x" + "11" * 20: 5, "0x" + "22" * 20: 7}
    b = dict(reversed(list(a.items())))
    assert earnings_tree(a).root == earnings_tree(b).root


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="standard-v2"),
        lambda d: d["tree"].__setitem__(0, "0x" + "00" * 32),
        lambda d: d["values"][0].__setitem__("value", [d["values"][0]["value"][0], "999"]),
        lambda d: d["values"][0].__setitem__("treeIndex", 0),
        lambda d: d["tree"].__setitem__(1, "0x1234"),
        lambda d: d.pop("values"),
    ],
    ids=["format", "root", "value", "tree_index", "short_hash", "missing_values"],
)
def test_load_refuses_tampered_dumps(mutate):
    dump = StandardMerkleTree.of([("0x" + "11" * 20, 5), ("0x" + "22" * 20, 7)], EARNINGS_ENCODING).dump()
    mutate(dump)
    with pytest.raises(MerkleError):
        StandardMerkleTree.load(dump)


def test_bad_values_raise_merkle_errors():
    with pytest.raises(MerkleError):
        StandardMerkleTree.of([], EARNINGS_ENCODING)
    with pytest.raises(MerkleError):
        leaf_hash(EARNINGS_ENCODING, ("not an address", 5))
    with pytest.raises(MerkleError):
        leaf_hash(EARNINGS_ENCODING, ("0x" + "11" * 20, -1))
    with pytest.raises(MerkleError):
        leaf_hash(EARNINGS_ENCODING, ("0x" + "11" * 20,))
    with pytest.raises(MerkleError):
        StandardMerkleTree.of([("0x" + "11" * 20, 5)], EARNINGS_ENCODING).proof(1)


# ------------------------------------------------------------------ settlement messages


def test_settlement_digest_equals_eth_account_typed_data():
    rng = random.Random(11)
    domain = Domain(31337, "0x" + "ab" * 20)
    settled = tuple(SettledWord(_address(rng), rng.randrange(5), rng.randrange(2**192)) for _ in range(4))
    settled += (SettledWord(settled[0].worker, 7, 0),)  # an entry restating an earlier word: no bits
    settlement = Settlement(rng.randrange(2**64), rng.randrange(1, 2**32), rng.randbytes(32),
                            rng.randrange(2**200), b"\x01\x55\x12\x20" + rng.randbytes(32), settled)
    signable = encode_typed_data(full_message=settlement.typed_data(domain))
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == domain.digest(settlement.struct_hash())

    empty = Settlement(1, 1, rng.randbytes(32), 0, b"", ())
    signable = encode_typed_data(full_message=empty.typed_data(domain))
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == domain.digest(empty.struct_hash())


def test_settled_words_pack_sorted_by_worker_and_word():
    low, high = "0x" + "01" * 20, "0x" + "ff" * 20
    words = settled_words([(high, 0), (low, 193), (low, 0), (low, 191), (high, 400)])
    assert [(w.worker.lower(), w.word_index, w.bits) for w in words] == [
        (low, 0, 1 | 1 << 191),
        (low, 1, 1 << 1),
        (high, 0, 1),
        (high, 2, 1 << 16),
    ]
    assert words[0].task_indexes() == [0, 191]
    assert Settlement(1, 1, bytes(32), 0, b"", tuple(words)).answer_count() == 5
    with pytest.raises(KempelenError):
        settled_words([(low, 3), (low, 3)])
    with pytest.raises(KempelenError):
        settled_words([(low, -1)])
