"""The indexing loop: follow the head at a confirmation depth, detect reorgs, resume anywhere.

Each step is either one block range (rows + checkpoint in one transaction) or one reorg
recovery. A crash between steps loses nothing: the next run starts at the checkpoint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from eth_utils import to_checksum_address

from kempelen.chain import artifacts
from kempelen.db import make_engine, migrate
from kempelen.indexer.decoding import LogDecoder
from kempelen.indexer.errors import IndexerError, RangeTooLarge, ReorgTooDeep, RpcError
from kempelen.indexer.source import JsonRpcSource, LogSource, RangeSizer
from kempelen.indexer.store import Checkpoint, IndexStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """What one step did."""

    last_block: int  # the checkpoint after it
    target_block: int  # head minus confirmations, when the step began
    events: int = 0
    blocks: int = 0
    rolled_back: int = 0  # events removed by a reorg recovery
    fork_block: int | None = None

    @property
    def caught_up(self) -> bool:
        return self.last_block >= self.target_block and self.fork_block is None


def protocol_decoder(chain_id: int) -> LogDecoder:
    return LogDecoder(chain_id, artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi)


class Indexer:
    """Indexes one escrow (and its reputation contract) from `source` into `store`."""

    def __init__(self, source: LogSource, store: IndexStore, *, from_block: int = 0,
                 confirmations: int = 0, sizer: RangeSizer | None = None,
                 decoder: LogDecoder | None = None):
        if confirmations < 0:
            raise IndexerError("confirmations must be 0 or more")
        self.source = source
        self.store = store
        self.confirmations = confirmations
        self.sizer = sizer or RangeSizer()
        self.decoder = decoder or protocol_decoder(store.chain_id)
        self.checkpoint = store.open(from_block)

    def step(self) -> Step:
        cp = self.checkpoint = self.store.checkpoint()
        target = self.source.head() - self.confirmations
        if cp.last_block_hash is not None:
            now = self.source.block(cp.last_block)
            if now is None or now.hash != cp.last_block_hash:
                return self._recover(cp, target)
        if cp.last_block >= target:
            return Step(cp.last_block, target)
        first = cp.last_block + 1
        last = min(target, first + self.sizer.size - 1)
        # The range end's hash is read before its logs: if the chain reorganises in between,
        # the stored hash is the stale one and the next step's check catches it.
        end = self.source.block(last)
        if end is None:
            return Step(cp.last_block, target)  # the chain got shorter under us: look again
        try:
            logs = self.source.logs(first, last)
        except RangeTooLarge:
            self.sizer.refused(last - first + 1)
            return Step(cp.last_block, target)
        rows, hashes = self._rows(logs, first, last)
        if hashes.setdefault(last, end.hash) != end.hash:
            return Step(cp.last_block, target)  # logs from another fork than the header: retry
        self.store.append(cp.last_block, rows, hashes, last)
        self.sizer.fetched(last - first + 1, len(logs))
        return Step(last, target, events=len(rows), blocks=last - first + 1)

    def _rows(self, logs: list[dict], first: int, last: int) -> tuple[list[dict], dict[int, str]]:
        rows, hashes = [], {}
        for log in logs:
            try:
                row = self.decoder.row(log)
            except Exception as exc:  # noqa: BLE001  eth-abi raises many types on malformed data
                raise IndexerError(f"undecodable log {log.get('logIndex')} in block "
                                   f"{log.get('blockNumber')}: {exc}") from None
            if row is None:
                continue  # not one of the protocol's events (e.g. a future upgrade's)
            if not first <= row["block_number"] <= last:
                raise RpcError(f"eth_getLogs for blocks {first}-{last} returned a log of block "
                               f"{row['block_number']}")
            rows.append(row)
            hashes[row["block_number"]] = row["block_hash"]
        return rows, hashes

    def _recover(self, cp: Checkpoint, target: int) -> Step:
        fork, fork_hash = self._fork_point(cp)
        removed = self.store.rollback(cp.last_block, fork, fork_hash)
        return Step(fork, target, rolled_back=removed, fork_block=fork)

    def _fork_point(self, cp: Checkpoint) -> tuple[int, str | None]:
        """The newest kept block that is still canonical: everything above it was reorganised."""
        for number, stored_hash in self.store.recent_blocks():
            if number > cp.last_block:
                continue
            now = self.source.block(number)
            if now is not None and now.hash == stored_hash:
                return number, stored_hash
        if cp.pruned_below <= cp.first_block:
            return cp.first_block - 1, None  # every indexed block was replaced
        raise ReorgTooDeep(
            f"chain {self.store.chain_id} reorganised below block {cp.pruned_below}, the oldest "
            "block hash kept: re-index into a fresh database (or raise the reorg window)")

    def catch_up(self, on_step: Callable[[Step], None] | None = None,
                 stop: threading.Event | None = None) -> Step:
        """Index until the checkpoint reaches head minus confirmations; returns the last step."""
        while True:
            step = self.step()
            if on_step:
                on_step(step)
            if step.caught_up or (stop is not None and stop.is_set()):
                return step

    def follow(self, stop: threading.Event, poll_interval: float = 1.0,
               on_step: Callable[[Step], None] | None = None) -> None:
        """Keep indexing new blocks until `stop` is set (from `kempelen serve` or a signal).

        A node that stops answering is waited for, not fatal: a relay outlives its RPC.
        """
        backoff = poll_interval
        while not stop.is_set():
            try:
                step = self.catch_up(on_step, stop)
                backoff = poll_interval
                # Polled even without a new head: a reorg may keep the chain's height.
                self.source.wait_for_head(step.target_block + self.confirmations,
                                          poll_interval, stop)
            except RpcError as exc:
                log.warning("indexer: %s; retrying in %.0fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)


class IndexerThread:
    """The indexer following the chain in a daemon thread, as `kempelen serve` runs it."""

    def __init__(self, indexer: Indexer, poll_interval: float = 1.0):
        self.indexer = indexer
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(poll_interval,),
                                       name="kempelen-indexer", daemon=True)

    def _run(self, poll_interval: float) -> None:
        try:
            self.indexer.follow(self.stop_event, poll_interval)
        except BaseException as exc:  # noqa: BLE001  kept for the owner to report; the thread just ends
            log.error("indexer stopped: %s", exc)
            self.error = exc

    def start(self) -> IndexerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


def open_indexer(rpc_url: str, database_url: str, escrow: str, reputation: str, *,
                 from_block: int = 0, confirmations: int = 0, window: int = 256) -> Indexer:
    """Migrate `database_url` and build an indexer of `escrow` reading from `rpc_url`."""
    source = JsonRpcSource(rpc_url, [escrow, reputation])
    chain_id = source.chain_id()
    migrate(database_url)
    store = IndexStore(make_engine(database_url), chain_id, to_checksum_address(escrow),
                       to_checksum_address(reputation), window=window)
    return Indexer(source, store, from_block=from_block, confirmations=confirmations)
