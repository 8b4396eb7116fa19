"""The pack-file blockstore: layouts, torn and corrupted packs, crashes, concurrent writers."""

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from ipfs_helpers import REPO, PatternStream, flip_byte, payload
from kempelen.audit.content import DirectoryStore
from kempelen.ipfs.blockstore import BackgroundWriter, FileBlockstore
from kempelen.ipfs.errors import BlockNotFound, ContentError, CorruptBlock
from kempelen.ipfs.packs import MAGIC, RECORD
from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import CHUNK_SIZE, file_cid, import_bytes


def _packs(root):
    return sorted((root / "blocks" / "packs").glob("*.pack"))


def _records(path):
    """A pack's records, parsed front to back: interleaved writers would break the parse."""
    data = path.read_bytes()
    assert data[: len(MAGIC)] == MAGIC
    pos, records = len(MAGIC), []
    while pos < len(data):
        length, key_length = RECORD.unpack_from(data, pos)
        key = data[pos + RECORD.size : pos + RECORD.size + key_length]
        block = data[pos + RECORD.size + key_length : pos + RECORD.size + key_length + length]
        assert len(block) == length, f"torn record at {pos} of {path.name}"
        assert key[2:] == hashlib.sha256(block).digest(), f"record at {pos} of {path.name} is garbled"
        records.append(key)
        pos += RECORD.size + key_length + length
    return records


def test_new_stores_write_packs_and_no_block_files(tmp_path):
    store = ContentStore(tmp_path / "s")
    data = payload(3 * CHUNK_SIZE + 5)
    cid = store.put(data)
    assert store.get(cid) == data
    assert not list((tmp_path / "s" / "blocks").rglob("*.data"))
    [pack] = _packs(tmp_path / "s")
    assert len(_records(pack)) == 5  # four leaves and the root
    assert (tmp_path / "s" / "blocks" / "packs" / "index.sqlite").is_file()


def test_flatfs_stores_keep_reading_and_take_new_blocks_in_packs(tmp_path, monkeypatch):
    old_data, new_data = payload(2 * CHUNK_SIZE + 1, b"old"), payload(2 * CHUNK_SIZE + 1, b"new")
    monkeypatch.setenv("KEMPELEN_STORE_LAYOUT", "flatfs")
    old = ContentStore(tmp_path / "s").put(old_data)
    assert len(list((tmp_path / "s" / "blocks").rglob("*.data"))) == 4 and not _packs(tmp_path / "s")
    monkeypatch.delenv("KEMPELEN_STORE_LAYOUT")
    store = ContentStore(tmp_path / "s")
    new = store.put(new_data)
    assert store.get(old) == old_data and store.get(new) == new_data
    assert len(list((tmp_path / "s" / "blocks").rglob("*.data"))) == 4 and _packs(tmp_path / "s")
    assert len(list(store.blocks.iter_blocks())) == 8
    store.blocks.delete_block(old)
    assert not store.has(old)
    with pytest.raises(ContentError, match="unknown store layout"):
        ContentStore(tmp_path / "s", layout="kubo")


def test_the_auditor_reads_a_packed_store(tmp_path):
    store = ContentStore(tmp_path / "s")
    cid = store.put(b'{"label": "cat"}')
    assert DirectoryStore(tmp_path / "s").read_file(cid) == b'{"label": "cat"}'


