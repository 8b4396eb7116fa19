"""Re-verifying workers' EIP-712 signatures from calldata, on every core.

The auditor does not take the contract's word that a signature was valid: it rebuilds
the Answer digest under this chain's and this escrow's domain and recovers the signer
itself (coincurve, ~9,000/s per core). Large audits fan out to a process pool that runs
while the main process verifies content, so both cores stay busy.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from kempelen.protocol.signing import Answer, Domain, SignatureError, recover

POOL_THRESHOLD = 4_000  # below this a pool's start-up costs more than it saves
CHUNK = 500

# (batchId, taskIndex, answerDigest, worker) and the relayed signature bytes.
SignedAnswer = tuple[tuple[int, int, bytes, str], bytes]


def _recover_chunk(args: tuple[int, str, list[SignedAnswer]]) -> tuple[list[str], float]:
    """Signers of a chunk ('error: ...' where unrecoverable), and the CPU seconds it took."""
    began = time.process_time()
    chain_id, escrow, items = args
    domain = Domain(chain_id, escrow)
    signers = []
    for (batch_id, task_index, digest, worker), signature in items:
        message = Answer(batch_id, task_index, digest, worker)
        try:
            signers.append(recover(domain.digest(message.struct_hash()), signature))
        except SignatureError as exc:
            signers.append(f"error: {exc}")
    return signers, time.process_time() - began


class Recovery:
    """Recovers the signer of each item under Domain(chain_id, escrow), in the background if large."""

    def __init__(self, chain_id: int, escrow: str, items: list[SignedAnswer], workers: int | None = None):
        self._chunks = [(chain_id, escrow, items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
        workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future] = []
        self.cpu_seconds = 0.0
        # fork, and only from a single-threaded process: a fork can inherit a lock another thread
        # held. (spawn/forkserver would re-import the caller's __main__, which library callers'
        # scripts need not guard.) Otherwise recovery runs in this process.
        if len(items) >= POOL_THRESHOLD and workers > 1 and threading.active_count() == 1:
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
            self._futures = [self._pool.submit(_recover_chunk, chunk) for chunk in self._chunks]

    def close(self) -> None:
        """Stop the pool without waiting for work nobody will read (the audit failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def result(self) -> list[str]:
        """Signers in item order; waits for the pool if one is running."""
        try:
            outcomes = None
            if self._pool is not None:
                try:
                    outcomes = [future.result() for future in self._futures]
                except BrokenProcessPool:  # a worker was killed (e.g. out of memory): do it here
                    outcomes = None
            if outcomes is None:
                outcomes = [_recover_chunk(chunk) for chunk in self._chunks]
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        self.cpu_seconds = sum(seconds for _, seconds in outcomes)
        return [signer for signers, _ in outcomes for signer in signers]


def recover_signers(chain_id: int, escrow: str, items: list[SignedAnswer], workers: int | None = None) -> list[str]:
    return Recovery(chain_id, escrow, items, workers).result()
