"""`kempelen deploy`: put Reputation and TaskEscrow on a chain and record where they are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from kempelen.chain.contracts import deploy_protocol
from kempelen.chain.deployment import deployments_dir
from kempelen.commands.common import KeystoreOption, PasswordOption, console, fail, friendly, signer

BROWNIE_NETWORKS = Path.home() / ".brownie" / "network-config.yaml"


def network_rpc(name: str, config: Path = BROWNIE_NETWORKS) -> str:
    """The RPC URL brownie knows for network `name` (environment variables expanded)."""
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except FileNotFoundError:
        raise fail(f"no brownie network config at {config}: pass --rpc URL instead") from None
    for group in data.get("live", []):
        for network in group.get("networks", []):
            if network.get("id") == name:
                return os.path.expandvars(network["host"])
    for network in data.get("development", []):
        if network.get("id") == name:
            port = (network.get("cmd_settings") or {}).get("port", 8545)
            return f"{network['host']}:{port}"
    raise fail(f"unknown network {name!r}: `brownie networks list` shows the configured ones")


def deploy(
    rpc: Annotated[str | None, typer.Option("--rpc", envvar="KEMPELEN_RPC_URL", help="JSON-RPC URL.")] = None,
    network: Annotated[str | None, typer.Option(help="A network id from brownie's network config.")] = None,
    test_token: Annotated[bool, typer.Option(help="Also deploy a mintable 6-decimal test stablecoin.")] = False,
    out: Annotated[Path | None, typer.Option(help="Deployments directory [default: $KEMPELEN_DEPLOYMENTS "
                                                  "or ./build/deployments].")] = None,
    keystore: KeystoreOption = None, password: PasswordOption = None,
) -> None:
    """Deploy Reputation and TaskEscrow with your key; write <chainId>.json where every role reads it.

    Example: kempelen deploy --network sepolia --keystore deployer.json
    """
    run = friendly(_deploy)
    run(rpc, network, test_token, out, keystore, password)


def _deploy(rpc, network, test_token, out, keystore, password) -> None:
    if bool(rpc) == bool(network):
        raise fail("give exactly one of --rpc URL or --network NAME")
    url = rpc or network_rpc(network)
    deployer = signer(keystore, password)
    deployment = deploy_protocol(url, deployer.private_key, test_token=test_token, network=network or "custom")
    path = deployment.save(out or deployments_dir())
    console.print(f"TaskEscrow  {deployment.escrow}\nReputation  {deployment.reputation}")
    for symbol, address in deployment.tokens.items():
        console.print(f"{symbol:<11} {address}")
    console.print(f"chain {deployment.chain_id}, written to {path}")
