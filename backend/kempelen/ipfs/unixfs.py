"""The UnixFS file importer: bytes in, blocks out, exactly as Kubo's `ipfs add` defaults.

Fixed 256 KiB chunks, balanced DAG of at most 174 links per node, sha2-256.
CIDv1 uses raw leaves (`ipfs add --cid-version 1`); CIDv0 wraps each leaf in a
dag-pb UnixFS File node (`ipfs add`). Pure apart from the `emit` callback that
receives each block as soon as it exists, so memory stays flat in file size:
at most 174 pending links per tree level, and one reused chunk buffer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from kempelen.ipfs import pb
from kempelen.protocol.cid import CID, DAG_PB, RAW

CHUNK_SIZE = 262_144
MAX_LINKS = 174

# Called with each new block; the buffer may be reused once the call returns.
BlockSink = Callable[[CID, bytes | memoryview], None]


@dataclass(frozen=True, slots=True)
class _Child:
    cid: CID
    tsize: int  # bytes of this block and all blocks under it
    filesize: int  # file bytes under it


class FileBuilder:
    """Turns a sequence of chunks into a balanced UnixFS DAG, bottom-up and streamed.

    Each tree level holds links not yet grouped into a parent. A full level is
    only grouped when one more link arrives, so a file of exactly 174 chunks
    gets a single root rather than a root with one child — as Kubo does.
    """

    def __init__(self, emit: BlockSink, cid_version: int = 1, max_links: int = MAX_LINKS) -> None:
        if cid_version not in (0, 1):
            raise ValueError("cid_version is 0 or 1")
        self._emit = emit
        self._version = cid_version
        self._max_links = max_links
        self._levels: list[list[_Child]] = [[]]
        self.bytes_in = 0

    def add_chunk(self, chunk: bytes | memoryview) -> None:
        self.bytes_in += len(chunk)
        self._push(0, self._leaf(chunk))

    def finish(self) -> CID:
        if self.bytes_in == 0 and not self._levels[0]:
            self._push(0, self._leaf(b""))  # Kubo stores an empty file as one empty leaf
        levels = self._levels
        if len(levels) == 1 and len(levels[0]) == 1:
            return levels[0][0].cid  # a single chunk is its own root
        depth = 0
        while True:
            children = levels[depth]
            is_top = depth == len(levels) - 1
            if is_top and len(children) == 1:
                return children[0].cid
            levels[depth] = []
            self._push(depth + 1, self._parent(children))
            depth += 1

    def _push(self, depth: int, child: _Child) -> None:
        if depth == len(self._levels):
            self._levels.append([])
        level = self._levels[depth]
        if len(level) == self._max_links:
            self._levels[depth] = []
            self._push(depth + 1, self._parent(level))
            level = self._levels[depth]
        level.append(child)

    def _leaf(self, chunk: bytes | memoryview) -> _Child:
        if self._version == 1:
            cid = CID(1, RAW, hashlib.sha256(chunk).digest())
            self._emit(cid, chunk)
            return _Child(cid, len(chunk), len(chunk))
        block = pb.encode_file_leaf(chunk)
        cid = CID(0, DAG_PB, hashlib.sha256(block).digest())
        self._emit(cid, block)
        return _Child(cid, len(block), len(chunk))

    def _parent(self, children: list[_Child]) -> _Child:
        filesize = sum(child.filesize for child in children)
        data = pb.encode_unixfs(
            pb.UNIXFS_FILE, filesize=filesize, blocksizes=[c.filesize for c in children]
        )
        links = [pb.PBLink(child.cid, child.tsize) for child in children]
        block = pb.encode_node(links, data)
        cid = CID(self._version, DAG_PB, hashlib.sha256(block).digest())
        self._emit(cid, block)
        return _Child(cid, len(block) + sum(child.tsize for child in children), filesize)


def iter_chunks(source: BinaryIO, buffer: bytearray | None = None) -> Iterable[memoryview]:
    """Fixed-size chunks of a stream, each a view of one reused buffer.

    Short reads (pipes, sockets) are topped up so chunk boundaries depend only
    on the bytes, never on how the stream happened to deliver them.
    """
    buffer = buffer if buffer is not None else bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    readinto = getattr(source, "readinto", None)
    while True:
        filled = 0
        while filled < CHUNK_SIZE:
            if readinto is not None:
                got = readinto(view[filled:])
            else:
                data = source.read(CHUNK_SIZE - filled)
                got = len(data)
                view[filled : filled + got] = data
            if not got:
                break
            filled += got
        if filled:
            yield view[:filled]
        if filled < CHUNK_SIZE:
            return


def import_stream(
    source: BinaryIO,
    emit: BlockSink,
    cid_version: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> CID:
    """Chunk and hash a stream into a UnixFS DAG; return the root CID."""
    builder = FileBuilder(emit, cid_version)
    for chunk in iter_chunks(source):
        builder.add_chunk(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return builder.finish()


def import_bytes(
    data: bytes | memoryview,
    emit: BlockSink,
    cid_version: int = 1,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> CID:
    """Same as import_stream for bytes already in memory, without copying them.

    `chunk_size` and `max_links` exist so tests can reach deep trees with small
    inputs; everything Kempelen stores uses Kubo's defaults.
    """
    builder = FileBuilder(emit, cid_version, max_links)
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        builder.add_chunk(view[start : start + chunk_size])
    return builder.finish()


def file_cid(data: bytes | memoryview, cid_version: int = 1) -> CID:
    """The CID `ipfs add` would print for these bytes, without storing anything."""
    return import_bytes(data, lambda cid, block: None, cid_version)
