"""A self-contained HTML audit report: verdict, plots as inline SVG, tables. No JS, no CDN."""

from __future__ import annotations

import functools
from collections import defaultdict
from html import escape
from pathlib import Path

from kempelen.audit.model import DISCREPANCY, AuditReport
from kempelen.audit.plots import bar_chart, histogram, line_chart
from kempelen.audit.report import amount

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
.verdict{padding:.8rem 1rem;border-radius:6px;font-weight:600}
.clean{background:#e6f4ea;color:#17622e}.dirty{background:#fdecea;color:#8a1c12}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{padding:4px 8px;border-bottom:1px solid #e3e3e3}
th{text-align:left;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:1.5rem}.plots figure{margin:0}figcaption{font-size:13px;color:#555}
.discrepancy{color:#8a1c12}.notice{color:#8a6d00}code{font-size:12px}
"""


def render_html(report: AuditReport) -> str:
    if report.clean:
        verdict = ("clean", ("Clean: every payment is backed by a signed, content-addressed answer and every "
                             "wei is accounted for."))
    else:
        verdict = ("dirty", f"{len(report.discrepancies)} discrepancies found.")
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>Kempelen audit {escape(report.escrow)}</title><style>{STYLE}</style><body>",
        f"<h1>Audit of escrow <code>{escape(report.escrow)}</code></h1>",
        (f"<p>Chain {report.chain_id}, blocks {report.from_block}..{report.to_block}; content from "
        f"{escape(report.content_source)}. {report.answers_audited} answers, {report.signatures_checked} "
        f"signatures re-verified, {report.content_checked} files hash-checked.</p>"),
        f"<p class='verdict {verdict[0]}'>{escape(verdict[1])}</p>",
        "<div class=plots>", *_plots(report), "</div>",
        "<h2>Money per token</h2>", _tokens_table(report),
        "<h2>Batches</h2>", _batches_table(report),
        *(["<h2>Settlements</h2>", _settlements_table(report)] if report.settlements else []),
        f"<h2>Findings ({len(report.findings)})</h2>", _findings_table(report),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(report: AuditReport, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _plots(report: AuditReport) -> list[str]:
    figures = []
    for token, totals in report.tokens.items():
        payments = sorted((p for p in report.payments if p.token == token), key=lambda p: p.timestamp)
        if not payments:
            continue
        scale = 10**totals.decimals
        running, points = 0, []
        for payment in payments:
            running += payment.amount
            points.append((payment.timestamp, running / scale))
        figures.append(_figure(line_chart(points, x_is_time=True),
                               f"Cumulative payments to workers over time ({totals.symbol})"))
        earnings = defaultdict(int)
        for (t, worker), earned in report.worker_earnings.items():
            if t == token:
                earnings[worker] = earned
        top = sorted(earnings.items(), key=lambda kv: -kv[1])[:20]
        figures.append(_figure(bar_chart([(w[:8] + "…" + w[-4:], e / scale) for w, e in top]),
                               f"Earnings per worker ({totals.symbol}, top {len(top)})"))
    if report.review_delays:
        by_outcome = defaultdict(list)
        for delay in report.review_delays:
            by_outcome[delay.outcome].append(delay.seconds / 60)
        window = max(d.window for d in report.review_delays) / 60
        figures.append(_figure(histogram(dict(by_outcome), marker=window),
                               "Review delay after submission (minutes; line: longest review window)"))
    return figures or ["<p>No payments yet.</p>"]


def _tokens_table(report: AuditReport) -> str:
    rows = []
    for t in report.tokens.values():
        cells = [t.deposited, t.topped_up, t.bonuses, t.paid_to_workers, t.relay_fees, t.settled - t.claimed,
                 t.withdrawn, t.reclaimed, t.expected_balance, t.balance, t.surplus]
        rows.append(f"<tr><td>{escape(t.symbol)}</td>" + "".join(
            f"<td class=n>{escape(amount(c, t))}</td>" for c in cells) + "</tr>")
    head = ("token", "deposited", "top-ups", "bonuses", "rewards", "relay fees", "unclaimed", "withdrawn",
            "refunded", "expected balance", "balance", "surplus")
    return _table(head, rows)


def _batches_table(report: AuditReport) -> str:
    rows = []
    for b in report.batches.values():
        t = report.tokens.get(b.token)
        money = functools.partial(_money, totals=t)
        rows.append(
            f"<tr><td class=n>{b.batch}</td><td><code>{escape(b.requester)}</code></td>"
            f"<td class=n>{b.task_count}</td><td class=n>{b.submitted}</td><td class=n>{b.settled_answers}</td>"
            f"<td class=n>{b.approved}</td>"
            f"<td class=n>{b.rejected}</td><td class=n>{b.released}</td><td class=n>{b.pending}</td>"
            f"<td class=n>{money(b.deposited)}</td><td class=n>{money(b.paid)}</td>"
            f"<td class=n>{money(b.refunded)}</td><td><code>{escape(b.manifest_cid)}</code></td></tr>")
    head = ("batch", "requester", "tasks", "answers", "settled", "approved", "rejected", "released", "pending",
            "deposited", "paid", "refunded", "manifest")
    return _table(head, rows)


def _settlements_table(report: AuditReport) -> str:
    rows = []
    for s in report.settlements:
        batch = report.batches.get(s.batch)
        money = functools.partial(_money, totals=report.tokens.get(batch.token) if batch else None)
        rows.append(
            f"<tr><td class=n>{s.batch}</td><td class=n>{s.sequence}</td><td class=n>{s.block}</td>"
            f"<td><code>{escape(s.poster)}</code></td><td class=n>{s.answers}</td>"
            f"<td class=n>{money(s.amount)}</td><td class=n>{money(s.relay_fees)}</td>"
            f"<td class=n>{money(s.cumulative_total)}</td><td><code>{escape(s.manifest_cid)}</code></td>"
            f"<td>{'yes' if s.manifest_verified else 'no'}</td></tr>")
    head = ("batch", "sequence", "block", "poster", "answers", "rewards", "relay fees", "settled so far",
            "manifest", "manifest verified")
    return _table(head, rows)


def _money(value: int, totals) -> str:
    return escape(amount(value, totals)) if totals else str(value)


def _findings_table(report: AuditReport) -> str:
    if not report.findings:
        return "<p>None.</p>"
    rows = []
    for f in report.findings:
        cls = "discrepancy" if f.severity == DISCREPANCY else "notice"
        cells = [f.severity, f"{f.check}/{f.code}", f.message, f.block, f.batch, f.task, f.worker, f.tx]
        rows.append(f"<tr class={cls}>" + "".join(
            f"<td>{'' if c is None else escape(str(c))}</td>" for c in cells) + "</tr>")
    return _table(("severity", "check", "message", "block", "batch", "task", "worker", "tx"), rows)


def _table(head: tuple[str, ...], rows: list[str]) -> str:
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")
