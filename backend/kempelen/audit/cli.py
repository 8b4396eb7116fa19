"""`kempelen audit`: check every payment of an escrow from JSON-RPC and content hashes alone.

Exit codes: 0 no discrepancy, 1 discrepancies found, 2 the audit could not run (bad input,
unreachable RPC or content). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from kempelen.audit.content import open_source
from kempelen.audit.model import Progress
from kempelen.audit.report import print_summary
from kempelen.audit.runner import run_audit
from kempelen.errors import KempelenError

app = typer.Typer(help="The independent auditor: reads only the chain and content-addressed payloads.")


class BarProgress(Progress):
    """Progress bars on stderr while blocks are scanned, signatures checked and content fetched."""

    def __init__(self, console: Console) -> None:
        self._bars = RichProgress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=True)
        self._task = None

    def begin(self, label: str, total: int | None) -> None:
        self._bars.start()
        self._task = self._bars.add_task(label, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bars.advance(self._task, amount)

    def end(self) -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None
        self._bars.stop()


@app.command("audit")
def audit(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of a node you trust (ideally your own)")],
    escrow: Annotated[str, typer.Option(help="address of the TaskEscrow to audit")],
    from_block: Annotated[int, typer.Option(help="first block to scan (the escrow's deployment or earlier)")] = 0,
    to_block: Annotated[int | None, typer.Option(help="audited block (default: the chain's head)")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="only these batches (repeatable)")] = None,
    content: Annotated[Path | None, typer.Option(help="embedded content store directory")] = None,
    gateway: Annotated[str | None, typer.Option(help="IPFS trustless gateway URL")] = None,
    kubo: Annotated[str | None, typer.Option(help="Kubo RPC URL, e.g. http://127.0.0.1:5001")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="write the HTML report here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Audit an escrow: money, payouts, signatures, content, reputation, timing.

    Example: kempelen audit --rpc http://127.0.0.1:8545 --escrow 0xe7f1... --gateway http://127.0.0.1:8000 --html audit.html
    """
    console, errors = Console(), Console(stderr=True)
    source = None
    try:
        source = open_source(str(content) if content else None, gateway, kubo)
        progress = Progress() if quiet else BarProgress(errors)
        report = run_audit(rpc, escrow, source, from_block=from_block, to_block=to_block,
                           batches=batch or (), progress=progress, json_path=json_out, html_path=html_out)
    except (KempelenError, OSError) as exc:
        errors.print(f"[red]audit failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        if source is not None:
            source.close()
    print_summary(report, console)
    raise typer.Exit(0 if report.clean else 1)
