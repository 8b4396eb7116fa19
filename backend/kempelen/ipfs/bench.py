"""`python -m kempelen.ipfs.bench` (make bench-ipfs): content store add throughput vs plain sha256.

Writes build/bench/ipfs.json. The large file is generated on the fly and
streamed, so the run itself shows whether memory stays flat in file size.
Every measurement runs several rounds, interleaved so that a busy moment on a
shared machine (or the kernel flushing earlier writes) hits all of them alike;
each line reports its best round, and the JSON keeps every round.
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
LARGE_ROUNDS = 3
SMALL_ROUNDS = 2
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
    """The disk's ceiling for flatfs: as many 256 KiB files, written without hashing."""
    directory.mkdir()
    src, buffer = GeneratedFile(size), bytearray(262_144)
    view = memoryview(buffer)
    index = 0
    while got := src.readinto(buffer):
        fd = os.open(directory / f"{index}.data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, view[:got])
        os.close(fd)
        index += 1


def _append_file(path: Path, size: int) -> None:
    """The disk's ceiling for packs: the same bytes appended to one file, without hashing."""
    src, buffer = GeneratedFile(size), bytearray(262_144)
    view = memoryview(buffer)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while got := src.readinto(buffer):
            os.write(fd, view[:got])
    finally:
        os.close(fd)


def run(work_dir: Path) -> dict:
    large: dict[str, list[float]] = {}
    small: dict[str, list[float]] = {}

    def timed(table: dict[str, list[float]], name: str, fn, written: Path | None = None) -> None:
        table.setdefault(name, []).append(_timed(fn))
        if written is not None:  # gone at once, so no later measurement waits on its writeback
            shutil.rmtree(written) if written.is_dir() else written.unlink()

    rss_before_large = _rss_mib()
    for _ in range(LARGE_ROUNDS):
        timed(large, "sha256", lambda: _sha256_stream(LARGE_SIZE))
        timed(large, "hash_only", lambda: import_stream(GeneratedFile(LARGE_SIZE), lambda c, b: None))
        for layout, name in (("packs", "add"), ("flatfs", "flatfs_add")):
            store = ContentStore(work_dir / layout, layout=layout)
            timed(large, name, lambda s=store: s.put(GeneratedFile(LARGE_SIZE)), work_dir / layout)
        appended, plain = work_dir / "appended", work_dir / "plain"
        timed(large, "plain_appends", lambda a=appended: _append_file(a, LARGE_SIZE), appended)
        timed(large, "plain_file_writes", lambda p=plain: _write_files(p, LARGE_SIZE), plain)
    rss_after_large = _rss_mib()

    payloads = [os.urandom(SMALL_SIZE) for _ in range(SMALL_COUNT)]
    for _ in range(SMALL_ROUNDS):
        for layout in ("packs", "flatfs"):
            store = ContentStore(work_dir / layout, layout=layout)
            timed(small, layout, lambda s=store: [s.put(p) for p in payloads], work_dir / layout)

    large_mib = LARGE_SIZE / MiB
    best = {name: min(seconds) for name, seconds in large.items()}
    return {
        "add_mib_per_s_large": round(large_mib / best["add"], 1),
        "add_files_per_s_small": round(SMALL_COUNT / min(small["packs"]), 1),
        "sha256_mib_per_s": round(large_mib / best["sha256"], 1),
        "add_vs_sha256": round(best["sha256"] / best["add"], 3),
        "hash_only_mib_per_s_large": round(large_mib / best["hash_only"], 1),
        "flatfs_add_mib_per_s_large": round(large_mib / best["flatfs_add"], 1),
        "flatfs_add_files_per_s_small": round(SMALL_COUNT / min(small["flatfs"]), 1),
        "plain_appends_mib_per_s": round(large_mib / best["plain_appends"], 1),
        "plain_file_writes_mib_per_s": round(large_mib / best["plain_file_writes"], 1),
        "rounds_mib_per_s_large": {
            name: [round(large_mib / s, 1) for s in seconds] for name, seconds in large.items()},
        "rounds_files_per_s_small": {
            name: [round(SMALL_COUNT / s, 1) for s in seconds] for name, seconds in small.items()},
        "statistic": f"best of {LARGE_ROUNDS} rounds (large), {SMALL_ROUNDS} (small)",
        "peak_rss_mib": round(_rss_mib(), 1),
        "rss_growth_during_large_adds_mib": round(rss_after_large - rss_before_large, 1),
        "large_file_mib": large_mib,
        "small_files": SMALL_COUNT,
        "small_file_bytes": SMALL_SIZE,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="ipfs-bench-", dir=OUT.parent))
    load_before = os.getloadavg()[0]
    try:
        results = run(work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    results["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    results["store_dir"] = str(OUT.parent.resolve())
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    r = results
    rows = [
        ("add, one 256 MiB file (packs, default)", f"{r['add_mib_per_s_large']:.0f} MiB/s"),
        ("add, one 256 MiB file (flatfs layout)", f"{r['flatfs_add_mib_per_s_large']:.0f} MiB/s"),
        ("chunk+hash only (ipfs add -n)", f"{r['hash_only_mib_per_s_large']:.0f} MiB/s"),
        ("plain hashlib sha256, same bytes", f"{r['sha256_mib_per_s']:.0f} MiB/s"),
        ("plain 256 KiB appends to one file", f"{r['plain_appends_mib_per_s']:.0f} MiB/s"),
        ("plain 256 KiB file writes, no hash", f"{r['plain_file_writes_mib_per_s']:.0f} MiB/s"),
        ("add / sha256 (target >= 50%)", f"{r['add_vs_sha256']:.0%}"),
        ("add, 10,000 x 1 KiB files (packs)", f"{r['add_files_per_s_small']:.0f} files/s"),
        ("add, 10,000 x 1 KiB files (flatfs)", f"{r['flatfs_add_files_per_s_small']:.0f} files/s"),
        ("RSS growth during large adds", f"{r['rss_growth_during_large_adds_mib']:.1f} MiB"),
        ("peak RSS", f"{r['peak_rss_mib']:.0f} MiB"),
        ("load average (1 min), before/after", " / ".join(map(str, r["load_average_1m"]))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>14}")
    print(f"{r['statistic']}; every round in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
