"""Gas benchmark of one realistic batch: 100 ERC-20-paid answers from 10 workers (a benchmark, not a test).

    make bench-gas        # = brownie run scripts/bench_gas.py --network kempelen-test

A requester funds 34 tasks x 3 answers in the 6-decimal test stablecoin; 10 fresh workers
(never paid before, never held the token) each answer 10 tasks; the relay receives answers
interleaved as a crowd would send them (answer k: worker k % 10, task k // 3) and submits all
100 in one `submitAnswers` call, every signature verified on-chain. The requester approves
them in one call (grouped by worker, as the SDK sends them), each worker withdraws once.
Release and reject are measured on the same state from a chain snapshot. Prints a table and
writes build/bench/gas.json.
"""

import json
from pathlib import Path

from brownie import Reputation, TaskEscrow, TestStablecoin, accounts, chain
from eth_hash.auto import keccak

from kempelen.protocol.signing import Answer, Domain, answer_digest, sign, to_compact

USDC = 10**6
DAY = 86_400
TASKS, ANSWERS_PER_TASK, WORKERS, ANSWERS = 34, 3, 10, 100
TARGETS = {"submit_per_answer": 15_000, "approve_per_answer": 8_000, "paid_answer_amortized": 25_000}
OUT = Path("build/bench/gas.json")


def _signed_answers(escrow, batch_id, workers, compact):
    domain = Domain(chain.id, escrow.address)
    answers, signatures = [], []
    for k in range(ANSWERS):
        worker, task = workers[k % WORKERS], k // ANSWERS_PER_TASK
        answer = Answer(batch_id, task, answer_digest(f"label {k}".encode()), worker.address)
        signature = sign(domain.digest(answer.struct_hash()), worker.private_key)
        answers.append(answer.as_tuple())
        signatures.append(to_compact(signature) if compact else signature)
    return answers, signatures


def _refs(answers, by_worker):
    refs = [(a[3], a[1]) for a in answers]
    return sorted(refs) if by_worker else refs


def main():
    deployer, requester, relay, outsider = accounts[0], accounts[1], accounts[2], accounts[3]
    reputation = Reputation.deploy(deployer, {"from": deployer})
    escrow = TaskEscrow.deploy(reputation, {"from": deployer})
    reputation.setEscrow(escrow, True, {"from": deployer})
    usdc = TestStablecoin.deploy({"from": deployer})
    usdc.mint(requester, 1_000_000 * USDC, {"from": requester})
    usdc.approve(escrow, 2**256 - 1, {"from": requester})
    workers = [accounts.add(keccak(f"kempelen bench worker {i}".encode())) for i in range(WORKERS)]
    for worker in workers:  # gas money for their own withdrawals only
        deployer.transfer(worker, 10**17)

    gas = {}
    terms = (usdc.address, TASKS, ANSWERS_PER_TASK, 50_000, 5_000, chain.time() + 7 * DAY, 3 * DAY, 0,
             b"\x00" * 32, bytes.fromhex("01551220") + keccak(b"bench manifest"))
    tx = escrow.createBatch(terms, {"from": requester})
    gas["create_batch"] = tx.gas_used
    batch_id = tx.return_value

    answers, signatures = _signed_answers(escrow, batch_id, workers, compact=True)
    chain.snapshot()
    full_signatures = _signed_answers(escrow, batch_id, workers, compact=False)[1]
    tx = escrow.submitAnswers(answers, full_signatures, {"from": relay})
    gas["submit_per_answer_65byte_sigs"] = tx.gas_used // ANSWERS
    chain.revert()
    tx = escrow.submitAnswers(answers, signatures, {"from": relay})
    assert tx.return_value == ANSWERS, tx.return_value
    gas["submit_per_answer"] = tx.gas_used // ANSWERS
    submit_total = tx.gas_used

    chain.snapshot()
    chain.sleep(3 * DAY + 60)
    tx = escrow.release(batch_id, _refs(answers, by_worker=True), {"from": outsider})
    gas["release_per_answer"] = tx.gas_used // ANSWERS
    chain.revert()
    tx = escrow.reject(batch_id, _refs(answers, by_worker=True), bytes.fromhex("01551220") + keccak(b"r"),
                       {"from": requester})
    gas["reject_per_answer"] = tx.gas_used // ANSWERS
    chain.revert()
    tx = escrow.approve(batch_id, _refs(answers, by_worker=False), {"from": requester})
    gas["approve_per_answer_arrival_order"] = tx.gas_used // ANSWERS
    chain.revert()
    tx = escrow.approve(batch_id, _refs(answers, by_worker=True), {"from": requester})
    gas["approve_per_answer"] = tx.gas_used // ANSWERS
    approve_total = tx.gas_used

    withdrawals = [escrow.withdraw(usdc, {"from": worker}).gas_used for worker in workers]
    gas["withdraw"] = withdrawals[0]
    gas["paid_answer_amortized"] = (submit_total + approve_total + sum(withdrawals)) // ANSWERS

    newcomer = accounts.add(keccak(b"kempelen bench newcomer"))
    gas["baseline_erc20_transfer_new_holder"] = usdc.transfer(newcomer, USDC, {"from": requester}).gas_used
    gas["baseline_erc20_transfer_existing_holder"] = usdc.transfer(newcomer, USDC, {"from": requester}).gas_used

    print(f"\nGas, {ANSWERS} ERC-20-paid answers ({TASKS} tasks x {ANSWERS_PER_TASK}, {WORKERS} fresh workers)")
    print(f"{'measure':<42}{'gas':>10}{'target':>10}")
    for key, value in gas.items():
        target = TARGETS.get(key)
        mark = "" if target is None else f"{target:>10,}" + (" ok" if value <= target else " MISSED")
        print(f"{key:<42}{value:>10,}{mark}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(gas, indent=2) + "\n")
    print(f"\nwrote {OUT}")
