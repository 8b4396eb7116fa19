"""Blocks appended to pack files and found through a SQLite index: one write per block, no file per block.

Layout of `<root>/blocks/packs/`:

    index.sqlite    blocks: multihash -> (pack, offset, length) of its bytes
                    packs:  pack number -> committed_end (end of its last indexed record)
    00000001.pack   b"KMPACK1\\n", then records: u32 LE data length, u8 multihash
                    length, the multihash, the block's bytes

Concurrency: a writer appends only to a pack it holds an exclusive flock on, so
two processes (or two store objects) never interleave bytes; a pack whose
writer has gone is reused by the next one to lock it. The index is SQLite in
WAL mode, shared by every process.

Crash safety: a block's row is committed only after its record is written (and
fsynced, with fsync=True), so a writer killed mid-add leaves unindexed bytes
that nothing points at. A row whose record lies past the end of its pack (the
file lost its tail while the index kept the row: power loss without fsync, or
a truncated copy) is a torn tail: `has` is false and `read` returns None, so a
re-add writes the block again. No pack is appended to once it is shorter than
its committed end. Bytes inside a pack are only trusted after the caller
re-hashes them.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

MAGIC = b"KMPACK1\n"
RECORD = struct.Struct("<IB")  # data length, multihash length; then the multihash, then the data
PACK_LIMIT = 1 << 30  # a writer starts a new pack once its pack would grow past this
COMMIT_EVERY = 256  # index rows per transaction in a long add: bounds memory and the work a crash loses

SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, committed_end INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    multihash BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL
) WITHOUT ROWID;
"""

# SQLite connections a forked child inherited: never used nor closed there (closing one
# could checkpoint or unlock on the parent's behalf), only kept from the collector.
_inherited: list[object] = []


@dataclass(frozen=True, slots=True)
class Extent:
    pack: int
    offset: int  # of the block's bytes, past the record header
    length: int


@dataclass(slots=True)
class _Pack:
    """A pack this store holds the exclusive flock on: it alone appends to it."""

    number: int
    file: object  # FileIO: closing it (or collecting it) drops the lock
    end: int


