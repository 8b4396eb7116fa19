"""`make demo`: the local stack and three batches through their whole life, told as a short story.

A requester funds a batch in ETH and one in a test stablecoin; eight simulated workers lease
tasks, read payloads and post answers with real EIP-712 signatures through the relay — most
honest, one answering at random, one copying another; the requester rejects the spammer and
the copier with reasons and blocks them; unreviewed answers are auto-released after the review
window (anvil's clock is advanced); workers withdraw without gas; the requester reclaims the
rest; and the auditor checks every payment from the chain and the content alone.

A third batch runs in settlement mode (docs/settlement.md): its answers wait at the relay, the
requester pays them in two signed settlements the relay posts (the second restating each paid
worker's earlier settled words, which the escrow keeps only as a digest), workers claim their
cumulative earnings with Merkle proofs in one relayed claimMany each, and the answers the
requester never settled go the direct path at the fallback time, once the relay has opened the
settled words of their workers, and are auto-released: the safety valve.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kempelen.audit import run_audit
from kempelen.audit.model import AuditReport
from kempelen.audit.report import print_summary as print_audit_summary
from kempelen.chain.contracts import Chain
from kempelen.chain.settled import settled_history
from kempelen.demo.tasks import LABELS, SimulatedWorker, Task, assign, make_tasks
from kempelen.protocol.tasksets import task_sets
from kempelen.sdk.amounts import format_amount, to_base_units
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import RelayPinner
from kempelen.sdk.quality import Label, review
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.requester import FundedBatch, Requester
from kempelen.sdk.settlement import SettlementError
from kempelen.sdk.worker import TaskRef, Worker
from kempelen.stack import LocalStack

REVIEW_WINDOW = 2 * 24 * 3600
DEADLINE = 7 * 24 * 3600
SETTLEMENT_FALLBACK = 24 * 3600  # before the story's first jump of REVIEW_WINDOW
UNSETTLED_TASKS = 2  # the settlement batch's last tasks, left to the safety valve
IN_FLIGHT = {"accepted", "submitted"}


@dataclass
class BatchPlan:
    symbol: str
    decimals: int
    reward: str
    relay_fee: str
    tasks: list[Task]
    funded: FundedBatch | None = None
    outcome: Counter = field(default_factory=Counter)
    refunded: int = 0
    settlement: bool = False  # paid by signed settlements, not answer by answer

    @property
    def token(self) -> str:
        return self.funded.token


@dataclass
class DemoResult:
    workdir: Path
    batches: list[BatchPlan]
    gas_used: int
    audit: AuditReport
    labels_path: Path
    audit_paths: list[Path]

    @property
    def discrepancies(self) -> int:
        return len(self.audit.discrepancies)


def _workers() -> list[SimulatedWorker]:
    honest = [SimulatedWorker(f"worker-{i}", "honest") for i in range(1, 7)]
    return [*honest, SimulatedWorker("spammer", "spammer"),
            SimulatedWorker("copier", "copier", copies="worker-1")]


def _advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


class Demo:
    def __init__(self, workdir: Path, *, eth_tasks: int, usdc_tasks: int, console: Console, seed: int = 7,
                 settled_tasks: int = 12):
        if settled_tasks and settled_tasks <= UNSETTLED_TASKS + 1:
            raise ValueError(f"a settlement batch needs more than {UNSETTLED_TASKS + 1} tasks (or 0 for none)")
        self.workdir = workdir
        self.console = console
        self.rng = random.Random(seed)
        self.settlement_rng = random.Random(seed + 1)  # its own: the direct batches' story stays the same
        self.eth_tasks, self.usdc_tasks, self.settled_tasks = eth_tasks, usdc_tasks, settled_tasks

    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]>[/] {text}")

    def run(self) -> DemoResult:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        with LocalStack(self.workdir / "stack") as info:
            self.say(f"Local stack up: anvil at {info.rpc_url}, relay at {info.relay_url} "
                     f"(API, submitter, indexer, IPFS gateway); contracts and a test USDC deployed.")
            chain = Chain(info.rpc_url, info.deployment)
            start_block = chain.w3.eth.block_number
            operator = Signer(info.keys[0])
            requester_key = Signer(info.keys[1])
            requester = Requester(chain, requester_key, RelayPinner(RelayClient(info.relay_url, requester_key)))
            workers = {w.name: Worker(RelayClient(info.relay_url, Signer(k)), Signer(k), chain)
                       for w, k in zip(_workers(), info.keys[2:10])}
            plans, labels_path = self._story(chain, requester, workers, operator)
            gas = sum(chain.w3.eth.get_block(n)["gasUsed"]
                      for n in range(start_block, chain.w3.eth.block_number + 1))
            report, audit_paths = self._audit(info)
        return DemoResult(self.workdir, plans, gas, report, labels_path, audit_paths)

    def _story(self, chain: Chain, requester: Requester, workers: dict[str, Worker], operator: Signer):
        names = {w.address: name for name, w in workers.items()}
        plans = [BatchPlan("ETH", 18, "0.0004", "0.00002", make_tasks(self.eth_tasks, self.rng)),
                 BatchPlan("USDC", 6, "0.05", "0.002", make_tasks(self.usdc_tasks, self.rng))]
        if self.settled_tasks:
            plans.append(BatchPlan("USDC", 6, "0.01", "0.0005", make_tasks(self.settled_tasks, self.settlement_rng),
                                   settlement=True))
        direct = [plan for plan in plans if not plan.settlement]
        for plan in plans:
            plan.funded = requester.create_batch(
                [t.payload() for t in plan.tasks], plan.reward, token=plan.symbol, answers_per_task=3,
                relay_fee=plan.relay_fee, deadline=DEADLINE, review_window=REVIEW_WINDOW,
                title="Sentiment of short reviews", instructions="Pick the sentiment of the sentence.",
                labels=LABELS, settlement_fallback=SETTLEMENT_FALLBACK if plan.settlement else None)
            mode = (" in settlement mode (answers wait at the relay for the requester's signed settlements, "
                    "at most one day)") if plan.settlement else ""
            self.say(f"Requester pinned {len(plan.tasks)} tasks through the relay and funded batch "
                     f"{plan.funded.batch_id} from its wallet{mode}: 3 answers per task, reward {plan.reward} "
                     f"{plan.symbol}, deposit {format_amount(plan.funded.deposit, plan.decimals, plan.symbol)}.")
        for plan in plans:
            receipts = self._answer(plan, workers)
            who = "Six honest workers" if plan.settlement else "Eight workers"
            self.say(f"{who} leased tasks, read verified payloads and posted {len(receipts)} signed "
                     f"answers to batch {plan.funded.batch_id}; the relay acknowledged each after storing it.")
        seconds = self._wait_onchain(workers)
        self.say(f"The relay's submitter packed every answer of the direct batches into submitAnswers "
                 f"transactions; all on-chain {seconds:.1f}s after the last one was posted, every signature "
                 f"verified by the escrow.")
        for plan in direct:
            self._review(plan, requester, names)
        for plan in plans:
            if plan.settlement:
                self._settle(plan, requester)
        _advance(chain, REVIEW_WINDOW + 60)
        for plan in plans:
            if plan.settlement:
                self._fallback(plan, chain, workers)
        for plan in direct:
            pending = requester.list_answers(plan.funded.batch_id, "pending")
            for start in range(0, len(pending), 150):
                chain.transact(operator.private_key, chain.escrow.functions.release(
                    plan.funded.batch_id, task_sets((a.worker, a.task_index) for a in pending[start:start + 150])))
            plan.outcome["released"] += len(pending)
            self.say(f"Review window over: anyone may release; the operator auto-released {len(pending)} "
                     f"unreviewed answers of batch {plan.funded.batch_id}.")
        for plan in plans:
            if plan.settlement:
                self._claim(plan, workers)
        paid = sum(self._withdraw(worker, plans, operator) for worker in workers.values())
        self.say(f"{paid} workers withdrew their earnings holding no gas: each signed a Withdrawal, the "
                 f"operator sent it, the escrow paid the worker itself.")
        for plan in {plan.token: plan for plan in plans}.values():  # one withdrawal per token
            fees = chain.escrow.functions.balanceOf(plan.token, operator.address).call()
            chain.transact(operator.private_key, chain.escrow.functions.withdraw(plan.token))
            self.say(f"The relay operator withdrew {format_amount(fees, plan.decimals, plan.symbol)} of relay "
                     f"fees, paid on-chain per answer it submitted.")
        _advance(chain, DEADLINE)
        for plan in plans:
            if plan.settlement:
                self._release_fallen_back(plan, requester, workers, operator)
        for plan in plans:
            if not requester.batch(plan.funded.batch_id)["funds"]:
                self.say(f"Deadline passed: every unit of batch {plan.funded.batch_id} was paid out; nothing to reclaim.")
                continue
            plan.refunded = requester.reclaim(plan.funded.batch_id)
            self.say(f"Deadline passed: requester reclaimed "
                     f"{format_amount(plan.refunded, plan.decimals, plan.symbol)} unused from batch "
                     f"{plan.funded.batch_id}.")
        return plans, self._export(plans, requester)

    def _answer(self, plan: BatchPlan, workers: dict[str, Worker]) -> list[dict]:
        simulated = [w for w in _workers() if w.kind == "honest"] if plan.settlement else _workers()
        rng = self.settlement_rng if plan.settlement else self.rng
        assignment = assign(len(plan.tasks), 3, simulated, rng)
        given: dict[tuple[str, int], str] = {}
        receipts = []
        with Progress(console=self.console, transient=True) as progress:
            bar = progress.add_task(f"workers answering batch {plan.funded.batch_id}", total=len(plan.tasks) * 3)
            for task_index, chosen in enumerate(assignment):
                for i in sorted(chosen, key=lambda i: simulated[i].kind == "copier"):  # copies come second
                    persona, worker = simulated[i], workers[simulated[i].name]
                    task = TaskRef(plan.funded.batch_id, task_index)
                    worker.lease(task)
                    shown = json.loads(worker.payload(task))
                    truth = next(t for t in plan.tasks if t.text == shown["text"])
                    copied = given.get((persona.copies, task_index)) if persona.copies else None
                    label = persona.label(truth, rng, copied)
                    given[(persona.name, task_index)] = label
                    receipts.append(worker.submit(task, {"label": label}))
                    progress.advance(bar)
        return receipts

    def _wait_onchain(self, workers: dict[str, Worker], timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            statuses = Counter(a["status"] for w in workers.values() for a in w.relay.my_answers())
            if not IN_FLIGHT & set(statuses):
                if statuses.get("skipped"):
                    raise RuntimeError(f"the escrow skipped answers: {dict(statuses)}")
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"answers not on-chain after {timeout:.0f}s: {dict(statuses)}")

    def _review(self, plan: BatchPlan, requester: Requester, names: dict) -> None:
        batch_id = plan.funded.batch_id
        answers = requester.list_answers(batch_id)
        labels = [Label(a.worker, a.task_index, json.loads(requester.pinner.fetch(a.answer_cid))["label"], order)
                  for order, a in enumerate(answers)]
        verdicts = review(labels)
        for verdict in (v for v in verdicts if v.reject):
            mine = [a for a in answers if a.worker == verdict.worker]
            requester.reject(batch_id, mine, verdict.reason)
            if not requester.chain.escrow.functions.isBlocked(requester.signer.address, verdict.worker).call():
                requester.block_worker(verdict.worker, verdict.reason)
            plan.outcome["rejected"] += len(mine)
            self.say(f"Requester rejected {len(mine)} answers of {names[verdict.worker]} in batch {batch_id}: "
                     f"[italic]{verdict.reason}[/] (reason pinned, its CID on-chain); blocked.")
        rejected = {v.worker for v in verdicts if v.reject}
        # Review most of the rest now; leave the last tasks for auto-release after the window.
        cutoff = int(len(plan.tasks) * 0.7)
        to_approve = [a for a in answers if a.worker not in rejected and a.task_index < cutoff]
        for start in range(0, len(to_approve), 150):
            requester.approve(batch_id, to_approve[start:start + 150])
        plan.outcome["approved"] += len(to_approve)
        self.say(f"Requester approved {len(to_approve)} answers of batch {batch_id}; "
                 f"{len(answers) - len(to_approve) - plan.outcome['rejected']} left unreviewed.")

    # -- the settlement batch ---------------------------------------------------------------

    def _settle(self, plan: BatchPlan, requester: Requester) -> None:
        """Two settlements the relay posts; the last tasks' answers are left to the safety valve."""
        batch_id = plan.funded.batch_id
        unsettled = len(plan.tasks) - UNSETTLED_TASKS
        first = requester.settle(batch_id, approve=lambda a: a.task_index < unsettled // 2, via_relay=True)
        second = requester.settle(batch_id, approve=lambda a: a.task_index < unsettled, via_relay=True)
        plan.outcome["settled"] += first.answers + second.answers
        self.say(f"Requester signed two settlements of batch {batch_id} for the relay to post: "
                 f"{first.answers} then {second.answers} answers, each in one transaction, each naming a "
                 f"manifest of the signed answers it pays (latest {second.manifest_cid[:16]}...) and the Merkle "
                 f"root of every worker's cumulative earnings. The relay earned the relay fees.")

    def _fallback(self, plan: BatchPlan, chain: Chain, workers: dict[str, Worker], timeout: float = 120) -> None:
        """Past the fallback time the relay sends the held answers no settlement paid direct, after
        opening the settled words of the workers who have some (the escrow skips a worker's answers
        while its settled words are sealed)."""
        batch_id = plan.funded.batch_id
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            statuses = Counter(a["status"] for w in workers.values() for a in w.relay.my_answers()
                               if a["batch_id"] == batch_id)
            if not ({"held"} | IN_FLIGHT) & set(statuses):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"held answers of batch {batch_id} not sent after {timeout:.0f}s: {dict(statuses)}")
        if set(statuses) - {"settled", "onchain"}:
            raise RuntimeError(f"answers of batch {batch_id} ended {dict(statuses)}")
        opened = settled_history(chain, batch_id).book.opened
        self.say(f"The fallback time of batch {batch_id} passed: the relay opened the sealed settled words of "
                 f"{len(opened)} workers (openSettled: the escrow keeps only a digest of them until then), then "
                 f"sent their {statuses['onchain']} answers the requester never settled the direct path "
                 f"(submitAnswers), so the requester must pay or reject them in the review window: the safety valve.")

    def _claim(self, plan: BatchPlan, workers: dict[str, Worker]) -> None:
        claimed = []
        for worker in workers.values():
            try:
                result = worker.claim([plan.funded.batch_id], via_relay=True)
            except SettlementError:  # this worker earned nothing in the batch
                continue
            claimed.append(result.credited)
        self.say(f"{len(claimed)} workers claimed {format_amount(sum(claimed), plan.decimals, plan.symbol)} "
                 f"settled in batch {plan.funded.batch_id}: each proved its cumulative earnings against the "
                 f"root in a claimMany the relay sent, holding no gas.")

    def _release_fallen_back(self, plan: BatchPlan, requester: Requester, workers: dict[str, Worker],
                             operator: Signer) -> None:
        batch_id = plan.funded.batch_id
        pending = requester.list_answers(batch_id, "pending")
        if pending:
            requester.chain.transact(operator.private_key, requester.chain.escrow.functions.release(
                batch_id, task_sets((a.worker, a.task_index) for a in pending)))
        plan.outcome["released"] += len(pending)
        paid = sum(self._withdraw(worker, [plan], operator) for worker in workers.values())
        self.say(f"The requester never reviewed them: the operator released the {len(pending)} fallen-back "
                 f"answers of batch {batch_id} after their review window, and {paid} workers withdrew.")

    def _withdraw(self, worker: Worker, plans: list[BatchPlan], operator: Signer) -> int:
        withdrew = 0
        for plan in plans:
            if worker.chain.escrow.functions.balanceOf(plan.token, worker.address).call():
                worker.withdraw(plan.symbol, relayer=operator)
                withdrew = 1
        return withdrew

    def _export(self, plans: list[BatchPlan], requester: Requester) -> Path:
        path = self.workdir / "labels.jsonl"
        with path.open("w") as out:
            for plan in plans:
                votes: dict[int, Counter] = defaultdict(Counter)
                for a in requester.list_answers(plan.funded.batch_id):
                    if a.status in ("approved", "released"):
                        votes[a.task_index][json.loads(requester.pinner.fetch(a.answer_cid))["label"]] += 1
                for index, task in enumerate(plan.tasks):
                    label, count = votes[index].most_common(1)[0] if votes[index] else (None, 0)
                    out.write(json.dumps({"batch_id": plan.funded.batch_id, "task_index": index,
                                          "task_cid": plan.funded.task_cids[index], "text": task.text,
                                          "label": label, "votes": count}) + "\n")
        return path

    def _audit(self, info) -> tuple[AuditReport, list[Path]]:
        self.say("An auditor replays the chain and checks every payment against signed, "
                 "content-addressed answers (its summary closes this story).")
        json_path, html_path = self.workdir / "audit.json", self.workdir / "audit.html"
        report = run_audit(rpc_url=info.rpc_url, escrow=info.deployment.escrow, content_dir=info.store_dir,
                           json_path=json_path, html_path=html_path)
        return report, [json_path, html_path]


