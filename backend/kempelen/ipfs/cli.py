"""`kempelen ipfs ...`: add, cat, export and import content in the embedded store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from kempelen.errors import KempelenError
from kempelen.ipfs.store import ContentStore, default_store_dir
from kempelen.protocol.cid import CID

app = typer.Typer(
    help="Content-addressed payloads: CIDs identical to Kubo's `ipfs add`, no daemon needed.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
PROGRESS_FROM = 8 << 20  # below this a bar only flickers

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Store directory [default: $KEMPELEN_STORE or ~/.kempelen/store].",
        file_okay=False,
    ),
]


def _store(store_dir: Path | None) -> ContentStore:
    return ContentStore(store_dir if store_dir is not None else default_store_dir())


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except KempelenError as exc:
        raise _fail(str(exc)) from None


@app.command()
def add(
    path: Annotated[Path, typer.Argument(help="File to add.", show_default=False)],
    cid_version: Annotated[
        int,
        typer.Option("--cid-version", min=0, max=1, help="0: Qm... dag-pb leaves; 1: raw leaves."),
    ] = 1,
    store: StoreOption = None,
) -> None:
    """Add a file; print its CID (the one `ipfs add --cid-version N` prints).

    Example: kempelen ipfs add tasks.jsonl --cid-version 1
    """
    if not path.is_file():
        raise _fail(f"no such file: {path}")
    try:
        content = _store(store)
        size = path.stat().st_size
        if size >= PROGRESS_FROM and _err.is_terminal:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                console=_err,
                transient=True,
            ) as bar:
                task = bar.add_task(path.name, total=size)
                cid = content.add_path(path, cid_version, lambda n: bar.advance(task, n))
        else:
            cid = content.add_path(path, cid_version)
    except (KempelenError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(cid))


@app.command()
def cat(
    cid: Annotated[str, typer.Argument(help="CID of a stored file.", show_default=False)],
    store: StoreOption = None,
) -> None:
    """Write a stored file to stdout, verifying every block.

    Example: kempelen ipfs cat bafkrei... > answer.json
    """
    root = _cid(cid)
    out = sys.stdout.buffer
    try:
        with _store(store).open(root) as payload:
            while chunk := payload.read(262_144):
                out.write(chunk)
        out.flush()
    except (KempelenError, OSError) as exc:
        raise _fail(str(exc)) from None


@app.command("export-car")
def export_car(
    cid: Annotated[str, typer.Argument(help="Root CID to export.", show_default=False)],
    output: Annotated[Path, typer.Argument(help="CAR file to write.", show_default=False)],
    store: StoreOption = None,
) -> None:
    """Write the DAG under CID as a CARv1 file.

    Example: kempelen ipfs export-car bafy... payload.car
    """
    root = _cid(cid)
    content = _store(store)
    if not content.has(root):
        raise _fail(f"{root} is not in the store")
    tmp = output.with_name(output.name + ".part")
    try:
        with open(tmp, "wb") as out:
            size = content.export_car(root, out)
        tmp.replace(output)
    except (KempelenError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(str(exc)) from None
    _err.print(f"wrote {size} bytes to {output}", highlight=False)


@app.command("import-car")
def import_car(
    path: Annotated[Path, typer.Argument(help="CARv1 file to import.", show_default=False)],
    store: StoreOption = None,
) -> None:
    """Import every block of a CARv1 file (each verified); print its root CIDs.

    Example: kempelen ipfs import-car payload.car
    """
    if not path.is_file():
        raise _fail(f"no such file: {path}")
    try:
        with open(path, "rb") as src:
            roots = _store(store).import_car(src)
    except (KempelenError, OSError) as exc:
        raise _fail(str(exc)) from None
    for root in roots:
        typer.echo(str(root))
