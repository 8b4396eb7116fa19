"""`kempelen index`: mirror the escrow's and reputation's events into SQL, once or following."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from eth_utils import is_address, keccak, to_checksum_address
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from kempelen.chain.deployment import Deployment
from kempelen.errors import KempelenError
from kempelen.indexer.errors import IndexerError
from kempelen.indexer.runner import Indexer, Step, open_indexer
from kempelen.indexer.source import JsonRpcSource, RangeSizer

app = typer.Typer(help="Index contract events into SQL.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Index contract events into SQL (`kempelen index`)."""
_out = Console()
_err = Console(stderr=True)
PROGRESS_FROM = 1_000  # blocks behind: below this a progress bar only flickers


def _default_database_url() -> str:
    return f"sqlite:///{Path.home() / '.kempelen' / 'relay.sqlite'}"  # shared with the relay


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _contracts(rpc: str, deployment: Path | None, escrow: str | None,
               reputation: str | None) -> tuple[str, str, int]:
    """(escrow, reputation, deploy block) from the options, a deployment file or the default one."""
    if escrow is not None:
        if not is_address(escrow):
            raise IndexerError(f"--escrow {escrow!r} is not an address")
        if reputation is None:
            with JsonRpcSource(rpc, []) as source:
                word = source.call("eth_call", {"to": escrow, "data": "0x" + keccak(
                    text="reputation()")[:4].hex()}, "latest")
            if len(word) != 66:
                raise IndexerError(f"{escrow} does not answer reputation(): is it a TaskEscrow?")
            reputation = "0x" + word[-40:]
        elif not is_address(reputation):
            raise IndexerError(f"--reputation {reputation!r} is not an address")
        return to_checksum_address(escrow), to_checksum_address(reputation), 0
    if deployment is not None:
        try:
            data = json.loads(deployment.read_text())
            found = Deployment(**{k: data[k] for k in Deployment.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError) as exc:
            raise IndexerError(f"cannot read deployment {deployment}: {exc}") from None
    else:
        with JsonRpcSource(rpc, []) as source:
            found = Deployment.load(source.chain_id())
    return found.escrow, found.reputation, found.deploy_block


def _prepare_sqlite(database_url: str) -> None:
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        Path(database_url.removeprefix("sqlite:///")).expanduser().parent.mkdir(
            parents=True, exist_ok=True)


def _catch_up(indexer: Indexer, quiet: bool) -> Step:
    """Index to head minus confirmations, with a progress bar when far behind."""
    start = indexer.checkpoint.last_block
    behind = indexer.source.head() - indexer.confirmations - start
    if quiet or behind < PROGRESS_FROM:
        return indexer.catch_up()
    events = 0
    with Progress(TextColumn("indexing blocks"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[events]:,} events"), TimeElapsedColumn(),
                  console=_err, transient=False) as bar:
        task = bar.add_task("index", total=behind, events=0)

        def advance(step: Step) -> None:
            nonlocal events
            events += step.events
            bar.update(task, completed=step.last_block - start,
                       total=max(step.target_block - start, 1), events=events)

        return indexer.catch_up(on_step=advance)


def _report(step: Step) -> None:
    if step.fork_block is not None:
        _out.print(f"reorganisation: rolled back {step.rolled_back} events above block "
                   f"{step.fork_block}", highlight=False)
    elif step.events:
        _out.print(f"block {step.last_block}: +{step.events} events", highlight=False)


@app.command()
def index(
    rpc: Annotated[str, typer.Option("--rpc", envvar="KEMPELEN_RPC_URL",
                                     help="Ethereum JSON-RPC URL.")] = "http://127.0.0.1:8545",
    deployment: Annotated[Path | None, typer.Option(
        "--deployment", dir_okay=False,
        help="Deployment JSON \\[default: the chain's file in $KEMPELEN_DEPLOYMENTS].")] = None,
    escrow: Annotated[str | None, typer.Option("--escrow", help="TaskEscrow address.")] = None,
    reputation: Annotated[str | None, typer.Option(
        "--reputation", help="Reputation address \\[default: the escrow's reputation()].")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="KEMPELEN_DATABASE_URL",
        help="SQLAlchemy URL \\[default: sqlite:///~/.kempelen/relay.sqlite].")] = None,
    from_block: Annotated[int | None, typer.Option(
        "--from-block", min=0,
        help="First block of a new index \\[default: the deployment block, else 0].")] = None,
    confirmations: Annotated[int, typer.Option(
        "--confirmations", min=0, help="Index only blocks this deep below the head.")] = 0,
    once: Annotated[bool, typer.Option(
        "--once/--follow", help="Stop when caught up, or keep following new blocks.")] = True,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.01)] = 1.0,
    max_range: Annotated[int, typer.Option(
        "--max-range", min=1, help="Most blocks per eth_getLogs request.")] = 100_000,
    reorg_window: Annotated[int, typer.Option(
        "--reorg-window", min=1, help="Blocks whose hashes are kept to find a fork.")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Index TaskEscrow and Reputation events (rows + checkpoint per range, reorg-safe).

    Example: kempelen index --rpc http://127.0.0.1:8545 --database-url sqlite:///index.sqlite --follow
    """
    url = database_url or _default_database_url()
    stop = threading.Event()
    try:
        escrow_address, reputation_address, deploy_block = _contracts(
            rpc, deployment, escrow, reputation)
        _prepare_sqlite(url)
        indexer = open_indexer(rpc, url, escrow_address, reputation_address,
                               from_block=deploy_block if from_block is None else from_block,
                               confirmations=confirmations, window=reorg_window)
        indexer.sizer = RangeSizer(initial=min(2_000, max_range), maximum=max_range)
        step = _catch_up(indexer, quiet)
        if not quiet:
            _out.print(f"indexed chain {indexer.store.chain_id} to block {step.last_block}",
                       highlight=False)
        if once:
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        indexer.follow(stop, poll_interval, on_step=None if quiet else _report)
    except (ArgumentError, SQLAlchemyError) as exc:
        raise _fail(f"database {url}: {str(exc).splitlines()[0]}") from None
    except KempelenError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{url}: {exc}") from None
    except KeyboardInterrupt:
        raise _fail("interrupted: indexed blocks are kept, the next run resumes") from None