class PackStore:
    """Pack files plus their index under one directory; safe across threads and processes."""

    def __init__(self, directory: Path, *, fsync: bool = False, pack_limit: int = PACK_LIMIT) -> None:
        self.directory = directory
        self.index_path = directory / "index.sqlite"
        self._fsync = fsync
        self._pack_limit = pack_limit
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._read_lock = threading.Lock()  # the reading connection
        self._db_lock = threading.Lock()  # the writing connection
        self._append_lock = threading.Lock()  # the active pack and its end
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._active: _Pack | None = None
        self._held: dict[int, _Pack] = {}  # every pack this store appended to; kept open and locked
        self._read_files: dict[int, object] = {}
        self._sizes: dict[int, int] = {}  # pack sizes seen; packs only grow

    def _after_fork(self) -> None:
        # A forked child shares its parent's flocked pack and SQLite handles: it must use neither.
        if os.getpid() != self._pid:
            _inherited.extend(db for db in (self._reader, self._writer) if db is not None)
            self._reset()

    def pack_path(self, number: int) -> Path:
        return self.directory / f"{number:08d}.pack"

    # -- reading --------------------------------------------------------------------

    def locate(self, key: bytes) -> Extent | None:
        """Where the index puts the block with multihash `key`, torn or not."""
        self._after_fork()
        with self._read_lock:
            if self._reader is None:
                if not self.index_path.exists():
                    return None  # nothing was ever packed here
                self._reader = _connect(self.index_path, fsync=False)
            row = self._reader.execute(
                "SELECT pack, offset, length FROM blocks WHERE multihash = ?", (key,)).fetchone()
        return Extent(*row) if row else None

    def has(self, key: bytes) -> bool:
        extent = self.locate(key)
        return extent is not None and self._is_whole(extent)

    def read(self, key: bytes) -> tuple[bytes, Extent] | None:
        """The bytes the index points at (not yet verified), or None if absent or torn."""
        extent = self.locate(key)
        if extent is None:
            return None
        try:
            block = os.pread(self._read_fd(extent.pack), extent.length, extent.offset)
        except FileNotFoundError:
            return None
        return (block, extent) if len(block) == extent.length else None

    def iter_extents(self) -> Iterator[tuple[bytes, Extent]]:
        """Every indexed block, in pack order; a snapshot taken when iteration starts."""
        if not self.index_path.exists():
            return
        db = _connect(self.index_path, fsync=False)
        try:
            rows = db.execute("SELECT multihash, pack, offset, length FROM blocks ORDER BY pack, offset")
            for key, pack, offset, length in rows:
                yield key, Extent(pack, offset, length)
        finally:
            db.close()

    def read_extent(self, extent: Extent) -> bytes | None:
        try:
            block = os.pread(self._read_fd(extent.pack), extent.length, extent.offset)
        except FileNotFoundError:
            return None
        return block if len(block) == extent.length else None

    def _is_whole(self, extent: Extent) -> bool:
        end = extent.offset + extent.length
        if end <= self._sizes.get(extent.pack, 0):
            return True
        try:
            size = os.fstat(self._read_fd(extent.pack)).st_size
        except FileNotFoundError:
            return False
        self._sizes[extent.pack] = size
        return end <= size

    def _read_fd(self, pack: int) -> int:
        file = self._read_files.get(pack)
        if file is None:
            file = self._read_files.setdefault(pack, open(self.pack_path(pack), "rb", buffering=0))
        return file.fileno()

    # -- writing --------------------------------------------------------------------

    def session(self) -> PackSession:
        return PackSession(self)

    def append(self, key: bytes, block: bytes | memoryview) -> tuple[_Pack, Extent]:
        """Write one record to this store's pack; the index does not know it yet."""
        self._after_fork()
        header = RECORD.pack(len(block), len(key)) + key
        size = len(header) + len(block)
        with self._append_lock:
            pack = self._active
            if pack is None or (pack.end + size > self._pack_limit and pack.end > len(MAGIC)):
                pack = self._active = self._claim()
                self._held[pack.number] = pack
            offset = pack.end
            pack.end += size  # reserved: threads write their records side by side
        _pwrite_all(pack.file.fileno(), header, block, offset)
        return pack, Extent(pack.number, offset + len(header), len(block))

    def commit(self, rows: list[tuple[bytes, int, int, int]], packs: set[int]) -> None:
        """Index records already written to `packs` (fsynced first when asked)."""
        if self._fsync:
            for number in packs:
                os.fsync(self._held[number].file.fileno())
        ends: dict[int, int] = {}
        for _, pack, offset, length in rows:
            ends[pack] = max(ends.get(pack, 0), offset + length)
        with self._db_lock, self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)", rows)
            db.executemany("UPDATE packs SET committed_end = max(committed_end, ?) WHERE id = ?",
                           [(end, pack) for pack, end in ends.items()])

    def delete(self, key: bytes) -> None:
        """Forget the block: its row goes, its bytes stay in the pack as dead space."""
        self._after_fork()
        if not self.index_path.exists():
            return
        with self._db_lock, self._transaction() as db:
            db.execute("DELETE FROM blocks WHERE multihash = ?", (key,))

    def _claim(self) -> _Pack:
        """Lock a pack to append to: one whose writer has gone, else a new one."""
        with self._db_lock:
            db = self._writer_db()
            candidates = db.execute("SELECT id, committed_end FROM packs WHERE committed_end < ? ORDER BY id",
                                    (self._pack_limit,)).fetchall()
        for number, committed_end in candidates:
            if number not in self._held and (pack := self._lock(number, committed_end)):
                return pack
        while True:
            with self._db_lock, self._transaction() as db:
                number = db.execute("INSERT INTO packs (committed_end) VALUES (?)", (len(MAGIC),)).lastrowid
            if pack := self._lock(number, 0, create=True):
                return pack

    def _lock(self, number: int, committed_end: int, create: bool = False) -> _Pack | None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(self.pack_path(number), flags, 0o644)
        except (FileNotFoundError, FileExistsError):
            return None
        file = open(fd, "r+b", buffering=0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None  # another writer's
        end = os.fstat(fd).st_size
        if end < committed_end or end >= self._pack_limit:
            file.close()  # lost indexed bytes (never write over them), or full
            return None
        if end < len(MAGIC):
            os.pwrite(fd, MAGIC, 0)
            end = len(MAGIC)
        elif os.pread(fd, len(MAGIC), 0) != MAGIC:
            file.close()
            return None
        return _Pack(number, file, end)

    def _writer_db(self) -> sqlite3.Connection:
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = _connect(self.index_path, fsync=self._fsync)
        return self._writer

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._writer_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Release the packs this store holds; it reopens what it needs on next use."""
        for db in (self._reader, self._writer):
            if db is not None and os.getpid() == self._pid:
                db.close()
        for file in [*self._held.values(), *self._read_files.values()]:
            (file.file if isinstance(file, _Pack) else file).close()
        self._reset()


class PackSession:
    """One add's writes: records are appended at once, their index rows committed in batches.

    Use as a context manager: rows still pending are committed when it closes,
    even after an error, since every record they point at is whole.
    """

    def __init__(self, packs: PackStore) -> None:
        self._packs = packs
        self._rows: list[tuple[bytes, int, int, int]] = []
        self._pending: set[bytes] = set()
        self._touched: set[int] = set()

    def write(self, key: bytes, block: bytes | memoryview) -> None:
        if key in self._pending or self._packs.has(key):
            return  # content-addressed: stored once (a torn copy does not count)
        pack, extent = self._packs.append(key, block)
        self._rows.append((key, extent.pack, extent.offset, extent.length))
        self._pending.add(key)
        self._touched.add(pack.number)
        if len(self._rows) >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        if self._rows:
            self._packs.commit(self._rows, self._touched)
        self._rows, self._pending, self._touched = [], set(), set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.commit()


def _connect(path: Path, *, fsync: bool) -> sqlite3.Connection:
    # Autocommit mode: writes run in explicit BEGIN IMMEDIATE transactions, so two
    # processes never deadlock upgrading a read lock. WAL lets readers run beside
    # the one writer; synchronous=NORMAL keeps the index consistent on power loss
    # (it may lose its last commits, whose blocks are then simply re-added).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
    db.executescript(SCHEMA)
    return db


def _pwrite_all(fd: int, header: bytes, block: bytes | memoryview, offset: int) -> None:
    written = os.pwritev(fd, [header, block], offset)
    total = len(header) + len(block)
    if written < total:  # rare (a signal, a nearly full disk): finish from a flat copy
        rest = (header + bytes(block))[written:]
        while rest:
            done = os.pwrite(fd, rest, offset + written)
            rest, written = rest[done:], written + done
