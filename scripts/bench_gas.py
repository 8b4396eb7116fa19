"""Gas benchmark of one realistic batch: 100 ERC-20-paid answers from 10 workers (a benchmark, not a test).

    make bench-gas        # = brownie run scripts/bench_gas.py --network kempelen-test

A requester funds 34 tasks x 3 answers in the 6-decimal test stablecoin; 10 workers each
answer 10 tasks; the relay receives answers interleaved as a crowd sends them (answer k:
worker k % 10, task k // 3), sorts them by worker and task (kempelen.relay.packing.order_for_gas)
and submits all 100 in one `submitAnswers` call with EIP-2098 compact signatures, every one
verified on-chain (`submit_per_answer_arrival_order`: the same answers unsorted). The requester
approves them in one call naming them as task sets (one per worker and 96-task group, as the SDK
sends them); each worker withdraws once.

Round 1 is all first-timers: requester, workers and relay have no reputation record, no
escrow balance slot, no token balance (worst case). Round 2 is the steady state: a second
batch of the same people. Release, reject, unsorted submission and 65-byte signatures
are measured on snapshots of round 1.

The settlement path (ISettlement) is measured on 1,000 answers from 10 workers: 334 tasks x 3
answers, answer k by worker k % 10 to task k // 3 (each worker's 100 tasks spread over the whole
batch, two 192-task settled words each). The requester signs one settlement of all 1,000; the
relay posts it; each worker's cumulative earnings are claimed with a Merkle proof, one claim
transaction per worker. First-time workers have no escrow balance slot; returning ones do.
`settle_per_answer_second_half`: the same answers settled in two halves, the second restating each
worker's earlier words (what every later settlement of a batch does); `open_settled`: one worker's
two settled words opened for the direct path (kempelen.protocol.sealed).
Prints a table, writes build/bench/gas.json.
"""

import json
from pathlib import Path

from brownie import Reputation, TaskEscrow, TestStablecoin, accounts, chain
from eth_hash.auto import keccak

from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.sealed import SettledBook, open_words
from kempelen.protocol.signing import (
    Answer,
    Domain,
    Settlement,
    answer_digest,
    settled_words,
    sign,
    to_compact,
)
from kempelen.protocol.tasksets import task_sets

USDC = 10**6
DAY = 86_400
TASKS, ANSWERS_PER_TASK, WORKERS, ANSWERS = 34, 3, 10, 100
REASON_CID = bytes.fromhex("01551220") + keccak(b"bench rejection reason")
TARGETS = {"submit_per_answer": 15_000, "approve_per_answer": 8_000, "paid_answer_amortized": 25_000,
           "claim": 60_000, "settled_answer_amortized": 1_000}
SETTLED_TASKS, SETTLED_PER_TASK, SETTLED_ANSWERS = 334, 3, 1_000
SETTLED_REWARD, SETTLED_FEE = 5_000, 500  # half a cent and a twentieth of a cent in 6-decimal USDC
OUT = Path("build/bench/gas.json")


def _create_batch(escrow, usdc, requester):
    terms = (usdc.address, TASKS, ANSWERS_PER_TASK, 50_000, 5_000, chain.time() + 7 * DAY, 3 * DAY, 0,
             b"\x00" * 32, bytes.fromhex("01551220") + keccak(b"bench manifest"))
    tx = escrow.createBatch(terms, {"from": requester})
    return tx.return_value, tx.gas_used


def _signed_answers(escrow, batch_id, workers, compact=True, arrival_order=False):
    """The batch's 100 signed answers, in the order the relay submits them (sorted by worker and
    task, as kempelen.relay.packing.order_for_gas does) or in arrival order."""
    domain = Domain(chain.id, escrow.address)
    answers, signatures = [], []
    for k in range(ANSWERS):
        worker, task = workers[k % WORKERS], k // ANSWERS_PER_TASK
        answer = Answer(batch_id, task, answer_digest(f"label {batch_id}/{k}".encode()), worker.address)
        signature = sign(domain.digest(answer.struct_hash()), worker.private_key)
        answers.append(answer.as_tuple())
        signatures.append(to_compact(signature) if compact else signature)
    if not arrival_order:
        ordered = sorted(zip(answers, signatures), key=lambda pair: (pair[0][3].lower(), pair[0][1]))
        answers, signatures = [a for a, _ in ordered], [s for _, s in ordered]
    return answers, signatures


def _sets(answers):
    """The review call's task sets for the answers (one per worker and 96-task group)."""
    return task_sets((a[3], a[1]) for a in answers)


