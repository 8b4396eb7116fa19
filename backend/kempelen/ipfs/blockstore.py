"""Blocks on disk, one file per block, laid out like Kubo's flatfs.

`<root>/blocks/<shard>/<KEY>.data`, KEY the unpadded upper-case base32 of the
block's multihash and shard its next-to-last two characters (flatfs
`next-to-last/2`). Keyed by multihash, not CID, so a block is stored once
whatever CID version names it. Writes are atomic (temp file + rename), so a
crash never leaves a half block under a real name; every read re-hashes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self

from kempelen.ipfs.errors import BlockNotFound, CorruptBlock
from kempelen.protocol.cid import CID, RAW


def block_key(cid: CID) -> str:
    return base64.b32encode(cid.multihash).decode("ascii").rstrip("=")


class FileBlockstore:
    """A content-addressed block store in a directory; safe for concurrent writers."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        # fsync is off by default: a lost block after power loss is re-added from its
        # source, and fsync per 256 KiB block would cost more than hashing it.
        self.root = Path(root)
        self.blocks_dir = self.root / "blocks"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._shards: set[str] = set()

    def path_of(self, cid: CID) -> Path:
        key = block_key(cid)
        return self.blocks_dir / key[-3:-1] / f"{key}.data"

    def has(self, cid: CID) -> bool:
        return self.path_of(cid).is_file()

    def put_block(self, block: bytes | memoryview, cid: CID | None = None) -> CID:
        """Store a block. Without a CID it is named raw CIDv1; with one, it must match."""
        digest = hashlib.sha256(block).digest()
        if cid is None:
            cid = CID(1, RAW, digest)
        elif digest != cid.digest:
            raise CorruptBlock(f"block does not hash to {cid}")
        self.write_verified(cid, block)
        return cid

    def write_verified(self, cid: CID, block: bytes | memoryview) -> None:
        """Store a block whose hash the caller has just computed (the importer's fast path)."""
        key = block_key(cid)
        shard = key[-3:-1]
        path = self.blocks_dir / shard / f"{key}.data"
        if path.exists():
            return  # content-addressed: same name, same bytes
        if shard not in self._shards:
            path.parent.mkdir(exist_ok=True)
            self._shards.add(shard)
        # Unique per process and thread, so concurrent writers of one block never clash.
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as out:
            out.write(block)
            if self._fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)

    def get_block(self, cid: CID) -> bytes:
        """The block's bytes, after checking they still hash to `cid`."""
        try:
            with open(self.path_of(cid), "rb") as src:
                block = src.read()
        except FileNotFoundError:
            raise BlockNotFound(f"no block {cid} in {self.root}") from None
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"block {cid} on disk is corrupted ({self.path_of(cid)})")
        return block

    def delete_block(self, cid: CID) -> None:
        try:
            self.path_of(cid).unlink()
        except FileNotFoundError:
            pass


class BackgroundWriter:
    """Writes blocks on a worker thread while the caller hashes the next chunk.

    Hashing and file writes both release the GIL, so on two cores an add runs
    at the speed of the slower of the two instead of their sum. At most
    `max_pending` blocks wait in memory (2 MiB at 256 KiB), keeping memory
    flat in file size. The first block is written inline and the thread only
    starts with the second, so single-block payloads pay nothing for it.
    Use as a context manager; write errors surface on exit.
    """

    def __init__(self, store: FileBlockstore, max_pending: int = 8) -> None:
        self._store = store
        self._max_pending = max_pending
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._blocks = 0

    def __call__(self, cid: CID, block: bytes | memoryview) -> None:
        self._blocks += 1
        if self._blocks == 1:
            self._store.write_verified(cid, block)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kempelen-blocks")
        if isinstance(block, memoryview) and not block.readonly:
            block = bytes(block)  # the importer reuses its chunk buffer after we return
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._store.write_verified, cid, block))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
