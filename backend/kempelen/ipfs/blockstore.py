"""Blocks on disk under `<root>/blocks/`: pack files (the default) or one file per block (flatfs).

packs   `blocks/packs/`: blocks appended to pack files, found through a SQLite
        index (see packs.py). One write per block and one index transaction per
        add, instead of a file create and rename per block.
flatfs  `blocks/<shard>/<KEY>.data`, laid out like Kubo's flatfs: KEY the
        unpadded upper-case base32 of the block's multihash, shard its
        next-to-last two characters (`next-to-last/2`). Written atomically
        (temp file + rename). The layout of stores written before packs.

Reads look in both layouts, so a flatfs store keeps reading after the switch;
writes go to the store's `layout` (argument, else `$KEMPELEN_STORE_LAYOUT`,
else packs). Keyed by multihash, not CID, so a block is stored once whatever
CID version names it. Every read re-hashes the block against its CID.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from kempelen.ipfs.errors import BlockNotFound, ContentError, CorruptBlock
from kempelen.ipfs.packs import PACK_LIMIT, PackStore
from kempelen.protocol.cid import CID, DIGEST_SIZE, RAW

LAYOUTS = ("packs", "flatfs")
LAYOUT_ENV = "KEMPELEN_STORE_LAYOUT"

BlockSink = Callable[[CID, bytes | memoryview], None]


def block_key(cid: CID) -> str:
    return base64.b32encode(cid.multihash).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class BlockLocation:
    """Where a block's bytes are: `length` bytes at `offset` of `path`."""

    path: Path
    offset: int
    length: int


