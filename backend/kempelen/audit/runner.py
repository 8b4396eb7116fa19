"""One audit, start to end: scan the chain, replay, re-verify signatures and content, assemble."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from kempelen.audit import checks, settlement_checks
from kempelen.audit.content import ContentSource, DirectoryStore, check_files, file_verdict
from kempelen.audit.html import write_html
from kempelen.audit.model import AuditError, AuditReport, Finding, Progress
from kempelen.audit.replay import Replay
from kempelen.audit.report import print_summary, write_json
from kempelen.audit.rpc import Rpc
from kempelen.audit.scan import ChainHistory, Scanner
from kempelen.audit.signatures import Recovery
from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID, raw_cid


def run_audit(
    rpc_url: str,
    escrow: str,
    source: ContentSource | None = None,
    *,
    content_dir: str | Path | None = None,
    from_block: int = 0,
    to_block: int | None = None,
    batches: Iterable[int] = (),
    progress: Progress | None = None,
    workers: int | None = None,
    json_path: Path | None = None,
    html_path: Path | None = None,
    console: Console | None = None,
) -> AuditReport:
    """Audit `escrow` over [from_block, to_block] (default: its whole history up to the head).

    Content comes from `source`, or from the embedded store at `content_dir`. With `json_path`
    / `html_path` the reports are written there; with `console` the summary is printed on it.
    """
    if source is None:
        if content_dir is None:
            raise AuditError("run_audit needs a content source or a content_dir")
        source = DirectoryStore(content_dir)
    report = _audit(rpc_url, escrow, source, from_block, to_block, batches, progress or Progress(), workers)
    if json_path is not None:
        write_json(report, Path(json_path))
    if html_path is not None:
        write_html(report, Path(html_path))
    if console is not None:
        print_summary(report, console)
    return report


def _audit(rpc_url: str, escrow: str, source: ContentSource, from_block: int, to_block: int | None,
           batches: Iterable[int], progress: Progress, workers: int | None) -> AuditReport:
    started = time.perf_counter()
    rpc = Rpc(rpc_url)
    try:
        history = Scanner(rpc, escrow, progress).scan(from_block, to_block)
    finally:
        rpc.close()
    timings = {"rpc_s": history.rpc_seconds, "decode_s": history.decode_seconds}

    began = time.perf_counter()
    replay = Replay(history.escrow, history.block_times, history.senders).run(history.events)
    tokens, money = checks.balance_sheet(replay, history.state)
    findings = replay.findings + money + checks.reputation_findings(history, replay)
    timings["replay_s"] = time.perf_counter() - began

    wanted = set(batches) or set(replay.batches)
    submitted = [a for a in replay.submitted if a.batch in wanted]
    began = time.perf_counter()
    items, owners, paired = checks.pair_signatures(history, submitted)
    # Settlement manifests first (few files): their answers' signatures join the recovery pool.
    manifests, manifest_problems = settlement_checks.load_manifests(
        source, [s for s in replay.settlement.settlements if s.batch in wanted])
    settled_items, settled_owners = settlement_checks.signature_items(manifests)
    recovery = Recovery(history.chain_id, history.escrow, items + settled_items, workers)  # runs during content
    try:
        content, content_checked, verdicts = _content_findings(
            source, replay, submitted, wanted, progress, settlement_checks.answer_cids(manifests))
        timings["content_s"] = time.perf_counter() - began
        waited = time.perf_counter()
        progress.begin("verifying signatures", len(items) + len(settled_items))
        signers = recovery.result()
        progress.advance(len(items) + len(settled_items))
        progress.end()
    finally:
        recovery.close()
    timings["signatures_wait_s"] = time.perf_counter() - waited
    timings["signatures_cpu_s"] = recovery.cpu_seconds
    settled, settlements = settlement_checks.settlement_findings(
        replay, manifests, settled_owners, signers[len(items):], verdicts, history.chain_id, history.escrow)
    claims = settlement_checks.claim_findings([c for c in replay.settlement.claims if c.batch in wanted], manifests)
    claims += settlement_checks.settle_call_findings(
        [s for s in replay.settlement.settlements if s.batch in wanted], history.settle_calls, replay,
        history.chain_id, history.escrow)
    findings += paired + checks.signature_findings(owners, signers[:len(items)]) + content
    findings += manifest_problems + settled + claims
    timings["total_s"] = time.perf_counter() - started

    report = _assemble(history, replay, source, sorted(set(batches)), wanted, findings)
    report.tokens = tokens
    report.settlements = settlements
    report.answers_audited = len(submitted) + len(settled_owners)
    report.signatures_checked = len(items) + len(settled_items)
    report.content_checked = content_checked + len(manifests)
    report.timings = timings
    return report


def _content_findings(source: ContentSource, replay: Replay, submitted, wanted: set[int], progress: Progress,
                      settled_answers: list[CID]) -> tuple[list[Finding], int, dict[CID, str | None]]:
    """Findings of check 4 (settled answers' payloads: verdicts only), how many distinct files were
    verified, and the verdicts by CID."""
    manifests: dict[int, bytes | str] = {}
    findings: list[Finding] = []
    for batch_id in sorted(wanted & set(replay.batches)):
        totals = replay.batches[batch_id].totals
        try:
            cid = CID.parse(totals.manifest_cid)
        except InvalidCID:
            manifests[batch_id] = f"invalid: {totals.manifest_cid} is not a CID"
            continue
        verdict = file_verdict(source, cid)
        manifests[batch_id] = verdict if verdict else source.read_file(cid)
    parsed, manifest_problems = checks.manifest_findings(replay, manifests)
    findings += manifest_problems
    task_cids = [CID.parse(text) for m in parsed.values() for text in m.task_cids]
    answer_cids = [raw_cid(a.digest) for a in submitted]
    rejections = [r for r in replay.rejection_reasons if r.batch in wanted]
    bonuses = [r for r in replay.bonus_reasons if r.batch in wanted]
    reason_cids = checks.reason_cids(rejections + bonuses)
    verdicts = check_files(source, task_cids + answer_cids + settled_answers + reason_cids, progress)
    findings += checks.task_findings(replay, parsed, verdicts)
    findings += checks.answer_findings(submitted, verdicts)
    findings += checks.reason_findings(rejections, verdicts, "rejection")
    findings += checks.reason_findings(bonuses, verdicts, "bonus")
    return findings, len(manifests) + len(verdicts), verdicts


def _assemble(history: ChainHistory, replay: Replay, source: ContentSource, batch_filter: list[int],
              wanted: set[int], findings: list[Finding]) -> AuditReport:
    if batch_filter:
        findings = [f for f in findings if f.batch is None or f.batch in wanted]
    findings.sort(key=lambda f: (f.block is None, f.block or 0, f.check, f.code))
    report = AuditReport(
        chain_id=history.chain_id, escrow=history.escrow, reputation=history.reputation,
        from_block=history.from_block, to_block=history.to_block, to_timestamp=history.to_timestamp,
        content_source=source.name, batch_filter=tuple(batch_filter), findings=findings,
    )
    report.batches = {i: ledger.totals for i, ledger in sorted(replay.batches.items()) if i in wanted}
    report.worker_earnings = dict(replay.earnings)
    report.payments = replay.payments
    report.review_delays = replay.delays
    return report
