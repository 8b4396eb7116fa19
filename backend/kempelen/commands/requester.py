"""`kempelen requester ...`: fund batches, review answers, export labels, reclaim deposits."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from kempelen.commands.common import (
    DEFAULT_RELAY, KeystoreOption, PasswordOption, RelayOption, RpcOption, connect, console, fail, friendly,
    parse_duration, signer,
)
from kempelen.ipfs.store import ContentStore, default_store_dir
from kempelen.protocol.manifest import BatchManifest
from kempelen.sdk.amounts import format_amount
from kempelen.sdk.pinning import RelayPinner, StorePinner
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.requester import Requester

app = typer.Typer(help="Fund batches of labeling tasks, review answers, export labels, reclaim deposits.",
                  no_args_is_help=True)

StoreOption = Annotated[Path | None, typer.Option(
    "--store", envvar="KEMPELEN_STORE", file_okay=False,
    help="Content store to pin payloads in [default: ~/.kempelen/store]; the relay serves the same directory.")]
BatchArg = Annotated[int, typer.Argument(help="Batch id.", min=1)]


def _requester(rpc: str, keystore, password, store: Path | None) -> Requester:
    return Requester(connect(rpc), signer(keystore, password), StorePinner(ContentStore(store or default_store_dir())))


def _read_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise fail(f"{what} file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise fail(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise fail(f"{path}:{number}: each line must be a JSON object")
        rows.append(row)
    if not rows:
        raise fail(f"{path} has no tasks")
    return rows


@app.command("create-batch")
@friendly
def create_batch(
    tasks: Annotated[Path, typer.Argument(help="JSONL file: one task payload (a JSON object) per line.")],
    reward: Annotated[str, typer.Option(help="Reward per approved answer, e.g. 0.05.")],
    token: Annotated[str, typer.Option(help="ETH, a token symbol of the deployment (USDC) or an address.")] = "ETH",
    answers: Annotated[int, typer.Option("--answers", min=1, max=255, help="Answers per task.")] = 1,
    relay_fee: Annotated[str, typer.Option(help="Fee per submitted answer to whoever relays it.")] = "0",
    deadline: Annotated[str, typer.Option(help="How long answers are accepted: 3600, 12h, 7d...")] = "7d",
    review_window: Annotated[str, typer.Option(help="Time to review each answer before it auto-releases.")] = "3d",
    min_reputation: Annotated[int, typer.Option(min=0, help="Paid answers a worker needs.")] = 0,
    title: Annotated[str, typer.Option(help="Shown to workers.")] = "",
    instructions: Annotated[str, typer.Option(help="Shown to workers.")] = "",
    labels: Annotated[str, typer.Option(help="Comma-separated labels workers choose from.")] = "",
    assignment: Annotated[str, typer.Option(help="How long a worker's lease on a task lasts.")] = "10m",
    gold: Annotated[Path | None, typer.Option(help="JSONL of hidden gold answers, committed now, revealed later.")] = None,
    settlement_fallback: Annotated[str | None, typer.Option(
        help="Settlement mode: pay answers with signed settlements (kempelen requester settle); relays hold "
             "answers until this long from now, then send unsettled ones the direct path. Before --deadline.")] = None,
    rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
    password: PasswordOption = None, store: StoreOption = None,
) -> None:
    """Pin every task payload and a manifest, then fund the batch from your wallet.

    Example: kempelen requester create-batch tasks.jsonl --reward 0.05 --token USDC --answers 3
    """
    rows = _read_jsonl(tasks, "tasks")
    gold_rows = _read_jsonl(gold, "gold") if gold else None
    requester = _requester(rpc, keystore, password, store)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("pinning task payloads", total=len(rows))
        batch = requester.create_batch(
            rows, reward, token=token, answers_per_task=answers, relay_fee=relay_fee,
            deadline=parse_duration(deadline), review_window=parse_duration(review_window),
            min_reputation=min_reputation, title=title, instructions=instructions,
            labels=[l.strip() for l in labels.split(",") if l.strip()],
            assignment_seconds=parse_duration(assignment), gold=gold_rows,
            settlement_fallback=parse_duration(settlement_fallback) if settlement_fallback else None,
            progress=lambda done, total: progress.update(bar, completed=done))
    decimals = requester.decimals(token)
    console.print(f"batch [bold]{batch.batch_id}[/] funded: {len(rows)} tasks x {answers} answers, "
                  f"deposit {format_amount(batch.deposit, decimals, token.upper())}")
    console.print(f"manifest {batch.manifest_cid}\ntransaction {batch.tx_hash}")
    if settlement_fallback:
        console.print(f"settlement mode: settle answers with `kempelen requester settle {batch.batch_id}` "
                      f"within {settlement_fallback}; unsettled ones then go the direct path")
    if batch.gold_salt:
        path = Path(f"gold-{requester.chain.chain_id}-{batch.batch_id}.json")
        path.write_text(json.dumps({"batch_id": batch.batch_id, "gold_cid": batch.gold_cid,
                                    "salt": batch.gold_salt}))
        console.print(f"gold commitment on-chain; keep {path} to reveal it later")


@app.command()
@friendly
def status(batch_id: BatchArg, rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
           password: PasswordOption = None, store: StoreOption = None) -> None:
    """Show a batch's terms, funds and answers by status.

    Example: kempelen requester status 1
    """
    requester = _requester(rpc, keystore, password, store)
    batch = requester.batch(batch_id)
    symbol = "ETH" if int(batch["token"], 16) == 0 else batch["token"][:10]
    decimals = requester.decimals(batch["token"]) if int(batch["token"], 16) else 18
    counts = defaultdict(int)
    for answer in requester.list_answers(batch_id):
        counts[answer.status] += 1
    table = Table(title=f"batch {batch_id}", show_header=False)
    for key, value in [("requester", batch["requester"]), ("token", symbol), ("tasks", batch["taskCount"]),
                       ("answers per task", batch["answersPerTask"]),
                       ("reward", format_amount(batch["reward"], decimals)),
                       ("relay fee", format_amount(batch["relayFee"], decimals)),
                       ("unallocated funds", format_amount(batch["funds"], decimals)),
                       ("deadline (unix)", batch["deadline"]), ("review window (s)", batch["reviewWindow"]),
                       *((status_, n) for status_, n in sorted(counts.items()))]:
        table.add_row(str(key), str(value))
    console.print(table)


def _decide_interactively(requester: Requester, batch_id: int, pending, fetch) -> tuple[list, dict]:
    manifest = BatchManifest.from_json(fetch(requester.manifest_cid(batch_id)))
    approve, reject = [], defaultdict(list)
    for number, answer in enumerate(pending, 1):
        task = fetch(manifest.task_cids[answer.task_index]).decode(errors="replace")
        console.rule(f"{number}/{len(pending)}  task {answer.task_index}  worker {answer.worker}")
        console.print(f"[bold]task[/]   {task}")
        console.print(f"[bold]answer[/] {fetch(answer.answer_cid).decode(errors='replace')}")
        choice = typer.prompt("[a]pprove, [r]eject, [s]kip, [q]uit", default="a").strip().lower()[:1]
        if choice == "q":
            break
        if choice == "a":
            approve.append(answer)
        elif choice == "r":
            reject[typer.prompt("reason (the worker sees it)")].append(answer)
    return approve, reject


@app.command()
@friendly
def review(
    batch_id: BatchArg,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every pending answer.")] = False,
    reject_file: Annotated[Path | None, typer.Option(
        help="JSONL lines {\"worker\", \"task_index\", \"reason\"}: reject these, approve nothing else.")] = None,
    rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
    password: PasswordOption = None, store: StoreOption = None,
) -> None:
    """Approve or reject pending answers: interactively, --approve-all, or from --reject-file.

    Example: kempelen requester review 1 --reject-file rejections.jsonl
    """
    requester = _requester(rpc, keystore, password, store)
    pending = requester.list_answers(batch_id, "pending")
    if not pending:
        console.print(f"no answers of batch {batch_id} await review")
        return
    if approve_all:
        approve, reject = pending, {}
    elif reject_file:
        by_key = {(a.worker.lower(), a.task_index): a for a in pending}
        reject = defaultdict(list)
        named = set()
        for row in _read_jsonl(reject_file, "reject"):
            key = (str(row.get("worker", "")).lower(), row.get("task_index"))
            if key not in by_key:
                raise fail(f"no pending answer of worker {key[0]} to task {key[1]} in batch {batch_id}")
            if key in named:
                raise fail(f"{reject_file} names the answer of worker {key[0]} to task {key[1]} twice")
            named.add(key)
            if not str(row.get("reason", "")).strip():
                raise fail(f"rejection of worker {key[0]} task {key[1]} needs a reason")
            reject[row["reason"]].append(by_key[key])
        approve = []
    else:
        approve, reject = _decide_interactively(requester, batch_id, pending, requester.pinner.fetch)
    # Per worker and task: a transaction's answers then make few task sets (one per worker and 96 tasks).
    approve = sorted(approve, key=lambda a: (a.worker.lower(), a.task_index))
    for start in range(0, len(approve), 200):
        requester.approve(batch_id, approve[start:start + 200])
    for reason, answers in reject.items():
        requester.reject(batch_id, answers, reason)
    rejected = sum(len(a) for a in reject.values())
    console.print(f"approved {len(approve)}, rejected {rejected}, left {len(pending) - len(approve) - rejected} pending")


@app.command()
@friendly
def export(
    batch_id: BatchArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")] = Path("answers.jsonl"),
    rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
    password: PasswordOption = None, store: StoreOption = None,
) -> None:
    """Write every answer (task, worker, CIDs, status, the answer itself) as JSONL.

    Example: kempelen requester export 1 -o labels.jsonl
    """
    requester = _requester(rpc, keystore, password, store)
    rows = requester.export(batch_id, fetch=requester.pinner.fetch)
    with out.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    console.print(f"wrote {len(rows)} answers to {out}")


@app.command()
@friendly
def reclaim(batch_id: BatchArg, rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
            password: PasswordOption = None, store: StoreOption = None) -> None:
    """Take back the unused deposit after the deadline, once no answer awaits review.

    Example: kempelen requester reclaim 1
    """
    requester = _requester(rpc, keystore, password, store)
    batch = requester.batch(batch_id)
    amount = requester.reclaim(batch_id)
    decimals = requester.decimals(batch["token"]) if int(batch["token"], 16) else 18
    console.print(f"reclaimed {format_amount(amount, decimals)} from batch {batch_id}")


@app.command()
@friendly
def block(worker: Annotated[str, typer.Argument(help="Worker address.")],
          reason: Annotated[str, typer.Option(help="Why; pinned, its CID on-chain.")],
          rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
          password: PasswordOption = None, store: StoreOption = None) -> None:
    """Refuse further answers from a worker in all your batches.

    Example: kempelen requester block 0xabc... --reason "random answers"
    """
    _requester(rpc, keystore, password, store).block_worker(worker, reason)
    console.print(f"blocked {worker}")


@app.command()
@friendly
def bonus(batch_id: BatchArg, worker: Annotated[str, typer.Argument(help="Worker address.")],
          amount: Annotated[str, typer.Argument(help="Amount in the batch's token, e.g. 0.10.")],
          reason: Annotated[str, typer.Option(help="Why; pinned, its CID on-chain.")],
          rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
          password: PasswordOption = None, store: StoreOption = None) -> None:
    """Pay a worker a bonus from your wallet.

    Example: kempelen requester bonus 1 0xabc... 0.10 --reason "careful work"
    """
    _requester(rpc, keystore, password, store).bonus(batch_id, worker, amount, reason)
    console.print(f"paid {amount} bonus to {worker}")


@app.command()
@friendly
def extend(batch_id: BatchArg,
           deadline: Annotated[str | None, typer.Option(help="New deadline, from now: 3d, 12h...")] = None,
           answers: Annotated[int | None, typer.Option(min=1, max=255, help="New answers per task.")] = None,
           top_up: Annotated[str, typer.Option(help="Funds to add.")] = "0",
           rpc: RpcOption = "http://127.0.0.1:8545", keystore: KeystoreOption = None,
           password: PasswordOption = None, store: StoreOption = None) -> None:
    """Extend a batch: later deadline, more answers per task, more funds.

    Example: kempelen requester extend 1 --deadline 7d --top-up 5
    """
    _requester(rpc, keystore, password, store).extend(
        batch_id, deadline=parse_duration(deadline) if deadline else None, answers_per_task=answers, top_up=top_up)
    console.print(f"batch {batch_id} extended")


def _answer_refs(path: Path, what: str) -> list[tuple[str, int]]:
    refs = []
    for number, row in enumerate(_read_jsonl(path, what), 1):
        worker, task = row.get("worker"), row.get("task_index")
        if not isinstance(worker, str) or not isinstance(task, int) or isinstance(task, bool) or task < 0:
            raise fail(f"{path}: line {number} needs \"worker\" (an address) and \"task_index\" (a number)")
        refs.append((worker, task))
    return refs


@app.command()
@friendly
def settle(
    batch_id: BatchArg,
    answers: Annotated[Path | None, typer.Option(
        help="JSONL lines {\"worker\", \"task_index\"}: pay only these held answers.")] = None,
    skip: Annotated[Path | None, typer.Option(
        help="JSONL lines {\"worker\", \"task_index\"}: pay every held answer but these (they go the direct "
             "path at the fallback, where you can reject them with a reason).")] = None,
    via_relay: Annotated[bool, typer.Option("--via-relay", help="Let the relay post it (it earns the relay fees; "
                                                                "you send no transaction).")] = False,
    relay: RelayOption = DEFAULT_RELAY, rpc: RpcOption = "http://127.0.0.1:8545",
    keystore: KeystoreOption = None, password: PasswordOption = None,
) -> None:
    """Pay a settlement-mode batch's held answers with one signed settlement (docs/settlement.md).

    Pulls the signed answers the relay holds, builds the manifest (pinned at the relay, where workers
    fetch it to claim), signs the settlement and posts it. Nothing is sent if the escrow would refuse it.

    Example: kempelen requester settle 7 --skip bad-answers.jsonl --via-relay
    """
    if answers and skip:
        raise fail("use --answers or --skip, not both")
    chosen = _answer_refs(answers, "answers") if answers else None
    skipped = {(w.lower(), t) for w, t in _answer_refs(skip, "skip")} if skip else set()
    me = signer(keystore, password)
    requester = Requester(connect(rpc), me, RelayPinner(RelayClient(relay, me)))
    posted = requester.settle(
        batch_id, chosen, approve=(lambda answer: answer.key not in skipped) if skip else None,
        via_relay=via_relay, progress=lambda message: console.print(message, highlight=False))
    batch = requester.batch(batch_id)
    decimals = requester.decimals(batch["token"]) if int(batch["token"], 16) else 18
    console.print(f"settled {posted.answers} answers of batch {batch_id} (settlement {posted.sequence}): "
                  f"{format_amount(posted.amount, decimals)} claimable by workers, "
                  f"{format_amount(posted.relay_fees, decimals)} relay fees to the poster")
    console.print(f"manifest {posted.manifest_cid}\ntransaction {posted.tx_hash}")
