"""`make bench-index`: events/s indexed from anvil into SQLite and PostgreSQL.

Builds a history of escrow and reputation events naming 25,200 answers on a fresh anvil
(batches, many signed answers per submitAnswers, approvals, rejections, releases, withdrawals:
~11,000 events, since submissions and reviews are logged per worker and 96-task group), then times
`kempelen.indexer` catching up from the deployment block into a fresh SQLite file and a fresh
PostgreSQL database. Writes build/bench/index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import coincurve
import httpx
import psycopg
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from kempelen.chain.anvil import Anvil, dev_keys
from kempelen.chain.contracts import ETH, Chain, deploy_protocol
from kempelen.indexer.runner import open_indexer
from kempelen.indexer.source import RangeSizer
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import Answer, Withdrawal, address_of, answer_digest, sign
from kempelen.protocol.tasksets import task_sets

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get("KEMPELEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ANSWERS_PER_TX = 250
REFS_PER_TX = 600
WORKERS = 50


def rpc(url: str, method: str, *params):
    return httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                 "params": list(params)}, timeout=120).json()["result"]


def encode(chain: Chain, function: str, *args) -> str:
    """Calldata without web3's per-value formatters (which take ~0.2 s per 250-answer call)."""
    entry = next(e for e in chain.escrow.abi if e.get("name") == function)
    types = [_abi_type(i) for i in entry["inputs"]]
    selector = keccak(text=f"{function}({','.join(types)})")[:4]
    return "0x" + (selector + abi_encode(types, args)).hex()


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in param['components'])}){param['type'][5:]}"
    return param["type"]


def send_all(chain: Chain, key: str, calls: list[str]) -> None:
    """Send escrow calls (calldata) without automining, then mine them together in large blocks."""
    account = Account.from_key(key)
    w3, escrow = chain.w3, chain.escrow.address
    probe = {"from": account.address, "to": escrow}
    gas = int(max(w3.eth.estimate_gas({**probe, "data": c}) for c in {calls[0], calls[-1]}) * 1.3)
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    gas_price = w3.eth.gas_price
    rpc(chain.rpc_url, "evm_setAutomine", False)
    try:
        hashes = []
        for offset, data in enumerate(calls):
            tx = {**probe, "data": data, "gas": gas, "gasPrice": gas_price, "nonce": nonce + offset,
                  "chainId": chain.chain_id, "value": 0}
            del tx["from"]
            hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
        while rpc(chain.rpc_url, "txpool_status")["pending"] != "0x0":
            rpc(chain.rpc_url, "evm_mine")
    finally:
        rpc(chain.rpc_url, "evm_setAutomine", True)
    for tx_hash in hashes:
        if rpc(chain.rpc_url, "eth_getTransactionReceipt", "0x" + tx_hash.hex())["status"] != "0x1":
            raise SystemExit(f"history transaction {tx_hash.hex()} reverted")


def build_history(chain: Chain, keys: list[str], tasks: int, batches: int) -> None:
    """`batches` ETH batches of `tasks` tasks x 4 answers: submit all, approve most,
    reject some, release the rest after the review window, every worker withdraws."""
    requester, relayer = keys[1], keys[2]
    workers = [coincurve.PrivateKey().secret for _ in range(WORKERS)]
    addresses = [address_of(w) for w in workers]
    escrow = chain.escrow.functions
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 30 * 86400
    reward, fee, per_task = 1000, 10, 4
    for b in range(batches):
        terms = (ETH, tasks, per_task, reward, fee, deadline, 3600, 0, bytes(32),
                 raw_cid(answer_digest(f"manifest {b}".encode())).to_bytes())
        chain.transact(requester, escrow.createBatch(terms), value=tasks * per_task * (reward + fee))
    answers = []  # (batch, worker index, task)
    for batch_id in range(1, batches + 1):
        for task in range(tasks):
            answers += [(batch_id, (task * per_task + k) % WORKERS, task) for k in range(per_task)]
    answers.sort()
    calls = []
    for start in range(0, len(answers), ANSWERS_PER_TX):
        tuples, signatures = [], []
        for batch_id, w, task in answers[start:start + ANSWERS_PER_TX]:
            answer = Answer(batch_id, task, answer_digest(f"{batch_id}/{task}/{w}".encode()), addresses[w])
            tuples.append(answer.as_tuple())
            signatures.append(sign(chain.domain.digest(answer.struct_hash()), workers[w]))
        calls.append(encode(chain, "submitAnswers", tuples, signatures))
    send_all(chain, relayer, calls)

    reviewed = {"approve": [], "reject": [], "release": []}
    for i, (batch_id, w, task) in enumerate(answers):
        kind = "reject" if i % 20 == 0 else "release" if i % 10 == 1 else "approve"
        reviewed[kind].append((batch_id, addresses[w], task))
    reason = raw_cid(answer_digest(b"off-topic")).to_bytes()
    calls = []
    for kind in ("approve", "reject"):
        calls += _review_calls(chain, kind, reviewed[kind], reason)
    send_all(chain, requester, calls)
    rpc(chain.rpc_url, "evm_increaseTime", 7200)
    rpc(chain.rpc_url, "evm_mine")
    send_all(chain, relayer, _review_calls(chain, "release", reviewed["release"], reason))
    # Workers hold no gas: the relayer submits their signed withdrawals (withdrawFor).
    calls = []
    for worker, address in zip(workers, addresses):
        withdrawal = Withdrawal(address, ETH, 0, deadline)
        signature = sign(chain.domain.digest(withdrawal.struct_hash()), worker)
        calls.append(encode(chain, "withdrawFor", address, ETH, deadline, signature))
    send_all(chain, relayer, calls + [encode(chain, "withdraw", ETH)])


