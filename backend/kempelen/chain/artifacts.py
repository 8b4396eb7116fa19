"""Compiled contract artifacts (ABI + bytecode) exported from the brownie build."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kempelen.errors import KempelenError

ARTIFACTS_DIR = Path(__file__).with_name("artifacts")


class MissingArtifact(KempelenError):
    """A contract was not compiled (or not exported) into the package."""


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str

    def events(self) -> list[dict]:
        return [entry for entry in self.abi if entry["type"] == "event"]


@cache
def load(name: str) -> Artifact:
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingArtifact(
            f"no compiled artifact for {name} in {ARTIFACTS_DIR}: run `make compile`"
        ) from None
    return Artifact(name=name, abi=data["abi"], bytecode=data.get("bytecode", ""))