def _round(escrow, usdc, batch_id, workers, requester, relay, gas, suffix=""):
    """Submit 100 answers in one call, approve them in one call, every worker withdraws."""
    answers, signatures = _signed_answers(escrow, batch_id, workers)
    tx = escrow.submitAnswers(answers, signatures, {"from": relay})
    assert tx.return_value == ANSWERS, tx.return_value
    submit = tx.gas_used
    approve = escrow.approve(batch_id, _sets(answers), {"from": requester}).gas_used
    withdrawals = [escrow.withdraw(usdc, {"from": worker}).gas_used for worker in workers]
    gas["submit_per_answer" + suffix] = submit // ANSWERS
    gas["approve_per_answer" + suffix] = approve // ANSWERS
    gas["withdraw" + suffix] = withdrawals[0]
    gas["paid_answer_amortized" + suffix] = (submit + approve + sum(withdrawals)) // ANSWERS


def _variants(escrow, batch_id, workers, requester, relay, outsider, gas):
    """Alternatives to round 1's calls, each replayed from the chain snapshot taken before it."""
    answers, signatures = _signed_answers(escrow, batch_id, workers)
    full = _signed_answers(escrow, batch_id, workers, compact=False)[1]
    chain.snapshot()
    gas["submit_per_answer_65byte_sigs"] = escrow.submitAnswers(answers, full, {"from": relay}).gas_used // ANSWERS
    chain.revert()
    arrival = _signed_answers(escrow, batch_id, workers, arrival_order=True)
    gas["submit_per_answer_arrival_order"] = escrow.submitAnswers(*arrival, {"from": relay}).gas_used // ANSWERS
    replays = {
        "reject_per_answer": lambda: escrow.reject(batch_id, _sets(answers), REASON_CID, {"from": requester}),
        "release_per_answer": lambda: (chain.sleep(3 * DAY + 60),
                                       escrow.release(batch_id, _sets(answers), {"from": outsider}))[1],
    }
    for key, replay in replays.items():
        chain.revert()
        escrow.submitAnswers(answers, signatures, {"from": relay})
        gas[key] = replay().gas_used // ANSWERS
    chain.revert()


