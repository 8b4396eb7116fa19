"""`python -m kempelen.ipfs.bench` (make bench-ipfs): content store add throughput vs plain sha256.

Writes build/bench/ipfs.json. The large file is generated on the fly and
streamed, so the run itself shows whether memory stays flat in file size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import import_stream

MiB = 1 << 20
LARGE_SIZE = 256 * MiB
SMALL_COUNT = 10_000
SMALL_SIZE = 1024
OUT = Path("build/bench/ipfs.json")


class GeneratedFile(io.RawIOBase):
    """`size` bytes cycled from a random pattern whose period is not a multiple of
    the chunk size, so every 256 KiB chunk differs and nothing dedupes."""

    def __init__(self, size: int) -> None:
        self._pattern = os.urandom(MiB + 416)
        self._left = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._left)
        view = memoryview(buffer)
        done = 0
        while done < want:
            piece = self._pattern[self._pos : self._pos + want - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._pos = (self._pos + len(piece)) % len(self._pattern)
        self._left -= done
        return done


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sha256_stream(size: int) -> None:
    digest, buffer, src = hashlib.sha256(), bytearray(262_144), GeneratedFile(size)
    view = memoryview(buffer)
    while got := src.readinto(buffer):
        digest.update(view[:got])


def _write_files(directory: Path, size: int) -> None:
    """The disk's own ceiling: the same number of 256 KiB files, written without hashing."""
    directory.mkdir()
    src, buffer = GeneratedFile(size), bytearray(262_144)
    view = memoryview(buffer)
    index = 0
    while got := src.readinto(buffer):
        fd = os.open(directory / f"{index}.data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, view[:got])
        os.close(fd)
        index += 1


def run(work_dir: Path) -> dict:
    store = ContentStore(work_dir / "store")
    rss_before_large = _rss_mib()
    sha_s = _timed(lambda: _sha256_stream(LARGE_SIZE))
    hash_only_s = _timed(lambda: import_stream(GeneratedFile(LARGE_SIZE), lambda c, b: None))
    large_s = _timed(lambda: store.put(GeneratedFile(LARGE_SIZE)))
    disk_s = _timed(lambda: _write_files(work_dir / "plain", LARGE_SIZE))
    rss_after_large = _rss_mib()

    payloads = [os.urandom(SMALL_SIZE) for _ in range(SMALL_COUNT)]
    small_s = _timed(lambda: [store.put(p) for p in payloads])

    large_mib = LARGE_SIZE / MiB
    return {
        "add_mib_per_s_large": round(large_mib / large_s, 1),
        "add_files_per_s_small": round(SMALL_COUNT / small_s, 1),
        "sha256_mib_per_s": round(large_mib / sha_s, 1),
        "hash_only_mib_per_s_large": round(large_mib / hash_only_s, 1),
        "plain_file_writes_mib_per_s": round(large_mib / disk_s, 1),
        "add_vs_sha256": round(sha_s / large_s, 3),
        "peak_rss_mib": round(_rss_mib(), 1),
        "rss_growth_during_large_add_mib": round(rss_after_large - rss_before_large, 1),
        "large_file_mib": large_mib,
        "small_files": SMALL_COUNT,
        "small_file_bytes": SMALL_SIZE,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="ipfs-bench-", dir=OUT.parent))
    try:
        results = run(work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    results["store_dir"] = str(OUT.parent.resolve())
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("add, one 256 MiB file (to disk)", f"{results['add_mib_per_s_large']:.0f} MiB/s"),
        ("chunk+hash only (ipfs add -n)", f"{results['hash_only_mib_per_s_large']:.0f} MiB/s"),
        ("plain hashlib sha256, same bytes", f"{results['sha256_mib_per_s']:.0f} MiB/s"),
        (
            "plain 256 KiB file writes, no hash",
            f"{results['plain_file_writes_mib_per_s']:.0f} MiB/s",
        ),
        ("add / sha256", f"{results['add_vs_sha256']:.0%}"),
        ("add, 10,000 x 1 KiB files", f"{results['add_files_per_s_small']:.0f} files/s"),
        ("RSS growth during large add", f"{results['rss_growth_during_large_add_mib']:.1f} MiB"),
        ("peak RSS", f"{results['peak_rss_mib']:.0f} MiB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>14}")
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
