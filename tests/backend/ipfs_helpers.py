"""Shared helpers for tests/backend/test_ipfs_*.py: deterministic payloads and the node cross-checker."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK_JS = Path(__file__).resolve().parent / "ipfs_js" / "check.mjs"


def payload(size: int, seed: bytes = b"kempelen") -> bytes:
    """Deterministic, incompressible-looking bytes (a sha256 counter stream)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


class PatternStream(io.RawIOBase):
    """`size` bytes generated on the fly, never all in memory; reads come back short on purpose."""

    def __init__(self, size: int, short_reads: bool = True) -> None:
        self._left = size
        self._block = payload(65_536 + 7)
        self._pos = 0
        self._short = short_reads

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._left, 40_000 if self._short else len(buffer))
        view = memoryview(buffer)
        done = 0
        while done < want:
            piece = self._block[self._pos : self._pos + want - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._pos = (self._pos + len(piece)) % len(self._block)
        self._left -= done
        return done


def overwrite_block(blocks, cid, new: bytes) -> None:
    """Write `new` (as long as the block) over a stored block's bytes, whatever the store's layout."""
    where = blocks.locate(cid)
    assert where is not None and len(new) == where.length, "overwrite needs a stored block of that length"
    with open(where.path, "r+b") as out:
        out.seek(where.offset)
        out.write(new)


def flip_byte(blocks, cid) -> None:
    """Corrupt a stored block in place: one bit of its middle byte."""
    where = blocks.locate(cid)
    with open(where.path, "r+b") as out:
        out.seek(where.offset + where.length // 2)
        byte = out.read(1)[0]
        out.seek(-1, 1)
        out.write(bytes([byte ^ 1]))


def node_check(*args: str, timeout: float = 240) -> str:
    """Run the independent JS implementation (tests/backend/ipfs_js/check.mjs)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the independent IPFS checks (make bootstrap)")
    if not (REPO / "node_modules" / "ipfs-unixfs-importer").is_dir():
        pytest.fail("node_modules lacks ipfs-unixfs-importer: run `make bootstrap` (npm ci)")
    result = subprocess.run(
        [node, str(CHECK_JS), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"check.mjs {args[0]} failed:\n{result.stderr}")
    return result.stdout.strip()


def node_json(*args: str, timeout: float = 240) -> dict:
    return json.loads(node_check(*args, timeout=timeout))