def print_summary(result: DemoResult, console: Console) -> None:
    """Where every unit of every deposit went, the files written, then the auditor's verdict."""
    table = Table(title="Kempelen demo: where every unit of value went")
    table.add_column("")
    for plan in result.batches:
        table.add_column(f"batch {plan.funded.batch_id} ({plan.symbol})", justify="right")
    rows: dict[str, list[str]] = defaultdict(list)
    for plan in result.batches:
        reward, fee = to_base_units(plan.reward, plan.decimals), to_base_units(plan.relay_fee, plan.decimals)
        paid_answers = plan.outcome["approved"] + plan.outcome["released"]
        accepted = paid_answers + plan.outcome["rejected"]
        shown = lambda units: format_amount(units, plan.decimals)  # noqa: B023 - used at once
        paid_answers += plan.outcome["settled"]
        accepted += plan.outcome["settled"]
        for name, value in [("deposit", shown(plan.funded.deposit)), ("answers approved", plan.outcome["approved"]),
                            ("answers settled", plan.outcome["settled"]),
                            ("answers auto-released", plan.outcome["released"]),
                            ("answers rejected", plan.outcome["rejected"]),
                            ("paid to workers", shown(paid_answers * reward)),
                            ("relay fees", shown(accepted * fee)), ("refunded", shown(plan.refunded))]:
            rows[name].append(str(value))
    for name, values in rows.items():
        table.add_row(name, *values)
    console.print(table)
    console.print(f"gas used by every transaction of the story: {result.gas_used:,}")
    console.print(f"labels (majority of paid answers): {result.labels_path}")
    console.print(f"audit reports: {', '.join(str(p) for p in result.audit_paths)}")
    print_audit_summary(result.audit, console)
