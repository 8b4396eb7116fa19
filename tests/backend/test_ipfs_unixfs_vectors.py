"""Our `ipfs add` CIDs against independent ones.

Two sources, neither computed by Kempelen:
- published Kubo CIDs (empty file, "hello"), hard-coded;
- js-ipfs-unixfs `ipfs-unixfs-importer` 17.1.1 (pinned in package.json), run live
  through tests/backend/ipfs_js/check.mjs with Kubo's `ipfs add` settings
  (256 KiB fixed chunks, balanced DAG of 174 links; raw leaves for CIDv1).
"""

import hashlib

import pytest
from ipfs_helpers import PatternStream, node_check, payload
from kempelen.ipfs import pb
from kempelen.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, file_cid, import_bytes, import_stream
from kempelen.protocol.cid import CID, DAG_PB

KiB = 1024


@pytest.mark.parametrize(
    ("data", "version", "expected"),
    [
        (b"", 1, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
        (b"", 0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
        (b"hello", 1, "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"),
        # `echo -n hello | ipfs add` → QmWfVY9y3xjsixTgbd9AorQxH7VtMpzfx2HaWtsoUYecaX (Kubo, widely quoted)
        (b"hello", 0, "QmWfVY9y3xjsixTgbd9AorQxH7VtMpzfx2HaWtsoUYecaX"),
        # `echo hello world | ipfs add` (with the newline): the IPFS docs' first example
        (b"hello world\n", 0, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
    ],
)
def test_published_kubo_cids(data, version, expected):
    assert str(file_cid(data, version)) == expected


SIZES = {
    "one byte": 1,
    "a few bytes": 11,
    "256 KiB - 1": CHUNK_SIZE - 1,
    "exactly 256 KiB": CHUNK_SIZE,
    "256 KiB + 1": CHUNK_SIZE + 1,
    "several MiB, ragged": 5 * 1024 * KiB + 7,
    "174 chunks: one full node": MAX_LINKS * CHUNK_SIZE,
    "174 chunks + 1 byte: second DAG level": MAX_LINKS * CHUNK_SIZE + 1,
    "175 chunks": (MAX_LINKS + 1) * CHUNK_SIZE,
}


@pytest.mark.parametrize("version", [1, 0])
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_matches_js_ipfs_unixfs_importer(tmp_path, size, version):
    data = payload(size, seed=b"vector%d" % size)
    path = tmp_path / "payload"
    path.write_bytes(data)
    theirs = node_check("cid", str(path), str(version))
    assert str(file_cid(data, version)) == theirs


@pytest.mark.parametrize("version", [1, 0])
def test_deep_trees_match_js_importer_with_small_chunks(tmp_path, version):
    # Reaching a fourth DAG level with 256 KiB chunks takes 174^3 chunks (~1.3 TB),
    # so check the tree-shaping logic with 4-byte chunks and 3 links per node instead.
    for chunks in (1, 3, 4, 9, 10, 27, 28, 30, 82):
        data = payload(4 * chunks - 1, seed=b"deep%d" % chunks)
        path = tmp_path / f"payload{chunks}"
        path.write_bytes(data)
        theirs = node_check("cid", str(path), str(version), "4", "3")
        ours = import_bytes(data, lambda c, b: None, version, chunk_size=4, max_links=3)
        assert str(ours) == theirs, f"{chunks} chunks"


def test_stream_with_short_reads_gives_the_same_cid():
    size = 3 * CHUNK_SIZE + 12345
    expected = file_cid(PatternStream(size, short_reads=False).read())
    assert import_stream(PatternStream(size, short_reads=True), lambda c, b: None) == expected


def test_two_level_root_layout_is_kubos():
    # Root of a 175-chunk file: 2 links (a full 174-leaf node, then a 1-leaf node).
    blocks: dict[CID, bytes] = {}
    data = payload((MAX_LINKS + 1) * CHUNK_SIZE, seed=b"layout")
    root = import_bytes(data, lambda c, b: blocks.__setitem__(c, bytes(b)))
    node = pb.decode_node(blocks[root])
    assert [len(pb.decode_node(blocks[link.cid]).links) for link in node.links] == [174, 1]
    unixfs = pb.decode_unixfs(node.data)
    assert unixfs.filesize == len(data)
    assert unixfs.blocksizes == (174 * CHUNK_SIZE, CHUNK_SIZE)
    assert root.codec == DAG_PB
    assert all(hashlib.sha256(b).digest() == c.digest for c, b in blocks.items())
