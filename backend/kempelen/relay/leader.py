"""Exactly one active submitter per database and chain: the others stand by until it goes away.

PostgreSQL: a session-level advisory lock on a dedicated connection; SQLite: an flock on a
file beside the database. Both are released by the server or the kernel when the holder dies,
even by SIGKILL, so a crashed submitter never blocks its successor (a lock *row* would need
leases and clocks to get the same guarantee).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from kempelen.errors import KempelenError


class LeadershipLost(KempelenError):
    """The submitter's lock connection died: another submitter may take over."""


def lock_key(chain_id: int) -> int:
    """A signed 64-bit advisory lock key naming the submitter of one chain."""
    digest = hashlib.sha256(f"kempelen.relay.submitter:{chain_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SubmitterLock:
    """try_acquire() -> bool, check() raises LeadershipLost, release(); one instance per process."""

    def __init__(self, engine: Engine, chain_id: int):
        self.engine = engine
        self.key = lock_key(chain_id)
        self._connection = None
        self._file = None
        self.held = False

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            self.held = self._try_advisory()
        elif self.engine.dialect.name == "sqlite":
            self.held = self._try_flock()
        else:
            raise KempelenError(f"no submitter lock for database {self.engine.dialect.name!r}")
        return self.held

    def _try_advisory(self) -> bool:
        connection = self.engine.connect()
        got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
        connection.commit()
        if got:
            self._connection = connection
        else:
            connection.close()
        return bool(got)

    def _try_flock(self) -> bool:
        database = make_url(str(self.engine.url)).database
        if not database or database == ":memory:":
            return True  # a private in-memory database has one process by construction
        path = Path(f"{database}.submitter-{self.key & 0xFFFFFFFF:08x}.lock")
        handle = open(path, "a+")  # noqa: SIM115  (held open: the lock lives as long as the handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def check(self) -> None:
        """Raise LeadershipLost if the PostgreSQL session holding the lock is gone."""
        if not self.held or self._connection is None:
            return
        try:
            self._connection.execute(text("SELECT 1")).scalar()
            self._connection.commit()
        except SQLAlchemyError as exc:  # any driver error means the session, and the lock, may be gone
            self._drop()
            raise LeadershipLost(f"lost the submitter lock: {type(exc).__name__}") from None

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                self._connection.commit()
            except SQLAlchemyError:  # closing the session below releases it anyway
                pass
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self.held = False
