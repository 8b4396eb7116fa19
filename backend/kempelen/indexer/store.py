"""The indexer's database edge: events, projections and checkpoint, each step in one transaction.

Sums are added in Python, not in SQL, because SQLite holds uint256 amounts as text (see
models.Uint256). That read-modify-write is safe because every step first moves the
checkpoint with a compare-and-set, which serialises writers of the same chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from kempelen.indexer.errors import CheckpointConflict, IndexerError
from kempelen.indexer.models import (
    BATCH_TABLES,
    ChainEvent,
    IndexCheckpoint,
    IndexedAnswer,
    IndexedBalance,
    IndexedBatch,
    IndexedBlock,
    IndexedClaim,
    IndexedReputation,
    IndexedSettledAnswer,
    IndexedSettledWordsOpened,
    IndexedSettlement,
)
from kempelen.indexer.projection import (
    BATCH_COUNTERS,
    REPUTATION_COUNTERS,
    BatchTerms,
    Changes,
    project,
    referenced_batches,
)

_KEYS_PER_QUERY = 500  # well under SQLite's bound-parameter limit
_REVIEW_COLUMNS = ("status", "reason_cid", "reviewed_block", "reviewed_tx")
_BATCH_OVERRIDES = ("deadline", "answers_per_task", "gold_cid", "gold_salt", "updated_block")

_BATCH_UPDATE_KEYS = ("chain_id", "batch_id", *BATCH_COUNTERS, *_BATCH_OVERRIDES)


@dataclass(frozen=True)
class Checkpoint:
    first_block: int
    last_block: int
    last_block_hash: str | None
    pruned_below: int


def _chunks(items: Sequence, size: int = _KEYS_PER_QUERY) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class IndexStore:
    """One (chain, escrow) in one database."""

    def __init__(self, engine: Engine, chain_id: int, escrow: str, reputation: str,
                 *, window: int = 256):
        self.engine = engine
        self.chain_id = chain_id
        self.escrow = escrow
        self.reputation = reputation
        self.window = window  # blocks whose hashes are kept for finding a fork point

    # -- checkpoint ------------------------------------------------------------

    def open(self, first_block: int) -> Checkpoint:
        """The checkpoint, created at `first_block` for a new database; a resumed one ignores it."""
        cp = IndexCheckpoint.__table__
        with self.engine.begin() as conn:
            rows = conn.execute(select(cp).where(cp.c.chain_id == self.chain_id)).mappings().all()
            others = [r["escrow"] for r in rows if r["escrow"].lower() != self.escrow.lower()]
            if others:
                raise IndexerError(
                    f"this database already indexes escrow {others[0]} on chain {self.chain_id}; "
                    f"use another database for escrow {self.escrow}")
            if not rows:
                conn.execute(insert(cp).values(
                    chain_id=self.chain_id, escrow=self.escrow, reputation=self.reputation,
                    first_block=first_block, last_block=first_block - 1, last_block_hash=None,
                    pruned_below=first_block, updated_at=datetime.now(UTC)))
        return self.checkpoint()

    def checkpoint(self) -> Checkpoint:
        cp = IndexCheckpoint.__table__
        with self.engine.connect() as conn:
            row = conn.execute(select(cp).where(
                cp.c.chain_id == self.chain_id, cp.c.escrow == self.escrow)).mappings().one()
        return Checkpoint(row["first_block"], row["last_block"], row["last_block_hash"],
                          row["pruned_below"])

    def _move_checkpoint(self, conn: Connection, expected: int, last: int,
                         last_hash: str | None) -> None:
        cp = IndexCheckpoint.__table__
        values = {"last_block": last, "last_block_hash": last_hash,
                  "updated_at": datetime.now(UTC)}
        moved = conn.execute(update(cp).where(
            cp.c.chain_id == self.chain_id, cp.c.escrow == self.escrow,
            cp.c.last_block == expected).values(**values)).rowcount
        if moved != 1:
            raise CheckpointConflict(
                f"the checkpoint of chain {self.chain_id} moved past block {expected} while this "
                "indexer worked: is another indexer writing to the same database?")

    def recent_blocks(self) -> list[tuple[int, str]]:
        """Kept block hashes, newest first: where a fork point is searched."""
        blocks = IndexedBlock.__table__
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(blocks.c.number, blocks.c.hash).where(blocks.c.chain_id == self.chain_id)
                .order_by(blocks.c.number.desc()))]

    # -- forward ---------------------------------------------------------------

    def append(self, expected_last: int, rows: list[dict], block_hashes: dict[int, str],
               last_block: int) -> None:
        """Store the events of blocks (expected_last, last_block] with their projections."""
        pruned_below = max(0, last_block - self.window)
        with self.engine.begin() as conn:
            self._move_checkpoint(conn, expected_last, last_block, block_hashes[last_block])
            bulk_insert(conn, ChainEvent.__table__, rows)
            terms = self._terms(conn, referenced_batches(rows))
            self._apply(conn, project(self.chain_id, rows, terms))
            blocks = IndexedBlock.__table__
            conn.execute(insert(blocks), [{"chain_id": self.chain_id, "number": n, "hash": h}
                                          for n, h in sorted(block_hashes.items())])
            conn.execute(delete(blocks).where(blocks.c.chain_id == self.chain_id,
                                              blocks.c.number < pruned_below))
            cp = IndexCheckpoint.__table__
            conn.execute(update(cp).where(
                cp.c.chain_id == self.chain_id, cp.c.escrow == self.escrow,
                cp.c.pruned_below < pruned_below).values(pruned_below=pruned_below))

    # -- reorganisation --------------------------------------------------------

    def rollback(self, expected_last: int, fork_block: int, fork_hash: str | None) -> int:
        """Forget blocks above `fork_block`; returns how many events went with them.

        Balances and reputation are sums: the removed events' contributions are subtracted.
        Batches and the rows that belong to them (answers, settlements, settled answers, claims,
        opened settled words) hold latest states (status, extended deadline): the touched batches are rebuilt from
        the events that remain.
        """
        events, blocks = ChainEvent.__table__, IndexedBlock.__table__
        with self.engine.begin() as conn:
            self._move_checkpoint(conn, expected_last, fork_block, fork_hash)
            removed = self._events(conn, events.c.block_number > fork_block)
            batch_ids = referenced_batches(removed)
            terms = self._terms(conn, batch_ids)
            self._apply(conn, project(self.chain_id, removed, terms).negated_accounts())
            self._delete_batches(conn, batch_ids)
            conn.execute(delete(events).where(events.c.chain_id == self.chain_id,
                                              events.c.block_number > fork_block))
            conn.execute(delete(blocks).where(blocks.c.chain_id == self.chain_id,
                                              blocks.c.number > fork_block))
            remaining = []
            for ids in _chunks(sorted(batch_ids)):
                remaining += self._events(conn, events.c.batch_id.in_(ids))
            remaining.sort(key=lambda r: (r["block_number"], r["log_index"]))
            rebuilt = project(self.chain_id, remaining, {})
            self._apply(conn, Changes(batches=rebuilt.batches, batch_deltas=rebuilt.batch_deltas,
                                      answers=rebuilt.answers, reviews=rebuilt.reviews,
                                      settlements=rebuilt.settlements,
                                      settled_answers=rebuilt.settled_answers,
                                      claims=rebuilt.claims, opened=rebuilt.opened))
        return len(removed)

    def _events(self, conn: Connection, condition) -> list[dict]:
        events = ChainEvent.__table__
        query = select(events).where(events.c.chain_id == self.chain_id, condition).order_by(
            events.c.block_number, events.c.log_index)
        return [dict(r) for r in conn.execute(query).mappings()]

    def _delete_batches(self, conn: Connection, batch_ids: set[int]) -> None:
        for table in (model.__table__ for model in BATCH_TABLES):
            for ids in _chunks(sorted(batch_ids)):
                conn.execute(delete(table).where(table.c.chain_id == self.chain_id,
                                                 table.c.batch_id.in_(ids)))

    # -- projections -----------------------------------------------------------

    def _terms(self, conn: Connection, batch_ids: set[int]) -> dict[int, BatchTerms]:
        batches = IndexedBatch.__table__
        terms = {}
        for ids in _chunks(sorted(batch_ids)):
            for r in conn.execute(select(batches.c.batch_id, batches.c.token, batches.c.reward,
                                         batches.c.relay_fee).where(
                    batches.c.chain_id == self.chain_id, batches.c.batch_id.in_(ids))):
                terms[r.batch_id] = BatchTerms(r.token, r.reward, r.relay_fee)
        return terms

    def _apply(self, conn: Connection, changes: Changes) -> None:
        self._apply_batches(conn, changes)
        self._apply_answers(conn, changes)
        bulk_insert(conn, IndexedSettlement.__table__, list(changes.settlements.values()))
        bulk_insert(conn, IndexedSettledAnswer.__table__, list(changes.settled_answers.values()))
        bulk_insert(conn, IndexedClaim.__table__, list(changes.claims.values()))
        bulk_insert(conn, IndexedSettledWordsOpened.__table__, list(changes.opened.values()))
        self._apply_sums(conn, IndexedBalance.__table__, ("token", "account"),
                         ("credited", "withdrawn"), changes.balances)
        self._apply_sums(conn, IndexedReputation.__table__, ("address",), REPUTATION_COUNTERS,
                         {(k,): v for k, v in changes.reputation.items()})

    def _apply_batches(self, conn: Connection, changes: Changes) -> None:
        batches = IndexedBatch.__table__
        new_rows = []
        for batch_id, row in changes.batches.items():
            new_rows.append(_merge_batch(dict(row), changes.batch_deltas.get(batch_id, {})))
        if new_rows:
            conn.execute(insert(batches), new_rows)
        older = sorted(set(changes.batch_deltas) - set(changes.batches))
        updates = []
        for ids in _chunks(older):
            for current in conn.execute(select(batches).where(
                    batches.c.chain_id == self.chain_id, batches.c.batch_id.in_(ids))).mappings():
                merged = _merge_batch(dict(current), changes.batch_deltas[current["batch_id"]])
                updates.append({f"b_{k}": merged[k] for k in _BATCH_UPDATE_KEYS})
        if updates:
            columns = _BATCH_UPDATE_KEYS[2:]
            conn.execute(update(batches).where(
                batches.c.chain_id == bindparam("b_chain_id"),
                batches.c.batch_id == bindparam("b_batch_id"),
            ).values({c: bindparam(f"b_{c}") for c in columns}), updates)

    def _apply_answers(self, conn: Connection, changes: Changes) -> None:
        answers = IndexedAnswer.__table__
        bulk_insert(conn, answers, list(changes.answers.values()))
        if not changes.reviews:
            return
        if conn.dialect.name == "postgresql":
            self._update_reviews_by_copy(conn, changes.reviews)
            return
        # The driver's executemany: SQLAlchemy's per-row parameter handling costs more than SQLite.
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(
                "UPDATE indexed_answers SET status = ?, reason_cid = ?, reviewed_block = ?, "
                "reviewed_tx = ? WHERE chain_id = ? AND batch_id = ? AND worker = ? AND task_index = ?",
                [(*(review[c] for c in _REVIEW_COLUMNS), self.chain_id, *key)
                 for key, review in changes.reviews.items()])
        finally:
            cursor.close()

    def _update_reviews_by_copy(self, conn: Connection, reviews: dict) -> None:
        """Reviews of earlier answers in one UPDATE ... FROM a COPYed temporary table: one
        round trip for thousands of approvals instead of one each."""
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE answer_reviews (batch_id bigint, worker varchar(42), "
            "task_index bigint, status varchar(16), reason_cid varchar(128), reviewed_block bigint, "
            "reviewed_tx varchar(66)) ON COMMIT DROP")
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy("COPY answer_reviews FROM STDIN") as copy:
            for (batch_id, worker, task_index), review in reviews.items():
                copy.write_row([batch_id, worker, task_index,
                                *(review[c] for c in _REVIEW_COLUMNS)])
        conn.exec_driver_sql(
            "UPDATE indexed_answers AS a SET status = r.status, reason_cid = r.reason_cid, "
            "reviewed_block = r.reviewed_block, reviewed_tx = r.reviewed_tx FROM answer_reviews AS r "
            "WHERE a.chain_id = %(chain_id)s AND a.batch_id = r.batch_id AND a.worker = r.worker "
            "AND a.task_index = r.task_index", {"chain_id": self.chain_id})
        conn.exec_driver_sql("DROP TABLE answer_reviews")

    def _apply_sums(self, conn: Connection, table, key_columns: tuple[str, ...],
                    columns: Sequence[str], deltas: dict[tuple, list[int]]) -> None:
        """Add `deltas` to rows keyed by `key_columns`; rows that fall back to all zeros go."""
        if not deltas:
            return
        keys = sorted(deltas)
        key_cols = [table.c[k] for k in key_columns]
        current: dict[tuple, list[int]] = {}
        for chunk in _chunks(keys):
            found = conn.execute(select(*key_cols, *(table.c[c] for c in columns)).where(
                table.c.chain_id == self.chain_id, tuple_(*key_cols).in_(chunk)))
            for r in found:
                current[tuple(r[:len(key_cols)])] = list(r[len(key_cols):])
        inserts, updates, drops = [], [], []
        for key in keys:
            before = current.get(key)
            after = [a + b for a, b in zip(before or [0] * len(columns), deltas[key])]
            if any(v < 0 for v in after):
                raise IndexerError(f"{table.name} {key} would go negative: the index is inconsistent")
            named = {"chain_id": self.chain_id, **dict(zip(key_columns, key))}
            if not any(after):
                if before is not None:
                    drops.append(key)
            elif before is None:
                inserts.append({**named, **dict(zip(columns, after))})
            else:
                updates.append({**{f"k_{k}": v for k, v in named.items()},
                                **{f"v_{c}": v for c, v in zip(columns, after)}})
        if inserts:
            conn.execute(insert(table), inserts)
        if updates:
            where = and_(*(table.c[k] == bindparam(f"k_{k}") for k in ("chain_id", *key_columns)))
            conn.execute(update(table).where(where).values(
                {c: bindparam(f"v_{c}") for c in columns}), updates)
        for chunk in _chunks(drops):
            conn.execute(delete(table).where(table.c.chain_id == self.chain_id,
                                             tuple_(*key_cols).in_(chunk)))


def bulk_insert(conn: Connection, table: Table, rows: list[dict]) -> None:
    """Insert many rows below SQLAlchemy's per-row parameter handling (half the indexing time
    otherwise): COPY on PostgreSQL, the driver's executemany on SQLite, with the columns' own
    bind processors (JSON, Uint256) applied once per value."""
    if not rows:
        return
    dialect = conn.dialect
    columns = list(table.columns)
    names = [c.name for c in columns]
    cursor = conn.connection.driver_connection.cursor()
    if dialect.name == "postgresql":
        as_json = {c.name for c in columns if isinstance(c.type, (JSON, JSONB))}
        with cursor, cursor.copy(f'COPY {table.name} ({", ".join(names)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([json.dumps(row[n]) if n in as_json else row[n] for n in names])
        return
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    steps = [(n, p) for n, p in zip(names, processors)]
    sql = f'INSERT INTO {table.name} ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'
    try:
        cursor.executemany(sql, [tuple(row[n] if p is None else p(row[n]) for n, p in steps)
                                 for row in rows])
    finally:
        cursor.close()


def _merge_batch(row: dict, delta: dict) -> dict:
    for name, value in delta.items():
        if name in BATCH_COUNTERS:
            row[name] = row[name] + value
        else:
            row[name] = value
    return row