def test_a_truncated_pack_tail_is_ignored_and_healed_by_a_re_add(tmp_path):
    data = payload(3 * CHUNK_SIZE + 17)
    root = ContentStore(tmp_path / "s").put(data)  # the root block is the pack's last record
    [pack] = _packs(tmp_path / "s")
    os.truncate(pack, pack.stat().st_size - 10)  # as if the tail never reached the disk

    store = ContentStore(tmp_path / "s")
    assert not store.has(root)
    with pytest.raises(BlockNotFound):
        store.get_block(root)
    with pytest.raises(BlockNotFound):
        store.get(root)
    leaves = [file_cid(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]
    assert all(store.get_block(leaf) for leaf in leaves)  # whole records still read

    assert store.put(data) == root
    assert store.get(root) == data
    assert len(_packs(tmp_path / "s")) == 2  # nobody appends to a pack that lost indexed bytes


def test_a_corrupted_pack_tail_is_refused(tmp_path):
    store = ContentStore(tmp_path / "s")
    cid = store.put(b"label: cat")
    flip_byte(store.blocks, cid)
    with pytest.raises(CorruptBlock, match="corrupted"):
        store.get(cid)
    [pack] = _packs(tmp_path / "s")
    with open(pack, "r+b") as out:  # and garbage where the header says the bytes are
        out.seek(-3, os.SEEK_END)
        out.write(b"dog")
    with pytest.raises(CorruptBlock):
        ContentStore(tmp_path / "s").get(cid)


def test_delete_forgets_a_block_and_a_re_add_restores_it(tmp_path):
    store = ContentStore(tmp_path / "s")
    cid = store.put(b"label: cat")
    [pack] = _packs(tmp_path / "s")
    size = pack.stat().st_size
    store.blocks.delete_block(cid)
    assert not store.has(cid) and pack.stat().st_size == size  # dead space, not reclaimed
    with pytest.raises(BlockNotFound):
        store.get(cid)
    store.put(b"label: cat")
    assert store.get(cid) == b"label: cat"


def test_writers_roll_over_to_a_new_pack(tmp_path):
    blocks = FileBlockstore(tmp_path / "s", pack_limit=CHUNK_SIZE * 3)
    data = payload(10 * CHUNK_SIZE)
    with blocks.writer() as write:
        cid = import_bytes(data, write)
    assert len(_packs(tmp_path / "s")) >= 4
    assert ContentStore(tmp_path / "s").get(cid) == data


def test_fsync_store_round_trip(tmp_path):
    store = ContentStore(tmp_path / "s", fsync=True)
    data = payload(CHUNK_SIZE + 1)
    assert store.get(store.put(data)) == data


def test_two_stores_in_one_process_append_to_their_own_packs(tmp_path):
    first, second = ContentStore(tmp_path / "s"), ContentStore(tmp_path / "s")
    a, b = first.put(payload(CHUNK_SIZE + 1, b"a")), second.put(payload(CHUNK_SIZE + 1, b"b"))
    assert len(_packs(tmp_path / "s")) == 2
    assert second.get(a) == payload(CHUNK_SIZE + 1, b"a") and first.get(b) == payload(CHUNK_SIZE + 1, b"b")
    first.blocks.close()
    third = ContentStore(tmp_path / "s")
    third.put(b"reuses the pack the first store released")
    assert len(_packs(tmp_path / "s")) == 2


# -- crashes and concurrent writers ---------------------------------------------------

CRASHING_ADD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from ipfs_helpers import PatternStream
from kempelen.ipfs.store import ContentStore

class Stalls(PatternStream):
    def readinto(self, buffer):
        self.given = getattr(self, "given", 0) + 1
        if self.given == 40:
            Path(sys.argv[3]).touch()
            time.sleep(60)
        return super().readinto(buffer)

store = ContentStore(sys.argv[1])
print(store.put(b"committed before the crash"), flush=True)
store.put(Stalls(40 << 20))
"""


def test_a_writer_killed_mid_add_leaves_nothing_indexed_that_is_not_whole(tmp_path):
    marker = tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ADD, str(tmp_path / "s"), str(REPO / "tests" / "backend"),
         str(marker)], stdout=subprocess.PIPE, text=True)
    try:
        committed = child.stdout.readline().strip()
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        time.sleep(0.2)  # let its writer thread catch up: records on disk, rows not committed
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [pack] = _packs(tmp_path / "s")
    assert pack.stat().st_size > 2 * CHUNK_SIZE  # the dead writer's records, never indexed

    store = ContentStore(tmp_path / "s")
    assert store.get(committed) == b"committed before the crash"
    assert not store.has(file_cid(PatternStream(CHUNK_SIZE, short_reads=False).read()))
    assert len(list(store.blocks.iter_blocks())) == 1
    cid = store.put(PatternStream(3 * CHUNK_SIZE, short_reads=False))
    assert len(_packs(tmp_path / "s")) == 1  # its pack was free again: appended after the dead bytes
    assert store.size(cid) == 3 * CHUNK_SIZE


def _contents(worker: int, thread: int) -> list[bytes]:
    shared = [payload(size, b"shared") for size in (7, CHUNK_SIZE, 2 * CHUNK_SIZE + 3)]
    own = [payload(size, f"own {worker} {thread}".encode()) for size in (5, CHUNK_SIZE + 9, 1000)]
    return shared + own


def _add_from_threads(store: ContentStore, worker: int, threads: int, rounds: int) -> None:
    def add(thread: int) -> None:
        for _ in range(rounds):
            for data in _contents(worker, thread):
                store.put(data)

    running = [threading.Thread(target=add, args=(t,)) for t in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()


def _worker(root: str, worker: int, threads: int, rounds: int, inherited) -> None:
    # Half the workers reuse the store object their parent forked with, half open their own.
    store = inherited if inherited is not None else ContentStore(root)
    _add_from_threads(store, worker, threads, rounds)
    os._exit(0)


def _run_writers(root, processes: int, threads: int, rounds: int) -> None:
    parent = ContentStore(root)
    parent.put(b"the parent holds a pack before it forks")
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_worker, args=(str(root), w, threads, rounds,
                                                   parent if w % 2 else None))
               for w in range(processes)]
    for process in workers:
        process.start()
    _add_from_threads(parent, processes, threads, rounds)  # the parent writes too
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    reader = ContentStore(root)
    for worker in range(processes + 1):
        for thread in range(threads):
            for data in _contents(worker, thread):
                cid = file_cid(data)
                assert reader.get(cid) == data
                assert all(block for _, block in reader.walk(cid))
    packed = [key for pack in _packs(root) for key in _records(pack)]
    assert len(set(packed)) == len(list(reader.blocks.iter_blocks()))
    # A block is written twice only when two writers raced to add it (6 shared blocks).
    assert len(packed) - len(set(packed)) <= (processes + 1) * threads * 6


def test_concurrent_writers_in_processes_and_threads(tmp_path):
    _run_writers(tmp_path / "s", processes=4, threads=2, rounds=1)


@pytest.mark.slow
def test_concurrent_writers_under_load(tmp_path):
    _run_writers(tmp_path / "s", processes=8, threads=4, rounds=15)


def test_background_writer_writes_inline_when_its_thread_gets_no_core_of_its_own(tmp_path):
    class NeverParallel(BackgroundWriter):
        PROBE, INLINE, PARALLEL = 2, 3, float("inf")

    store = ContentStore(tmp_path / "s")
    data = payload(20 * CHUNK_SIZE)
    writers = []
    with NeverParallel(store.blocks) as write:
        sink = write._write

        def recording(cid, block):
            writers.append(threading.current_thread().name)
            sink(cid, block)

        write._write = recording
        cid = import_bytes(bytearray(data), write)  # a mutable buffer: threaded writes copy it
    assert store.get(cid) == data
    threaded = [name.startswith("kempelen-blocks") for name in writers]
    assert any(threaded) and threaded.count(False) > 10  # probed the thread, then wrote inline