def _review_calls(chain: Chain, kind: str, refs: list[tuple[int, str, int]], reason: bytes) -> list:
    by_batch: dict[int, list] = {}
    for batch_id, worker, task in sorted(refs):
        by_batch.setdefault(batch_id, []).append((worker, task))
    calls = []
    for batch_id, items in by_batch.items():
        for start in range(0, len(items), REFS_PER_TX):
            chunk = items[start:start + REFS_PER_TX]
            extra = (reason,) if kind == "reject" else ()
            calls.append(encode(chain, kind, batch_id, task_sets(chunk), *extra))
    return calls


def time_index(chain: Chain, url: str, target_logs: int) -> tuple[int, float, int]:
    """(events, seconds, ranges) for catching up from the deployment block into `url`."""
    d = chain.deployment
    indexer = open_indexer(chain.rpc_url, url, d.escrow, d.reputation, from_block=d.deploy_block)
    # Start from one-block ranges, as on a dense chain: the sizer must find ~target_logs per
    # range by itself (otherwise this short, dense history fits one range and one transaction).
    indexer.sizer = RangeSizer(initial=1, target_logs=target_logs)
    events = ranges = 0
    started = time.perf_counter()
    while True:
        step = indexer.step()
        events += step.events
        ranges += 1 if step.blocks else 0
        if step.caught_up:
            break
    elapsed = time.perf_counter() - started
    indexer.store.engine.dispose()
    return events, elapsed, ranges


def postgres_database() -> tuple[str, callable]:
    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    name = f"kempelen_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"{base}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2_100, help="tasks per batch (4 answers each)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--target-logs", type=int, default=10_000, help="logs per eth_getLogs range")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "bench" / "index.json")
    args = parser.parse_args()
    keys = dev_keys(3)
    with tempfile.TemporaryDirectory() as tmp, Anvil(log_path=Path(tmp) / "anvil.log") as node:
        chain = Chain(node.url, deploy_protocol(node.url, keys[0]))
        started = time.perf_counter()
        build_history(chain, keys, args.tasks, args.batches)
        print(f"history: {chain.w3.eth.block_number} blocks in {time.perf_counter() - started:.1f}s")
        results = {"sqlite": time_index(chain, f"sqlite:///{Path(tmp) / 'index.sqlite'}",
                                        args.target_logs)}
        url, drop = postgres_database()
        try:
            results["postgres"] = time_index(chain, url, args.target_logs)
        finally:
            drop()
    report = {"events": results["sqlite"][0], "target_logs_per_range": args.target_logs}
    for name, (events, seconds, ranges) in results.items():
        report[f"events_per_s_{name}"] = round(events / seconds)
        report[f"seconds_{name}"] = round(seconds, 2)
        report[f"ranges_{name}"] = ranges
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'database':<10} {'events':>8} {'ranges':>7} {'seconds':>8} {'events/s':>9}")
    for name, (events, seconds, ranges) in results.items():
        print(f"{name:<10} {events:>8} {ranges:>7} {seconds:>8.2f} {events / seconds:>9,.0f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
