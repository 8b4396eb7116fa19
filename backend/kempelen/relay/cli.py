"""`kempelen serve` (API + submitter + indexer) and the submitter alone (`python -m kempelen.relay.submitter`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from kempelen.errors import KempelenError

app = typer.Typer(help="Run the relay.", no_args_is_help=True)
submit_app = typer.Typer(help="Submit acknowledged answers on-chain (the relay's submitter alone).")
_err = Console(stderr=True)

RpcOpt = Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL [KEMPELEN_RPC_URL].")]
DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", help="sqlite:///path or postgresql+psycopg://... [KEMPELEN_DATABASE_URL].")]
KeyOpt = Annotated[str | None, typer.Option(
    "--relayer-key", envvar="KEMPELEN_RELAYER_KEY", show_envvar=False,
    help="Private key paying for submissions [KEMPELEN_RELAYER_KEY; prefer the variable].")]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


@app.callback()
def _group() -> None:
    """Run the relay (`kempelen serve`)."""


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _settings(**overrides):
    """Settings from KEMPELEN_* with the command line's values on top; errors as one clear line."""
    from kempelen.relay.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise _fail(f"invalid relay settings: {details}") from None


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _prepare_database(database_url: str) -> None:
    from kempelen.db import migrate

    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        Path(database_url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    migrate(database_url)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 2,
    rpc: RpcOpt = None,
    database_url: DatabaseOpt = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Content store directory [KEMPELEN_STORE_DIR].")] = None,
    relayer_key: KeyOpt = None,
    submitter: Annotated[bool, typer.Option(help="Run the submitter.")] = True,
    indexer: Annotated[bool, typer.Option(help="Run the indexer.")] = True,
    log_level: LogOpt = "info",
) -> None:
    """Migrate the database, then run the API (uvicorn), the submitter and the indexer until stopped.

    Example: KEMPELEN_RELAYER_KEY=0x... kempelen serve --rpc http://127.0.0.1:8545 --port 8000
    """
    from kempelen.chain.contracts import Chain
    from kempelen.relay.supervisor import Supervisor

    _logging(log_level)
    settings = _settings(rpc_url=rpc, database_url=database_url, store_dir=store, relayer_key=relayer_key)
    try:
        Chain(settings.rpc_url)  # fail now, clearly, if the chain or its deployment is missing
        _prepare_database(settings.database_url)
    except KempelenError as exc:
        raise _fail(str(exc)) from None
    env = {**os.environ, "KEMPELEN_RPC_URL": settings.rpc_url,
           "KEMPELEN_DATABASE_URL": settings.database_url, "KEMPELEN_STORE_DIR": str(settings.store_dir)}
    if settings.relayer_key is not None:
        env["KEMPELEN_RELAYER_KEY"] = settings.relayer_key.get_secret_value()
    supervisor = Supervisor(env)
    supervisor.start("api", [
        sys.executable, "-m", "uvicorn", "kempelen.relay.main:create_app_from_env", "--factory",
        "--host", host, "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", log_level.lower()])
    if submitter and settings.relayer_key is None:
        _err.print("[yellow]warning:[/yellow] no KEMPELEN_RELAYER_KEY: answers are acknowledged and "
                   "queued but not submitted until a submitter runs with a key")
    elif submitter:
        supervisor.start("submitter", [sys.executable, "-m", "kempelen.relay.submitter",
                                       "--log-level", log_level])
    if indexer:
        supervisor.start("indexer", [sys.executable, "-m", "kempelen.indexer", "index", "--follow", "--quiet",
                                     "--rpc", settings.rpc_url, "--database-url", settings.database_url])
    raise typer.Exit(code=supervisor.wait())


@submit_app.command()
def submit(
    rpc: RpcOpt = None,
    database_url: DatabaseOpt = None,
    relayer_key: KeyOpt = None,
    max_answers: Annotated[int, typer.Option(min=1, help="Answers per transaction at most.")] = 200,
    flush_after: Annotated[float, typer.Option(min=0, help="Seconds an answer waits for a fuller pack.")] = 2.0,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Unmined transactions at once.")] = 4,
    replace_after: Annotated[float, typer.Option(min=1, help="Seconds before re-pricing a stuck one.")] = 30.0,
    drain: Annotated[bool, typer.Option(
        help="Exit once nothing is queued; print seconds_to_all_onchain.")] = False,
    log_level: LogOpt = "info",
) -> None:
    """Pack acknowledged answers into submitAnswers transactions until stopped (SIGINT/SIGTERM)."""
    from kempelen.relay.packing import PackingPolicy
    from kempelen.relay.submitter import SubmitterConfig, open_submitter

    _logging(log_level)
    settings = _settings(rpc_url=rpc, database_url=database_url, relayer_key=relayer_key)
    if settings.relayer_key is None:
        raise _fail("no relayer key: set KEMPELEN_RELAYER_KEY (or pass --relayer-key)")
    config = SubmitterConfig(policy=PackingPolicy(max_answers=max_answers, flush_after=flush_after),
                             max_in_flight=max_in_flight, replace_after=replace_after)
    try:
        _prepare_database(settings.database_url)
        worker = open_submitter(settings.database_url, settings.rpc_url,
                                settings.relayer_key.get_secret_value(), config=config)
        if drain:
            seconds = worker.drain()
            worker.lock.release()
            typer.echo(f"seconds_to_all_onchain {seconds:.2f}")
            return
    except (KempelenError, TimeoutError) as exc:
        raise _fail(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.run(stop)


if __name__ == "__main__":
    app()
