"""Deploy Reputation and TaskEscrow, authorize the escrow, record the addresses.

    make deploy                                     # the local test chain (kempelen-test)
    brownie run scripts/deploy.py --network NAME    # any network brownie knows

Deployer: brownie's first unlocked account on development networks; on live networks the
private key in `DEPLOYER_KEY`, else the brownie keystore account named by `DEPLOYER_ACCOUNT`
(`brownie accounts new <id>`; brownie prompts for its password). Development networks also get
the 6-decimal TestStablecoin as tokens.USDC; live networks take tokens from brownie-config.yaml
(`networks.<name>.tokens: {USDC: 0x...}`). Writes build/deployments/<chainId>.json, the file
`kempelen.chain.deployment.Deployment` reads.
"""

import json
import os
from pathlib import Path

from brownie import Reputation, TaskEscrow, TestStablecoin, accounts, chain, config, network
from brownie._config import CONFIG


def _is_development():
    return CONFIG.network_type == "development"


def _deployer():
    if _is_development():
        return accounts[0]
    if os.environ.get("DEPLOYER_KEY"):
        return accounts.add(os.environ["DEPLOYER_KEY"])
    return accounts.load(os.environ["DEPLOYER_ACCOUNT"])


def main():
    deployer = _deployer()
    reputation = Reputation.deploy(deployer, {"from": deployer})
    escrow = TaskEscrow.deploy(reputation, {"from": deployer})
    reputation.setEscrow(escrow, True, {"from": deployer})

    tokens = dict(config["networks"].get(network.show_active(), {}).get("tokens", {}))
    if _is_development():
        tokens["USDC"] = TestStablecoin.deploy({"from": deployer}).address

    deployment = {
        "chain_id": chain.id,
        "network": network.show_active(),
        "escrow": escrow.address,
        "reputation": reputation.address,
        "tokens": tokens,
        "deploy_block": reputation.tx.block_number,
        "deployer": deployer.address,
    }
    path = Path("build/deployments") / f"{chain.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deployment, indent=2) + "\n")
    print(f"deployed to {deployment['network']} (chain {chain.id}): {path}")
    return deployment
