"""`kempelen up`: the whole local stack in one command, until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kempelen.commands.common import console, default_home, friendly
from kempelen.protocol.signing import address_of
from kempelen.stack import LocalStack

ROLES = ["relay operator", "requester", *(f"worker {i}" for i in range(1, 9))]


def up(
    chain_port: Annotated[int, typer.Option(min=1, max=65535, help="anvil's port on 127.0.0.1.")] = 8545,
    relay_port: Annotated[int, typer.Option(min=1, max=65535, help="The relay's port on 127.0.0.1.")] = 8000,
    home: Annotated[Path | None, typer.Option(help="State directory [default: ~/.kempelen/local].")] = None,
    show_keys: Annotated[bool, typer.Option(help="Print the dev accounts' private keys "
                                                 "(anvil's public test keys; never use them for real money).")] = False,
) -> None:
    """Start anvil, deploy the contracts and a test USDC, fund dev accounts, run the relay
    (API, submitter, indexer, content gateway); print the URLs; Ctrl-C stops everything.

    Example: kempelen up, then in another terminal: export KEMPELEN_RPC_URL=http://127.0.0.1:8545
    """
    friendly(_up)(chain_port, relay_port, home or default_home() / "local", show_keys)


def _up(chain_port: int, relay_port: int, home: Path, show_keys: bool) -> None:
    stack = LocalStack(home, chain_port=chain_port, relay_port=relay_port)
    with console.status("starting anvil, deploying, starting the relay..."):
        info = stack.start()
    try:
        table = Table(title="Kempelen local stack", show_header=False)
        for name, value in [("chain (anvil)", f"{info.rpc_url}  (chain id {info.deployment.chain_id})"),
                            ("relay API", f"{info.relay_url}  (OpenAPI: {info.relay_url}/docs)"),
                            ("IPFS gateway", f"{info.relay_url}/ipfs/<cid>"),
                            ("TaskEscrow", info.deployment.escrow), ("Reputation", info.deployment.reputation),
                            ("test USDC", info.deployment.tokens["USDC"]),
                            ("deployments", f"{home / 'deployments'}  (export KEMPELEN_DEPLOYMENTS=...)"),
                            ("content store", str(info.store_dir)), ("database", info.database_url)]:
            table.add_row(name, value)
        console.print(table)
        accounts = Table(title="dev accounts (10,000 ETH and 10,000 test USDC each)")
        accounts.add_column("role")
        accounts.add_column("address")
        if show_keys:
            accounts.add_column("private key")
        for role, key in zip(ROLES, info.keys):
            accounts.add_row(role, address_of(key), *((key,) if show_keys else ()))
        console.print(accounts)
        console.print(f"export KEMPELEN_RPC_URL={info.rpc_url} KEMPELEN_RELAY_URL={info.relay_url} "
                      f"KEMPELEN_DEPLOYMENTS={home / 'deployments'} KEMPELEN_STORE={info.store_dir}")
        console.print("[bold]Ctrl-C stops everything.[/]")
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            while not stopped.wait(0.5):
                if stack.relay and stack.relay.poll() is not None:
                    console.print(f"[red]the relay exited; see {home / 'relay.log'}[/]")
                    break
        except KeyboardInterrupt:
            pass
    finally:
        with console.status("stopping..."):
            stack.stop()
        console.print("stopped")
