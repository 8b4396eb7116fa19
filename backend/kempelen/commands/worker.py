"""`kempelen worker ...`: answer tasks from the terminal, see earnings, withdraw."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated

import typer
from rich.table import Table

from kempelen.chain.contracts import ETH, Chain
from kempelen.commands.common import (
    DEFAULT_RELAY, DEFAULT_RPC, KeystoreOption, PasswordOption, RelayOption, RpcOption, console, friendly, signer,
)
from kempelen.protocol.manifest import BatchManifest
from kempelen.sdk.amounts import format_amount
from kempelen.sdk.relay_client import RelayClient, RelayError
from kempelen.sdk.worker import TaskRef, Worker, decode_payload

app = typer.Typer(help="Answer tasks, check earnings, withdraw.", no_args_is_help=True)


def _worker(relay: str, keystore, password, rpc: str | None = None) -> Worker:
    me = signer(keystore, password)
    return Worker(RelayClient(relay, me), me, Chain(rpc) if rpc else None)


def _ask(labels: tuple[str, ...]) -> object | None:
    """The worker's answer: a label by number or name, or free JSON/text; None to skip, ... to quit."""
    if labels:
        console.print("  ".join(f"[bold]{i}[/] {label}" for i, label in enumerate(labels, 1)))
    reply = typer.prompt("answer ([s]kip, [q]uit)").strip()
    if reply.lower() in ("q", "quit"):
        return ...
    if reply.lower() in ("s", "skip") or not reply:
        return None
    if labels:
        if reply.isdigit() and 1 <= int(reply) <= len(labels):
            return {"label": labels[int(reply) - 1]}
        if reply in labels:
            return {"label": reply}
        console.print(f"[yellow]pick 1-{len(labels)} or one of: {', '.join(labels)}[/]")
        return _ask(labels)
    try:
        return json.loads(reply)
    except ValueError:
        return {"text": reply}


@app.command()
@friendly
def work(
    batch: Annotated[int | None, typer.Option(help="Only this batch.")] = None,
    relay: RelayOption = DEFAULT_RELAY, keystore: KeystoreOption = None, password: PasswordOption = None,
) -> None:
    """Fetch an open task, show it, take your answer, sign it here, post it; repeat.

    Example: kempelen worker work --relay http://127.0.0.1:8000
    """
    worker = _worker(relay, keystore, password)
    manifests: dict[int, BatchManifest] = {}
    answered = 0
    while True:
        tasks = worker.open_tasks(batch, limit=1)
        if not tasks:
            console.print(f"no open tasks you qualify for; you answered {answered} this session")
            return
        task = TaskRef(tasks[0]["batch_id"], tasks[0]["task_index"])
        try:
            worker.lease(task)
        except RelayError as exc:
            if exc.status == 409:
                continue  # someone took the last slot first
            raise
        info = worker.relay.task(task.batch_id, task.task_index)
        if task.batch_id not in manifests:
            manifests[task.batch_id] = BatchManifest.from_json(
                worker.relay.fetch(worker.relay.batch(task.batch_id)["manifest_cid"]))
        manifest = manifests[task.batch_id]
        console.rule(f"batch {task.batch_id} task {task.task_index} - reward {tasks[0]['reward']} "
                     f"(base units of {tasks[0]['token']})")
        if info.get("instructions"):
            console.print(f"[italic]{info['instructions']}[/]")
        console.print_json(data=decode_payload(worker.payload(task)))
        answer = _ask(manifest.labels)
        if answer is ...:
            worker.relay.release_lease(task.batch_id, task.task_index)
            console.print(f"stopped; you answered {answered} this session")
            return
        if answer is None:
            worker.relay.release_lease(task.batch_id, task.task_index)
            continue
        receipt = worker.submit(task, answer)
        answered += 1
        console.print(f"signed and posted: receipt {receipt['receipt_id'][:18]}... status {receipt['status']}")


@app.command()
@friendly
def earnings(relay: RelayOption = DEFAULT_RELAY, keystore: KeystoreOption = None,
             password: PasswordOption = None) -> None:
    """What you can withdraw now, and your answers by status.

    Example: kempelen worker earnings
    """
    worker = _worker(relay, keystore, password)
    summary = worker.earnings()
    table = Table(title=f"earnings of {worker.address}")
    table.add_column("token")
    table.add_column("withdrawable (base units)", justify="right")
    for token, amount in summary["withdrawable"].items():
        table.add_row(token, amount)
    console.print(table)
    statuses = Counter(a["status"] for a in worker.relay.my_answers())
    console.print("answers: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none yet"))


@app.command()
@friendly
def withdraw(token: Annotated[str, typer.Option(help="ETH, USDC (a deployment symbol) or an address.")] = "ETH",
             rpc: RpcOption = DEFAULT_RPC, relay: RelayOption = DEFAULT_RELAY,
             keystore: KeystoreOption = None, password: PasswordOption = None) -> None:
    """Pay out your whole balance in one token to your own address (you send the transaction).

    Example: kempelen worker withdraw --token USDC
    """
    worker = _worker(relay, keystore, password, rpc)
    address = worker.chain.token_address(token)
    decimals = 18 if address == ETH else worker.chain.token(address).functions.decimals().call()
    paid = worker.withdraw(token)
    console.print(f"withdrew {format_amount(paid, decimals, token.upper())} to {worker.address}")


@app.command()
@friendly
def claim(
    batches: Annotated[list[int] | None, typer.Argument(help="Batch ids (default: every settled batch).",
                                                        min=1, show_default=False)] = None,
    via_relay: Annotated[bool, typer.Option("--via-relay", help="The relay sends the claim (you need no gas).")] = False,
    rpc: RpcOption = DEFAULT_RPC, relay: RelayOption = DEFAULT_RELAY,
    keystore: KeystoreOption = None, password: PasswordOption = None,
) -> None:
    """Claim your earnings from settled batches (docs/settlement.md) in one claimMany.

    The money goes to your escrow balance; `kempelen worker withdraw` pays it out.

    Example: kempelen worker claim 7 9 --via-relay
    """
    worker = _worker(relay, keystore, password, None if via_relay else rpc)
    console.print(f"looking up settlements of {'batches ' + ', '.join(map(str, batches)) if batches else 'every batch'}"
                  f" for {worker.address}", highlight=False)
    result = worker.claim(batches or None, via_relay=via_relay)
    for claimed in result.claims:
        console.print(f"batch {claimed.batch_id}: +{claimed.amount} base units "
                      f"(cumulative {claimed.cumulative}, claimed before {claimed.claimed_before})")
    console.print(f"claimed {result.credited} base units in {len(result.claims)} batches; "
                  f"transaction {result.tx_hash}\nwithdraw with: kempelen worker withdraw --token <token>")
