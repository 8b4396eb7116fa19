"""`make demo`: a local stack and two batches through their whole life, told as a short story.

A requester funds a batch in ETH and one in a test stablecoin; eight simulated workers answer
with real EIP-712 signatures — most honest, one answering at random, one copying another;
the requester rejects the spammer and the copier with reasons; unreviewed answers are
auto-released after the review window (anvil's clock is advanced); workers withdraw without
gas; the requester reclaims the rest; and the auditor checks every payment.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kempelen.chain.anvil import Anvil, dev_keys
from kempelen.chain.contracts import ETH, Chain, deploy_protocol
from kempelen.demo.tasks import LABELS, SimulatedWorker, Task, assign, make_tasks
from kempelen.demo.transport import Transport
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.signing import Withdrawal, sign
from kempelen.sdk.amounts import format_amount, to_base_units
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import StorePinner
from kempelen.sdk.quality import Label, review
from kempelen.sdk.requester import FundedBatch, Requester

REVIEW_WINDOW = 2 * 24 * 3600
DEADLINE = 7 * 24 * 3600


@dataclass
class BatchPlan:
    token: str
    symbol: str
    decimals: int
    reward: str
    relay_fee: str
    tasks: list[Task]
    funded: FundedBatch | None = None
    outcome: Counter = field(default_factory=Counter)
    refunded: int = 0


@dataclass
class DemoResult:
    workdir: Path
    batches: list[BatchPlan]
    gas_used: int
    discrepancies: int | None
    labels_path: Path
    audit_paths: list[Path]


def _workers() -> list[SimulatedWorker]:
    honest = [SimulatedWorker(f"worker-{i}", "honest") for i in range(1, 7)]
    return [*honest, SimulatedWorker("spammer", "spammer"),
            SimulatedWorker("copier", "copier", copies="worker-1")]


def _advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


class Demo:
    def __init__(self, workdir: Path, *, eth_tasks: int, usdc_tasks: int, console: Console,
                 transport_factory, seed: int = 7):
        self.workdir = workdir
        self.console = console
        self.rng = random.Random(seed)
        self.eth_tasks, self.usdc_tasks = eth_tasks, usdc_tasks
        self.transport_factory = transport_factory

    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]>[/] {text}")

    def run(self) -> DemoResult:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        keys = dev_keys(10)
        with Anvil(log_path=self.workdir / "anvil.log") as anvil:
            self.say(f"Local chain (anvil) at {anvil.url}; deploying Reputation, TaskEscrow and a test USDC.")
            deployment = deploy_protocol(anvil.url, keys[0])
            deployment.save(self.workdir / "deployments")
            chain = Chain(anvil.url, deployment)
            start_block = chain.w3.eth.block_number
            store = ContentStore(self.workdir / "store")
            with self.transport_factory(self, chain, store, Signer(keys[0])) as transport:
                result = self._story(chain, store, transport, keys)
            gas = sum(chain.w3.eth.get_block(n)["gasUsed"] for n in range(start_block, chain.w3.eth.block_number + 1))
            discrepancies, audit_paths = self._audit(anvil.url, deployment)
        return DemoResult(self.workdir, result["batches"], gas, discrepancies, result["labels"], audit_paths)

    def _story(self, chain: Chain, store: ContentStore, transport: Transport, keys: list[str]) -> dict:
        requester = Requester(chain, Signer(keys[1]), StorePinner(store))
        usdc = chain.token(chain.deployment.tokens["USDC"])
        chain.transact(keys[1], usdc.functions.mint(requester.signer.address, 1_000 * 10**6))
        workers = _workers()
        signers = {w.name: Signer(k) for w, k in zip(workers, keys[2:10])}
        names = {s.address: n for n, s in signers.items()}

        plans = [BatchPlan(ETH, "ETH", 18, "0.0004", "0.00002", make_tasks(self.eth_tasks, self.rng)),
                 BatchPlan(chain.deployment.tokens["USDC"], "USDC", 6, "0.05", "0.002",
                           make_tasks(self.usdc_tasks, self.rng))]
        for plan in plans:
            plan.funded = requester.create_batch(
                [t.payload() for t in plan.tasks], plan.reward, token=plan.symbol, answers_per_task=3,
                relay_fee=plan.relay_fee, deadline=DEADLINE, review_window=REVIEW_WINDOW,
                title="Sentiment of short reviews", instructions="Pick the sentiment of the sentence.",
                labels=LABELS)
            self.say(f"Requester funded batch {plan.funded.batch_id}: {len(plan.tasks)} tasks x 3 answers, "
                     f"reward {plan.reward} {plan.symbol}, deposit "
                     f"{format_amount(plan.funded.deposit, plan.decimals, plan.symbol)} (manifest {plan.funded.manifest_cid[:16]}...).")

        for plan in plans:
            sent = self._answer(plan, workers, signers, transport)
            self.say(f"Eight workers sent {sent} signed answers to batch {plan.funded.batch_id} "
                     f"through {transport.describe()}.")
        transport.wait_onchain()

        for plan in plans:
            self._review(plan, requester, store, names)

        _advance(chain, REVIEW_WINDOW + 60)
        for plan in plans:
            pending = requester.list_answers(plan.funded.batch_id, "pending")
            if pending:
                transport.release(plan.funded.batch_id, pending)
                plan.outcome["released"] += len(pending)
                self.say(f"Review window over: {len(pending)} unreviewed answers of batch "
                         f"{plan.funded.batch_id} auto-released by the relay operator.")

        paid = self._withdraw(chain, plans, signers, transport)
        self.say(f"{paid} workers withdrew their earnings without holding gas (signed withdrawals relayed).")

        _advance(chain, DEADLINE)
        for plan in plans:
            plan.refunded = requester.reclaim(plan.funded.batch_id)
            self.say(f"Deadline passed: requester reclaimed "
                     f"{format_amount(plan.refunded, plan.decimals, plan.symbol)} unused from batch {plan.funded.batch_id}.")
        return {"batches": plans, "labels": self._export(plans, requester, store)}

    def _answer(self, plan: BatchPlan, workers, signers, transport: Transport) -> int:
        assignment = assign(len(plan.tasks), 3, workers, self.rng)
        given: dict[tuple[str, int], str] = {}
        count = 0
        for task_index, chosen in enumerate(assignment):
            for i in sorted(chosen, key=lambda i: workers[i].kind == "copier"):  # copies come second
                worker = workers[i]
                copied = given.get((worker.copies, task_index)) if worker.copies else None
                label = worker.label(plan.tasks[task_index], self.rng, copied)
                given[(worker.name, task_index)] = label
                transport.submit(signers[worker.name], plan.funded.batch_id, task_index, {"label": label})
                count += 1
        return count

    def _review(self, plan: BatchPlan, requester: Requester, store: ContentStore, names: dict) -> None:
        batch_id = plan.funded.batch_id
        answers = requester.list_answers(batch_id)
        labels = [Label(a.worker, a.task_index, json.loads(store.get(a.answer_cid))["label"], order)
                  for order, a in enumerate(answers)]
        verdicts = review(labels)
        for verdict in (v for v in verdicts if v.reject):
            mine = [a for a in answers if a.worker == verdict.worker]
            requester.reject(batch_id, mine, verdict.reason)
            if not chain_blocked(requester, verdict.worker):
                requester.block_worker(verdict.worker, verdict.reason)
            plan.outcome["rejected"] += len(mine)
            self.say(f"Requester rejected {len(mine)} answers of {names[verdict.worker]} in batch {batch_id}: "
                     f"[italic]{verdict.reason}[/] (reason pinned, its CID on-chain); blocked from its batches.")
        rejected = {v.worker for v in verdicts if v.reject}
        # Review most of the rest now; leave the last tasks for auto-release after the window.
        cutoff = int(len(plan.tasks) * 0.7)
        to_approve = [a for a in answers if a.worker not in rejected and a.task_index < cutoff]
        for start in range(0, len(to_approve), 150):
            requester.approve(batch_id, to_approve[start:start + 150])
        plan.outcome["approved"] += len(to_approve)
        self.say(f"Requester approved {len(to_approve)} answers of batch {batch_id}; "
                 f"{len(answers) - len(to_approve) - plan.outcome['rejected']} left unreviewed.")

    def _withdraw(self, chain: Chain, plans, signers, transport: Transport) -> int:
        paid = set()
        for signer in signers.values():
            for plan in plans:
                balance = chain.escrow.functions.balanceOf(plan.token, signer.address).call()
                if balance:
                    nonce = chain.escrow.functions.nonces(signer.address).call()
                    withdrawal = Withdrawal(signer.address, plan.token, nonce, 2**64)
                    signature = sign(chain.domain.digest(withdrawal.struct_hash()), signer.private_key)
                    transport.withdraw_for(withdrawal, signature)
                    paid.add(signer.address)
        return len(paid)

    def _export(self, plans, requester: Requester, store: ContentStore) -> Path:
        path = self.workdir / "labels.jsonl"
        with path.open("w") as out:
            for plan in plans:
                votes: dict[int, Counter] = defaultdict(Counter)
                for a in requester.list_answers(plan.funded.batch_id):
                    if a.status in ("approved", "released"):
                        votes[a.task_index][json.loads(store.get(a.answer_cid))["label"]] += 1
                for index, task in enumerate(plan.tasks):
                    label, count = votes[index].most_common(1)[0] if votes[index] else (None, 0)
                    out.write(json.dumps({"batch_id": plan.funded.batch_id, "task_index": index,
                                          "task_cid": plan.funded.task_cids[index], "text": task.text,
                                          "label": label, "votes": count}) + "\n")
        return path

    def _audit(self, rpc_url: str, deployment) -> tuple[int | None, list[Path]]:
        try:
            from kempelen.audit import run_audit  # noqa: PLC0415 - optional until the auditor lands
        except ImportError:
            self.say("[yellow]Auditor not available in this build; skipping the audit.[/]")
            return None, []
        json_path, html_path = self.workdir / "audit.json", self.workdir / "audit.html"
        report = run_audit(rpc_url=rpc_url, escrow=deployment.escrow, content_dir=self.workdir / "store",
                           json_path=json_path, html_path=html_path, console=self.console)
        return len(report.discrepancies), [json_path, html_path]


def chain_blocked(requester: Requester, worker: str) -> bool:
    return requester.chain.escrow.functions.isBlocked(requester.signer.address, worker).call()


def print_summary(result: DemoResult, console: Console) -> None:
    table = Table(title="Kempelen demo: where every unit of value went")
    for column in ("batch", "token", "deposit", "approved", "released", "rejected", "paid",
                   "relay fees", "refunded"):
        table.add_column(column, justify="right")
    for plan in result.batches:
        f = plan.funded
        reward_units = f.deposit // (len(plan.tasks) * 3) - _fee_units(plan)
        paid = (plan.outcome["approved"] + plan.outcome["released"]) * reward_units
        accepted = plan.outcome["approved"] + plan.outcome["released"] + plan.outcome["rejected"]
        fees = accepted * _fee_units(plan)
        table.add_row(str(f.batch_id), plan.symbol, format_amount(f.deposit, plan.decimals),
                      str(plan.outcome["approved"]), str(plan.outcome["released"]), str(plan.outcome["rejected"]),
                      format_amount(paid, plan.decimals), format_amount(fees, plan.decimals),
                      format_amount(plan.refunded, plan.decimals))
    console.print(table)
    console.print(f"gas used, all transactions: {result.gas_used:,}")
    shown = "not run" if result.discrepancies is None else str(result.discrepancies)
    console.print(f"audit discrepancies: [bold]{shown}[/]")
    console.print(f"labels: {result.labels_path}")
    for path in result.audit_paths:
        console.print(f"audit report: {path}")


def _fee_units(plan: BatchPlan) -> int:
    return to_base_units(plan.relay_fee, plan.decimals)