def _settlement_round(escrow, usdc, requester, relay, workers, gas, suffix="", tasks=SETTLED_TASKS,
                      relayed=False):
    """One settlement of 1,000 answers posted by the relay, then every worker's claim: one claim
    transaction per worker, or (relayed) all of them in one claimMany by the relay."""
    per_task = -(-SETTLED_ANSWERS // tasks)
    terms = (usdc.address, tasks, per_task, SETTLED_REWARD, SETTLED_FEE, chain.time() + 7 * DAY,
             3 * DAY, 0, b"\x00" * 32, bytes.fromhex("01551220") + keccak(b"bench settled manifest"))
    batch_id = escrow.createBatch(terms, {"from": requester}).return_value
    answers = [(workers[k % WORKERS].address, k // per_task) for k in range(SETTLED_ANSWERS)]
    earnings = {}
    for worker, _ in answers:
        earnings[worker] = earnings.get(worker, 0) + SETTLED_REWARD
    tree = earnings_tree(earnings)
    settlement = Settlement(batch_id, 1, tree.root, SETTLED_ANSWERS * SETTLED_REWARD,
                            bytes.fromhex("01551220") + keccak(b"bench settlement manifest"),
                            tuple(settled_words(answers)))
    signature = to_compact(sign(Domain(chain.id, escrow.address).digest(settlement.struct_hash()),
                                requester.private_key))
    before = [0] * len(settlement.settled)  # a first settlement: nothing settled earlier
    settle = escrow.settle(settlement.as_tuple(), before, signature, {"from": relay}).gas_used
    claims = [(batch_id, worker, cumulative, tree.proof(i)) for i, (worker, cumulative) in enumerate(tree.values)]
    if relayed:
        claimed = [escrow.claimMany(claims, {"from": relay}).gas_used]
        gas["claim_many_per_worker" + suffix] = claimed[0] // len(claims)
        gas["settled_answer_amortized_claim_many" + suffix] = (settle + sum(claimed)) // SETTLED_ANSWERS
    else:
        claimed = [escrow.claimEarnings(*claim, {"from": relay}).gas_used for claim in claims]
        gas["settle_per_answer" + suffix] = settle // SETTLED_ANSWERS
        gas["claim" + suffix] = max(claimed)
        gas["settled_answer_amortized" + suffix] = (settle + sum(claimed)) // SETTLED_ANSWERS


def _later_settlement_round(escrow, usdc, requester, relay, workers, gas):
    """The same 1,000 answers settled in two halves: the second settlement restates each worker's
    earlier words (entries with no new bits, `before` from the first), as every later settlement
    of a batch does; then one worker's words are opened for the direct path."""
    terms = (usdc.address, SETTLED_TASKS, SETTLED_PER_TASK, SETTLED_REWARD, SETTLED_FEE, chain.time() + 7 * DAY,
             3 * DAY, 0, b"\x00" * 32, bytes.fromhex("01551220") + keccak(b"bench settled manifest"))
    batch_id = escrow.createBatch(terms, {"from": requester}).return_value
    answers = [(workers[k % WORKERS].address, k // SETTLED_PER_TASK) for k in range(SETTLED_ANSWERS)]
    half = SETTLED_ANSWERS // 2
    book, earnings, total = SettledBook(), {}, 0
    domain = Domain(chain.id, escrow.address)
    for sequence, part in ((1, answers[:half]), (2, answers[half:])):
        for worker, _ in part:
            earnings[worker] = earnings.get(worker, 0) + SETTLED_REWARD
        total += len(part) * SETTLED_REWARD
        entries = book.restated(settled_words(part))
        settlement = Settlement(batch_id, sequence, earnings_tree(earnings).root, total,
                                bytes.fromhex("01551220") + keccak(b"bench settlement manifest %d" % sequence),
                                entries)
        signature = to_compact(sign(domain.digest(settlement.struct_hash()), requester.private_key))
        settle = escrow.settle(settlement.as_tuple(), book.before(entries), signature, {"from": relay}).gas_used
        book.add(entries)
    gas["settle_per_answer_second_half"] = settle // (SETTLED_ANSWERS - half)
    worker = workers[0].address
    gas["open_settled"] = escrow.openSettled(batch_id, worker, open_words(book.of_worker(worker)),
                                             {"from": relay}).gas_used


def _settlement_rounds(escrow, usdc, requester, relay, gas):
    """First-time and returning workers, each claiming with its own transaction or all through one
    relayed claimMany; then a denser batch (167 tasks x 6) with returning workers."""
    workers = [accounts.add(keccak(f"kempelen bench settled worker {i}".encode())) for i in range(WORKERS)]
    chain.snapshot()
    _settlement_round(escrow, usdc, requester, relay, workers, gas, relayed=True)
    chain.revert()
    _later_settlement_round(escrow, usdc, requester, relay, workers, gas)
    chain.revert()
    _settlement_round(escrow, usdc, requester, relay, workers, gas)
    chain.snapshot()
    _settlement_round(escrow, usdc, requester, relay, workers, gas, suffix="_returning")
    for suffix, options in (("_returning", {"relayed": True}),
                            ("_returning_167_tasks", {"tasks": 167})):
        chain.revert()
        _settlement_round(escrow, usdc, requester, relay, workers, gas, suffix=suffix, **options)
    chain.revert()


VARIANTS = ("", "_65byte_sigs", "_claim_many", "_returning", "_returning_167_tasks", "_claim_many_returning")


def _target(key):
    """The target of a measure: its own, or that of the measure it is a variant of (the same
    thing measured with returning participants, relayed claims, another batch shape)."""
    for name, target in TARGETS.items():
        if key.startswith(name) and key[len(name):] in VARIANTS:
            return target
    return None


def main():
    deployer, relay, outsider = accounts[0], accounts[2], accounts[3]
    requester = accounts.add(keccak(b"kempelen bench requester"))  # a key: it signs settlements
    deployer.transfer(requester, 10**20)
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
    batch_id, gas["create_batch"] = _create_batch(escrow, usdc, requester)
    _variants(escrow, batch_id, workers, requester, relay, outsider, gas)
    _round(escrow, usdc, batch_id, workers, requester, relay, gas)
    batch_id, gas["create_batch_returning"] = _create_batch(escrow, usdc, requester)
    _round(escrow, usdc, batch_id, workers, requester, relay, gas, suffix="_returning")

    _settlement_rounds(escrow, usdc, requester, relay, gas)

    newcomer = accounts.add(keccak(b"kempelen bench newcomer"))
    gas["baseline_erc20_transfer_new_holder"] = usdc.transfer(newcomer, USDC, {"from": requester}).gas_used
    gas["baseline_erc20_transfer_existing_holder"] = usdc.transfer(newcomer, USDC, {"from": requester}).gas_used

    print(f"\nGas: {ANSWERS} answers paid in a 6-decimal ERC-20 ({TASKS} tasks x {ANSWERS_PER_TASK}, {WORKERS} workers)")
    print(f"{'measure':<42}{'gas':>10}{'target':>10}")
    for key in sorted(gas, key=lambda k: ("_returning" in k, k.startswith("baseline"), k)):
        value, target = gas[key], _target(key)
        mark = "" if target is None else f"{target:>10,}" + (" ok" if value <= target else " MISSED")
        print(f"{key:<42}{value:>10,}{mark}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(gas, indent=2) + "\n")
    print(f"\nwrote {OUT}")
