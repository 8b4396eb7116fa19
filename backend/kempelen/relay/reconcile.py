"""Reconciliation with the chain: what became of answers whose transaction the submitter lost track of.

Runs on start and periodically. An answer is "orphaned" when it is marked submitted but its
transaction can no longer carry it (dropped, replaced, reverted). The escrow is the judge:
answerStatus None means the answer never landed, so it goes back to the queue; anything else
means it is on-chain (ours, or the same worker's answer sent by someone else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from kempelen.relay import outbox
from kempelen.relay.packing import QueuedAnswer
from kempelen.relay.receipts import ALREADY_ANSWERED
from kempelen.relay.relayer import Relayer

log = logging.getLogger("kempelen.relay.submitter")


@dataclass
class Reconciled:
    onchain: int = 0
    requeued: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Fate:
    """Where the chain says an answer is: "onchain" or "skipped" (another answer of the worker won)."""

    status: str
    block_number: int | None = None
    tx_hash: str | None = None
    skip_reason: str | None = None


def chain_fate(relayer: Relayer, answer: QueuedAnswer) -> Fate | None:
    """The answer's fate per the escrow; None when it is not on-chain (safe to send again)."""
    status = relayer.answer_status(answer.batch_id, answer.worker, answer.task_index)
    if status == "None":
        return None
    landed = relayer.submitted_digest(answer.batch_id, answer.worker, answer.task_index)
    if landed is None:  # logs pruned by the node: the status alone says it landed
        return Fate("onchain")
    digest, block, tx_hash = landed
    if digest != answer.answer_digest:
        # The worker's other answer to this task landed (sent by someone else): ours never will.
        return Fate("skipped", block, tx_hash, ALREADY_ANSWERED)
    return Fate("onchain", block, tx_hash)


def resolve_orphans(engine: Engine, relayer: Relayer, chain_id: int) -> Reconciled:
    """Settle every orphaned answer from the chain; each answer in its own small write."""
    with engine.connect() as conn:
        orphans = outbox.orphaned(conn, chain_id)
    report = Reconciled()
    for answer in orphans:
        fate = chain_fate(relayer, answer)
        with engine.begin() as conn:
            if fate is None:
                report.requeued += outbox.requeue(conn, [answer.id])
            elif fate.status == "onchain":
                outbox.mark_onchain(conn, [answer.id], fate.block_number, fate.tx_hash)
                report.onchain += 1
            else:
                outbox.skip(conn, answer.id, fate.skip_reason)
                report.skipped += 1
    if orphans:
        log.info("reconciled %d orphaned answers: %d on-chain, %d back in the queue, %d skipped",
                 len(orphans), report.onchain, report.requeued, report.skipped)
    return report
