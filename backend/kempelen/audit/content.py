"""Where the auditor gets content, trusting none of it: every block is hashed against its CID.

Three sources behind one small ABC: the embedded store's directory, any IPFS trustless
gateway (the relay's own included), a Kubo node's RPC. A file is walked block by block
with kempelen.ipfs.dag, so a multi-block payload is verified down to every leaf.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from kempelen.audit.model import AuditError, Progress
from kempelen.errors import InvalidCID
from kempelen.ipfs import dag
from kempelen.ipfs.blockstore import FileBlockstore
from kempelen.ipfs.car import CarReader
from kempelen.ipfs.errors import BlockNotFound, ContentError, CorruptBlock
from kempelen.ipfs.kubo import KuboRPC
from kempelen.protocol.cid import CID, DAG_PB

MAX_FILE = 64 << 20  # a task payload larger than this is not a labeling task; refuse to buffer it


class ContentSource(ABC):
    """Blocks by CID, each verified against its CID before it is returned."""

    name: str
    # Parallel fetches worth running: network sources wait on I/O; a local directory is
    # read faster by one thread than by several contending for the GIL.
    concurrency: int = 1

    @abstractmethod
    def get_block(self, cid: CID) -> bytes:
        """The block's bytes; BlockNotFound if absent, CorruptBlock if they do not hash to `cid`."""

    def read_file(self, cid: CID) -> bytes:
        """A UnixFS file's bytes (a raw CID is a one-block file), every block verified."""
        return _read_file(self.get_block, cid)

    def close(self) -> None:
        pass


def _read_file(get_block: dag.GetBlock, cid: CID) -> bytes:
    chunks, size = [], 0
    for chunk in dag.iter_file(get_block, cid):
        size += len(chunk)
        if size > MAX_FILE:
            raise ContentError(f"{cid} is larger than {MAX_FILE >> 20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


class DirectoryStore(ContentSource):
    """The embedded store's directory (kempelen.ipfs), read-only; FileBlockstore re-hashes reads."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not (root / "blocks").is_dir():
            raise AuditError(f"--content {root} is not a Kempelen content store (no blocks/ directory)")
        self.name = f"store {root}"
        self._blocks = FileBlockstore(root)

    def get_block(self, cid: CID) -> bytes:
        return self._blocks.get_block(cid)


def _verified(cid: CID, block: bytes, where: str) -> bytes:
    if hashlib.sha256(block).digest() != cid.digest:
        raise CorruptBlock(f"{where} returned bytes for {cid} that hash to something else")
    return block


class TrustlessGateway(ContentSource):
    """An IPFS gateway speaking the trustless spec: raw blocks, and CARs for multi-block files."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise AuditError(f"--gateway must be an http(s) URL, got {base_url!r}")
        self.base = base_url.rstrip("/")
        self.name = f"gateway {self.base}"
        self.concurrency = 8
        self._client = httpx.Client(timeout=timeout)

    def _get(self, cid: CID, fmt: str) -> httpx.Response:
        accept = "application/vnd.ipld.car" if fmt == "car" else "application/vnd.ipld.raw"
        try:
            response = self._client.get(
                f"{self.base}/ipfs/{cid}", params={"format": fmt}, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            raise ContentError(f"gateway {self.base} unreachable for {cid}: {type(exc).__name__}") from None
        if response.status_code == 404:
            raise BlockNotFound(f"gateway {self.base} has no {cid}")
        if response.status_code != 200:
            raise ContentError(f"gateway {self.base} answered HTTP {response.status_code} for {cid}")
        return response

    def get_block(self, cid: CID) -> bytes:
        return _verified(cid, self._get(cid, "raw").content, f"gateway {self.base}")

    def read_file(self, cid: CID) -> bytes:
        if cid.codec != DAG_PB:
            return _read_file(self.get_block, cid)
        # A DAG root: one CAR round trip instead of one request per block. CarReader
        # verifies every block; one the CAR lacks is still fetched (and verified) raw.
        reader = CarReader(io.BytesIO(self._get(cid, "car").content))
        blocks = {block_cid.multihash: block for block_cid, block in reader.blocks()}
        return _read_file(lambda c: blocks.get(c.multihash) or self.get_block(c), cid)

    def close(self) -> None:
        self._client.close()


class KuboSource(ContentSource):
    """A Kubo node's RPC (/api/v0/block/get); KuboRPC verifies each block it returns."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise AuditError(f"--kubo must be an http(s) URL, got {base_url!r}")
        self.name = f"kubo {base_url}"
        self.concurrency = 8
        self._kubo = KuboRPC(base_url, timeout=timeout)

    def get_block(self, cid: CID) -> bytes:
        try:
            return self._kubo.block_get(cid)
        except CorruptBlock:
            raise
        except ContentError as exc:
            raise BlockNotFound(str(exc)) from None

    def close(self) -> None:
        self._kubo.close()


def file_verdict(source: ContentSource, cid: CID) -> str | None:
    """None when the file resolves and verifies; else why not ('missing: ...', 'corrupt: ...')."""
    try:
        source.read_file(cid)
    except BlockNotFound as exc:
        return f"missing: {exc}"
    except CorruptBlock as exc:
        return f"corrupt: {exc}"
    except (ContentError, InvalidCID) as exc:
        return f"unreadable: {exc}"
    return None


def check_files(source: ContentSource, cids: Iterable[CID], progress: Progress | None = None) -> dict[CID, str | None]:
    """Verdicts for many files, on as many threads as the source's waits make worthwhile."""
    unique = list(dict.fromkeys(cids))
    progress = progress or Progress()
    progress.begin("fetching content", len(unique))
    verdicts: dict[CID, str | None] = {}
    step = 256
    pool = ThreadPoolExecutor(max_workers=source.concurrency) if source.concurrency > 1 else None
    try:
        for start in range(0, len(unique), step):
            chunk = unique[start : start + step]
            fetched = pool.map(lambda c: file_verdict(source, c), chunk) if pool else (
                file_verdict(source, c) for c in chunk)
            verdicts.update(zip(chunk, fetched))
            progress.advance(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown()
    progress.end()
    return verdicts


def open_source(content: str | None, gateway: str | None, kubo: str | None) -> ContentSource:
    """The one content source the command line named."""
    chosen = [x for x in (content, gateway, kubo) if x]
    if len(chosen) != 1:
        raise AuditError("name exactly one content source: --content DIR, --gateway URL or --kubo URL")
    if content:
        return DirectoryStore(content)
    if gateway:
        return TrustlessGateway(gateway)
    return KuboSource(kubo)
