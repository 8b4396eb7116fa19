"""Re-verifying workers' EIP-712 signatures from calldata, on every core.

The auditor does not take the contract's word that a signature was valid: it rebuilds
the Answer digest under this chain's and this escrow's domain and recovers the signer
itself (coincurve, ~9,000/s per core). Large audits fan out to a process pool.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from kempelen.protocol.signing import Answer, Domain, SignatureError, recover

POOL_THRESHOLD = 4_000  # below this a pool's start-up costs more than it saves
CHUNK = 1_000

# (batchId, taskIndex, answerDigest, worker) and the relayed signature bytes.
SignedAnswer = tuple[tuple[int, int, bytes, str], bytes]


def _recover_chunk(args: tuple[int, str, list[SignedAnswer]]) -> list[str]:
    """Signers of a chunk of answers; 'error: ...' where a signature cannot be recovered."""
    chain_id, escrow, items = args
    domain = Domain(chain_id, escrow)
    signers = []
    for (batch_id, task_index, digest, worker), signature in items:
        message = Answer(batch_id, task_index, digest, worker)
        try:
            signers.append(recover(domain.digest(message.struct_hash()), signature))
        except SignatureError as exc:
            signers.append(f"error: {exc}")
    return signers


def recover_signers(chain_id: int, escrow: str, items: list[SignedAnswer], workers: int | None = None) -> list[str]:
    """The address each signature recovers to under Domain(chain_id, escrow), in order."""
    chunks = [(chain_id, escrow, items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
    workers = workers or os.cpu_count() or 1
    if len(items) < POOL_THRESHOLD or workers < 2:
        return [signer for chunk in chunks for signer in _recover_chunk(chunk)]
    # forkserver: forking a process that holds httpx/anyio threads is unsafe.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver")) as pool:
        return [signer for signers in pool.map(_recover_chunk, chunks) for signer in signers]