class FileBlockstore:
    """A content-addressed block store in a directory; safe for concurrent writers.

    Threads and processes may add to one store at once: each pack has a single
    writer, flatfs writes are atomic renames. `delete_block` forgets a packed
    block (its bytes stay in the pack as dead space; nothing compacts packs yet)
    and unlinks a flatfs one.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = False,
        layout: str | None = None,
        pack_limit: int = PACK_LIMIT,
    ) -> None:
        # fsync is off by default: a block lost to power loss is re-added from its source
        # (reads refuse it, never serve it), and fsync per block costs more than hashing it.
        self.root = Path(root)
        self.blocks_dir = self.root / "blocks"
        self.layout = layout or os.environ.get(LAYOUT_ENV) or "packs"
        if self.layout not in LAYOUTS:
            raise ContentError(f"unknown store layout {self.layout!r} (use one of {', '.join(LAYOUTS)})")
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.packs = PackStore(self.blocks_dir / "packs", fsync=fsync, pack_limit=pack_limit)
        self._fsync = fsync
        self._shards: set[str] = set()

    def path_of(self, cid: CID) -> Path:
        """The block's file in the flatfs layout (where it is only if written that way)."""
        key = block_key(cid)
        return self.blocks_dir / key[-3:-1] / f"{key}.data"

    def has(self, cid: CID) -> bool:
        return self.packs.has(cid.multihash) or self.path_of(cid).is_file()

    def locate(self, cid: CID) -> BlockLocation | None:
        """Where the block's bytes are stored, in either layout (for tools and tests)."""
        extent = self.packs.locate(cid.multihash)
        if extent is not None:
            return BlockLocation(self.packs.pack_path(extent.pack), extent.offset, extent.length)
        path = self.path_of(cid)
        try:
            return BlockLocation(path, 0, path.stat().st_size)
        except FileNotFoundError:
            return None

    # -- writing --------------------------------------------------------------------

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
        with self.writer() as write:
            write(cid, block)

    @contextmanager
    def writer(self) -> Iterator[BlockSink]:
        """A sink for (cid, verified block) pairs; one add's packed blocks are indexed as it closes."""
        if self.layout == "flatfs":
            yield self._write_flatfs
            return
        with self.packs.session() as session:
            yield lambda cid, block: session.write(cid.multihash, block)

    def _write_flatfs(self, cid: CID, block: bytes | memoryview) -> None:
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

    # -- reading --------------------------------------------------------------------

    def get_block(self, cid: CID) -> bytes:
        """The block's bytes, after checking they still hash to `cid`."""
        found = self.packs.read(cid.multihash)
        if found is not None:
            block, extent = found
            where = f"{self.packs.pack_path(extent.pack)} at {extent.offset}"
        else:
            where = str(self.path_of(cid))
            try:
                with open(where, "rb") as src:
                    block = src.read()
            except FileNotFoundError:
                raise BlockNotFound(f"no block {cid} in {self.root}") from None
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"block {cid} on disk is corrupted ({where})")
        return block

    def iter_blocks(self) -> Iterator[bytes]:
        """Every stored block's bytes, packs then flatfs, each verified; torn ones skipped."""
        for key, extent in self.packs.iter_extents():
            block = self.packs.read_extent(extent)
            if block is not None:
                yield _verified(block, key[-DIGEST_SIZE:], f"{self.packs.pack_path(extent.pack)}")
        for path in self.blocks_dir.glob("??/*.data"):
            key = base64.b32decode(path.stem + "=" * (-len(path.stem) % 8))
            yield _verified(path.read_bytes(), key[-DIGEST_SIZE:], str(path))

    def delete_block(self, cid: CID) -> None:
        """Forget the block: a packed one is unindexed (bytes stay as dead space), a file unlinked."""
        self.packs.delete(cid.multihash)
        try:
            self.path_of(cid).unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Release open packs and the index (the store reopens them if used again)."""
        self.packs.close()


def _verified(block: bytes, digest: bytes, where: str) -> bytes:
    if hashlib.sha256(block).digest() != digest:
        raise CorruptBlock(f"a block on disk is corrupted ({where})")
    return block


class BackgroundWriter:
    """Writes blocks on a worker thread while the caller hashes the next chunk.

    Hashing and file writes both release the GIL, so with a free core an add
    runs at the speed of the slower of the two instead of their sum. Without
    one (a busy machine; the kernel shares CPU between sessions, not threads)
    the thread only adds hand-offs and copies, and inline writes are ~20 %
    faster. So a long add checks: after `PROBE` threaded blocks it compares
    the process's CPU time with wall time, and when it did not get more than
    one core's worth it writes the next blocks itself, then tries the thread
    again; each failed try doubles the inline stretch (`INLINE` up to
    `INLINE_MAX` blocks), so a busy machine pays little for the probing.

    At most `max_pending` blocks wait in memory (2 MiB at 256 KiB), keeping
    memory flat in file size. The first block is written inline and the
    thread only starts with the second, so single-block payloads pay nothing
    for it. Use as a context manager: write errors surface on exit, and the
    blocks written by then are indexed either way (each one is whole).
    """

    PROBE = 16
    INLINE = 64
    INLINE_MAX = 1024
    PARALLEL = 1.15  # CPU seconds per wall second that show the thread ran beside the caller

    def __init__(self, store: FileBlockstore, max_pending: int = 8) -> None:
        self._session = store.writer()
        self._write: BlockSink | None = None
        self._max_pending = max_pending
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._blocks = 0
        self._threaded = True
        self._inline_for = self.INLINE
        self._stretch = 0  # blocks written in the current mode
        self._mark = (0.0, 0.0)  # wall and CPU clocks when the stretch began

    def __call__(self, cid: CID, block: bytes | memoryview) -> None:
        self._blocks += 1
        if self._blocks > 1:
            self._choose_mode()
        if self._blocks == 1 or not self._threaded:
            self._write(cid, block)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kempelen-blocks")
        if isinstance(block, memoryview) and not block.readonly:
            block = bytes(block)  # the importer reuses its chunk buffer after we return
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, cid, block))

    def _choose_mode(self) -> None:
        self._stretch += 1
        if self._stretch == 1:
            self._mark = (time.perf_counter(), time.process_time())
            return
        if self._threaded and self._stretch > self.PROBE:
            wall = time.perf_counter() - self._mark[0]
            cpu = time.process_time() - self._mark[1]
            if cpu >= self.PARALLEL * wall:
                self._inline_for = self.INLINE
            else:
                self._threaded = False
                while self._pending:  # from here on the caller writes: one writer at a time
                    self._pending.popleft().result()
            self._stretch = 0
        elif not self._threaded and self._stretch > self._inline_for:
            self._threaded, self._stretch = True, 0
            self._inline_for = min(2 * self._inline_for, self.INLINE_MAX)

    def __enter__(self) -> Self:
        self._write = self._session.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._session.__exit__(None, None, None)  # no thread writes now: index what was written
