"""Export brownie's compiled contracts (ABI + bytecode) into the `kempelen` package.

The runtime package speaks plain web3.py and reads these files; brownie is only the
build, test and deploy tool. Usage: python scripts/export_artifacts.py BUILD_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path


def main(build_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        stale.unlink()
    exported = []
    for path in sorted(Path(build_dir).glob("*.json")):
        artifact = json.loads(path.read_text())
        if not artifact.get("sourcePath", "").startswith("contracts/"):
            continue  # OpenZeppelin dependencies: not part of our interface
        name = artifact["contractName"]
        slim = {
            "contractName": name,
            "sourcePath": artifact["sourcePath"],
            "abi": artifact["abi"],
            "bytecode": artifact.get("bytecode", ""),
            "deployedBytecode": artifact.get("deployedBytecode", ""),
            "compiler": artifact.get("compiler", {}),
        }
        (out / f"{name}.json").write_text(json.dumps(slim, indent=1, sort_keys=True))
        exported.append(name)
    print(f"exported {len(exported)} artifacts to {out}: {', '.join(exported)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
