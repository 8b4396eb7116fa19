"""An audit report for people (a Rich summary read in ten seconds) and machines (JSON, schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kempelen.audit.model import CHECKS, DISCREPANCY, AuditReport, TokenTotals

SCHEMA_ID = "kempelen/audit-report/2"
SCHEMA_PATH = Path(__file__).with_name("schema.json")
SHOWN_FINDINGS = 12


def amount(value: int, totals: TokenTotals) -> str:
    """A token amount in whole units to at most 6 decimals, e.g. 1.25 ETH or 300 tUSDC."""
    whole, frac = divmod(abs(value), 10**totals.decimals)
    digits = min(totals.decimals, 6)
    text = f"{whole:,}.{frac * 10**digits // 10**totals.decimals:0{digits}d}" if digits else f"{whole:,}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    approximate = "~" if frac * 10**digits % 10**totals.decimals else ""
    return f"{'-' if value < 0 else ''}{approximate}{text} {totals.symbol}"


def to_json(report: AuditReport) -> dict:
    """The report in the stable, documented form of schema.json; amounts are decimal strings."""
    per_check = {check: 0 for check in CHECKS}
    for finding in report.discrepancies:
        per_check[finding.check] += 1
    return {
        "schema": SCHEMA_ID,
        "clean": report.clean,
        "chain_id": report.chain_id,
        "escrow": report.escrow,
        "reputation": report.reputation,
        "from_block": report.from_block,
        "to_block": report.to_block,
        "to_timestamp": report.to_timestamp,
        "content_source": report.content_source,
        "batch_filter": list(report.batch_filter),
        "summary": {
            "batches": len(report.batches),
            "answers": report.answers_audited,
            "signatures_checked": report.signatures_checked,
            "content_checked": report.content_checked,
            "approved": sum(b.approved for b in report.batches.values()),
            "rejected": sum(b.rejected for b in report.batches.values()),
            "released": sum(b.released for b in report.batches.values()),
            "settlements": len(report.settlements),
            "settled_answers": sum(b.settled_answers for b in report.batches.values()),
            "claims": sum(b.claims for b in report.batches.values()),
            "discrepancies": len(report.discrepancies),
            "notices": len(report.findings) - len(report.discrepancies),
            "discrepancies_by_check": per_check,
        },
        "tokens": [_token_json(t) for t in report.tokens.values()],
        "batches": [_batch_json(b) for b in report.batches.values()],
        "settlements": [_settlement_json(s) for s in report.settlements],
        "workers": [
            {"token": token, "worker": worker, "earned": str(earned)}
            for (token, worker), earned in sorted(report.worker_earnings.items())
        ],
        "findings": [f.to_json() for f in report.findings],
        "timings": {k: round(v, 4) for k, v in report.timings.items()},
    }


def _token_json(t: TokenTotals) -> dict:
    return {
        "token": t.token, "symbol": t.symbol, "decimals": t.decimals,
        **{name: str(getattr(t, name)) for name in (
            "deposited", "topped_up", "bonuses", "withdrawn", "reclaimed", "paid_to_workers", "relay_fees",
            "balance", "expected_balance", "surplus", "deficit", "owed_replayed", "settled", "claimed")},
    }


def _batch_json(b) -> dict:
    return {
        "batch": b.batch, "requester": b.requester, "token": b.token, "manifest_cid": b.manifest_cid,
        "task_count": b.task_count, "answers_per_task": b.answers_per_task, "deadline": b.deadline,
        "review_window": b.review_window, "created_block": b.created_block,
        **{name: str(getattr(b, name)) for name in (
            "reward", "relay_fee", "deposited", "paid", "fees", "refunded", "locked_replayed", "settled",
            "claimed")},
        "locked_onchain": None if b.locked_onchain is None else str(b.locked_onchain),
        **{name: getattr(b, name) for name in ("submitted", "skipped", "approved", "rejected", "released",
                                                "pending", "settlements", "settled_answers", "claims")},
    }


def _settlement_json(s) -> dict:
    return {
        "batch": s.batch, "sequence": s.sequence, "block": s.block, "tx": s.tx, "poster": s.poster,
        "root": s.root, "answers": s.answers, "manifest_cid": s.manifest_cid,
        "manifest_verified": s.manifest_verified,
        **{name: str(getattr(s, name)) for name in ("cumulative_total", "amount", "relay_fees")},
    }


def write_json(report: AuditReport, path: Path) -> None:
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")


def print_summary(report: AuditReport, console: Console | None = None) -> None:
    """Totals per token, then the verdict and the first findings."""
    console = console or Console()
    table = Table(title=f"Audit of escrow {report.escrow}\nchain {report.chain_id}, blocks "
                        f"{report.from_block}..{report.to_block}", title_justify="left")
    for column in ("token", "batches", "answers", "paid", "refunded", "balance", "surplus"):
        table.add_column(column, justify="left" if column == "token" else "right")
    for token, totals in report.tokens.items():
        batches = [b for b in report.batches.values() if b.token == token]
        table.add_row(totals.symbol, str(len(batches)),
                      str(sum(b.submitted + b.settled_answers for b in batches)),
                      amount(totals.paid_to_workers + totals.bonuses, totals), amount(totals.reclaimed, totals),
                      amount(totals.balance, totals),
                      amount(totals.surplus, totals) if totals.surplus else "-")
    console.print(table)
    console.print(f"{report.answers_audited} answers, {report.signatures_checked} signatures re-verified, "
                  f"{report.content_checked} content files hash-checked ({report.content_source}).")
    if report.settlements:
        verified = sum(s.manifest_verified for s in report.settlements)
        settled = sum(b.settled_answers for b in report.batches.values())
        claims = sum(b.claims for b in report.batches.values())
        unclaimed = ", ".join(amount(t.settled - t.claimed, t) for t in report.tokens.values() if t.settled)
        console.print(f"{len(report.settlements)} settlements paid {settled} answers ({verified} manifests "
                      f"verified against the chain); {claims} claims, {unclaimed} still in claimable pools.")
    discrepancies = report.discrepancies
    if not discrepancies:
        console.print("[bold green]CLEAN[/]: every payment is backed by a signed, content-addressed answer "
                      "and every wei is accounted for.")
    else:
        console.print(f"[bold red]{len(discrepancies)} DISCREPANCIES[/]")
    for finding in report.findings[:SHOWN_FINDINGS]:
        style = "red" if finding.severity == DISCREPANCY else "yellow"
        where = ", ".join(f"{k} {v}" for k, v in (("block", finding.block), ("batch", finding.batch),
                                                  ("task", finding.task), ("worker", finding.worker)) if v is not None)
        console.print(f"  [{style}]{finding.severity}[/] {finding.check}/{finding.code}: {finding.message}"
                      + (f" [dim]({where}{', tx ' + finding.tx if finding.tx else ''})[/]" if where else ""),
                      highlight=False)
    if len(report.findings) > SHOWN_FINDINGS:
        console.print(f"  ... and {len(report.findings) - SHOWN_FINDINGS} more (see --json or --html)")
