"""Walking a UnixFS DAG: its blocks in CAR order, and a file's bytes in order.

Takes a `get_block(cid) -> bytes` that verifies hashes (the blockstore, or a
verifying fetcher), so a walk is only as trusted as the hashes it checked.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

from kempelen.ipfs import pb
from kempelen.ipfs.errors import MalformedBlock, NotAFile
from kempelen.protocol.cid import CID, DAG_PB, RAW

GetBlock = Callable[[CID], bytes]


def links_of(cid: CID, block: bytes) -> tuple[CID, ...]:
    if cid.codec == DAG_PB:
        return tuple(link.cid for link in pb.decode_node(block).links)
    return ()


def walk_blocks(get_block: GetBlock, root: CID) -> Iterator[tuple[CID, bytes]]:
    """Every block of the DAG, depth-first, parents before children (CAR `order=dfs`).

    Blocks reached twice (a file with repeated chunks) are yielded once, like
    Kubo's CAR export (`dups=n`).
    """
    seen: set[bytes] = set()
    stack: list[CID] = [root]
    while stack:
        cid = stack.pop()
        if cid.multihash in seen:
            continue
        seen.add(cid.multihash)
        block = get_block(cid)
        yield cid, block
        stack.extend(reversed(links_of(cid, block)))


def _file_node(cid: CID, block: bytes) -> tuple[pb.PBNode, pb.UnixFSData]:
    node = pb.decode_node(block)
    if node.data is None:
        raise MalformedBlock(f"{cid} is dag-pb without UnixFS data")
    unixfs = pb.decode_unixfs(node.data)
    if unixfs.type not in (pb.UNIXFS_FILE, pb.UNIXFS_RAW):
        raise NotAFile(f"{cid} is not a UnixFS file (type {unixfs.type})")
    return node, unixfs


def file_size(get_block: GetBlock, root: CID) -> int:
    """The file's length in bytes, from its root block alone."""
    block = get_block(root)
    if root.codec == RAW:
        return len(block)
    _node, unixfs = _file_node(root, block)
    return unixfs.filesize if unixfs.filesize is not None else len(unixfs.data)


def iter_file(get_block: GetBlock, root: CID) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk; memory bounded by the tree depth."""
    stack: list[CID] = [root]
    while stack:
        cid = stack.pop()
        block = get_block(cid)
        if cid.codec == RAW:
            if block:
                yield block
            continue
        if cid.codec != DAG_PB:
            raise NotAFile(f"{cid} is neither raw nor dag-pb")
        node, unixfs = _file_node(cid, block)
        if unixfs.data:  # a node may carry bytes ahead of its children
            yield unixfs.data
        stack.extend(reversed([link.cid for link in node.links]))


class FileReader(io.RawIOBase):
    """A read-only stream over a stored file; blocks are fetched and verified lazily."""

    def __init__(self, get_block: GetBlock, root: CID) -> None:
        self._chunks = iter_file(get_block, root)
        self._pending = memoryview(b"")
        self.cid = root

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
