"""`make demo`: run two batches through their whole life on a local chain and print the story.

Options: --short (fewer tasks, as `make test` runs it), --workdir DIR (default build/demo).
"""

import argparse
import sys
from pathlib import Path

from rich.console import Console

from kempelen.demo.story import Demo, print_summary
from kempelen.errors import KempelenError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="a quick run with few tasks")
    parser.add_argument("--workdir", type=Path, default=Path("build/demo"))
    args = parser.parse_args()
    console = Console()
    eth_tasks, usdc_tasks = (10, 30) if args.short else (30, 200)
    demo = Demo(args.workdir, eth_tasks=eth_tasks, usdc_tasks=usdc_tasks, console=console)
    try:
        result = demo.run()
    except KempelenError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    print_summary(result, console)
    return 0 if not result.discrepancies else 1


if __name__ == "__main__":
    sys.exit(main())
