"""Where the contracts of one chain live: written by deploy scripts, read by every role."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kempelen.errors import KempelenError


class UnknownDeployment(KempelenError):
    """No deployment file for the requested chain."""


def deployments_dir() -> Path:
    """`KEMPELEN_DEPLOYMENTS`, or build/deployments under the current directory."""
    return Path(os.environ.get("KEMPELEN_DEPLOYMENTS", Path.cwd() / "build" / "deployments"))


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    escrow: str
    reputation: str
    deploy_block: int
    network: str = "development"
    deployer: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def save(self, directory: Path | None = None) -> Path:
        directory = directory or deployments_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.chain_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, chain_id: int, directory: Path | None = None) -> Deployment:
        path = (directory or deployments_dir()) / f"{chain_id}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UnknownDeployment(
                f"no Kempelen deployment for chain {chain_id} at {path}: deploy first "
                "(`kempelen deploy` or `make deploy`), or set KEMPELEN_DEPLOYMENTS"
            ) from None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)
