"""The embedded content store: add files as Kubo would, read them back verified, move CARs.

No daemon: a directory of blocks (pack files by default, see blockstore.py)
plus the UnixFS importer.
Every read re-hashes each block it touches, so a flipped bit on disk surfaces
as CorruptBlock rather than as a wrong payload handed to a worker or auditor.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from kempelen.ipfs import dag
from kempelen.ipfs.blockstore import BackgroundWriter, FileBlockstore
from kempelen.ipfs.car import CarReader, write_car
from kempelen.ipfs.errors import BlockNotFound, CarFormatError
from kempelen.ipfs.unixfs import import_bytes, import_stream
from kempelen.protocol.cid import CID

Progress = Callable[[int], None]


def default_store_dir() -> Path:
    """`$KEMPELEN_STORE`, else `~/.kempelen/store`."""
    return Path(os.environ.get("KEMPELEN_STORE") or Path.home() / ".kempelen" / "store")


class ContentStore:
    """Kubo-compatible UnixFS files over a FileBlockstore.

    `layout` is where new blocks go: "packs" (default) or "flatfs" (one file per
    block, the layout before packs); None reads `$KEMPELEN_STORE_LAYOUT`. Blocks
    are read from either layout whatever it is.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, fsync: bool = False,
                 layout: str | None = None):
        self.blocks = FileBlockstore(root if root is not None else default_store_dir(), fsync=fsync,
                                     layout=layout)
        self.root = self.blocks.root

    # -- adding ---------------------------------------------------------------------

    def put(self, payload: bytes | bytearray | memoryview | BinaryIO, cid_version: int = 1) -> CID:
        """Store bytes or a binary stream as a UnixFS file; return its `ipfs add` CID."""
        with BackgroundWriter(self.blocks) as write:
            if isinstance(payload, (bytes, bytearray, memoryview)):
                return import_bytes(payload, write, cid_version)
            return import_stream(payload, write, cid_version)

    def add_path(
        self,
        path: str | os.PathLike[str],
        cid_version: int = 1,
        on_progress: Progress | None = None,
    ) -> CID:
        """Store a file from disk, streamed; memory does not grow with its size."""
        # buffering=0: the importer's readinto fills its own reused buffer directly.
        with open(path, "rb", buffering=0) as src, BackgroundWriter(self.blocks) as write:
            return import_stream(src, write, cid_version, on_progress)

    def put_block(self, block: bytes | memoryview, cid: CID | None = None) -> CID:
        """Store one block (raw CIDv1 unless `cid` says otherwise; then it must match)."""
        return self.blocks.put_block(block, CID.parse(cid) if cid is not None else None)

    # -- reading --------------------------------------------------------------------

    def has(self, cid: CID | str) -> bool:
        """Whether the block `cid` names is stored (not that its whole DAG is)."""
        return self.blocks.has(CID.parse(cid))

    def get_block(self, cid: CID | str) -> bytes:
        return self.blocks.get_block(CID.parse(cid))

    def open(self, cid: CID | str) -> BinaryIO:
        """A stream of the file's bytes; blocks are read and verified as it is consumed."""
        root = CID.parse(cid)
        if not self.blocks.has(root):
            raise BlockNotFound(f"no content {root} in {self.root}")
        return io.BufferedReader(dag.FileReader(self.blocks.get_block, root), 262_144)

    def get(self, cid: CID | str) -> bytes:
        """The whole file in memory: for payloads known to be small (tasks, answers)."""
        return b"".join(dag.iter_file(self.blocks.get_block, CID.parse(cid)))

    def iter_file(self, cid: CID | str) -> Iterator[bytes]:
        return dag.iter_file(self.blocks.get_block, CID.parse(cid))

    def size(self, cid: CID | str) -> int:
        return dag.file_size(self.blocks.get_block, CID.parse(cid))

    def walk(self, cid: CID | str) -> Iterator[tuple[CID, bytes]]:
        """Every block under `cid`, depth-first, verified."""
        return dag.walk_blocks(self.blocks.get_block, CID.parse(cid))

    # -- CAR ------------------------------------------------------------------------

    def export_car(self, root: CID | str, out: BinaryIO) -> int:
        """Write the DAG under `root` as a CARv1 (dfs order, no duplicates); return bytes."""
        root = CID.parse(root)
        return write_car(out, [root], self.walk(root))

    def import_car(self, src: BinaryIO) -> list[CID]:
        """Store every block of a CARv1, each verified against its CID; return the roots.

        A block that fails verification aborts the import with CorruptBlock; blocks
        stored before it stay (they are valid content-addressed blocks).
        """
        reader = CarReader(src)
        with self.blocks.writer() as write:
            for cid, block in reader.blocks():
                write(cid, block)
        for root in reader.roots:
            if not self.blocks.has(root):
                raise CarFormatError(f"CAR root {root} is not among its blocks")
        return reader.roots
