"""Helpers of the adversarial and invariant tests: deployment, signed answers, the money invariant.

Kept apart from conftest.py (owned by the escrow's author) so these tests depend only on the
contracts and on `kempelen.protocol.signing`, which is what the relay and the auditor use.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from brownie import ZERO_ADDRESS, Reputation, TaskEscrow, TestStablecoin, accounts, chain, web3
from eth_hash.auto import keccak

from kempelen.protocol.events import submitted_answers
from kempelen.protocol.signing import Answer, Domain, Withdrawal, sign
from kempelen.protocol.tasksets import TASKS_PER_SET, set_tasks, task_sets  # noqa: F401  (re-exported)

ETH = ZERO_ADDRESS

# ITaskEscrow.AnswerStatus
NONE, PENDING, PAID, REJECTED = range(4)
# ITaskEscrow.SkipReason
(
    UNKNOWN_BATCH,
    PAST_DEADLINE,
    TASK_OUT_OF_RANGE,
    BAD_SIGNATURE,
    WORKER_BLOCKED,
    REPUTATION_TOO_LOW,
    ALREADY_ANSWERED,
    TASK_FULL,
    INSUFFICIENT_FUNDS,
    SETTLEMENT_SEALED,  # the worker's settled words in the batch are sealed (ISettlement.openSettled)
) = range(10)
# IReputation.Outcome
APPROVED_OUTCOME, REJECTED_OUTCOME, RELEASED_OUTCOME = range(3)

REENTRANCY_SELECTOR = keccak(b"ReentrancyGuardReentrantCall()")[:4]
REASON_CID = bytes.fromhex("01551220") + hashlib.sha256(b"wrong label").digest()
MANIFEST_CID = bytes.fromhex("01551220") + hashlib.sha256(b"manifest").digest()
ZERO32 = bytes(32)


# ---------------------------------------------------------------- deployment


@pytest.fixture(scope="module")
def deployment():
    """Reputation + TaskEscrow (authorized) + 6-decimal stablecoin, and the roles' accounts."""
    owner = accounts[0]
    reputation = Reputation.deploy(owner, {"from": owner})
    escrow = TaskEscrow.deploy(reputation, {"from": owner})
    reputation.setEscrow(escrow, True, {"from": owner})
    usdc = TestStablecoin.deploy({"from": owner})
    return SimpleNamespace(
        owner=owner,
        escrow=escrow,
        reputation=reputation,
        usdc=usdc,
        requester=accounts[1],
        other_requester=accounts[2],
        relay=accounts[3],
        stranger=accounts[4],
        workers=[worker(i) for i in range(4)],
    )


@pytest.fixture(autouse=True)
def _isolate(fn_isolation):
    pass


_workers: dict[int, object] = {}


def worker(i: int):
    """A worker key that holds no ETH: it only signs (fund it to let it withdraw itself)."""
    known = _workers.get(i)
    # brownie forgets added keys when a module's chain.reset() runs: add it again if so.
    if known is None or str(known) not in {str(a) for a in accounts}:
        _workers[i] = accounts.add(keccak(b"kempelen-test-worker-%d" % i).hex())
    return _workers[i]


def fund_gas(account, amount=10**18):
    accounts[0].transfer(account, amount)


# ---------------------------------------------------------------- time


def now() -> int:
    return web3.eth.get_block("latest").timestamp


def mine_at(timestamp: int) -> None:
    """Mines an empty block at `timestamp`; the next transaction lands at or just after it."""
    web3.provider.make_request("evm_mine", [int(timestamp)])


def next_block_at(timestamp: int) -> None:
    """The next block (the next transaction) gets exactly `timestamp`."""
    web3.provider.make_request("evm_setNextBlockTimestamp", [int(timestamp)])


# ---------------------------------------------------------------- batches


def terms(
    token=ETH,
    task_count=4,
    answers_per_task=2,
    reward=1_000_000,
    relay_fee=10_000,
    deadline=None,
    review_window=600,
    min_reputation=0,
    gold=ZERO32,
    manifest=MANIFEST_CID,
):
    """ITaskEscrow.BatchTerms as an ABI tuple."""
    if deadline is None:
        deadline = now() + 3600
    return (
        str(token),
        task_count,
        answers_per_task,
        reward,
        relay_fee,
        deadline,
        review_window,
        min_reputation,
        gold,
        manifest,
    )


def deposit_of(batch_terms) -> int:
    return batch_terms[1] * batch_terms[2] * (batch_terms[3] + batch_terms[4])


def create_batch(escrow, requester, batch_terms, token=None):
    """Funds a batch from `requester` (minting and approving ERC-20 first); returns (id, tx)."""
    amount = deposit_of(batch_terms)
    if batch_terms[0] == ETH:
        tx = escrow.createBatch(batch_terms, {"from": requester, "value": amount})
    else:
        token.mint(requester, amount, {"from": requester})
        token.approve(escrow, amount, {"from": requester})
        tx = escrow.createBatch(batch_terms, {"from": requester})
    return tx.events["BatchCreated"]["batchId"], tx


def batch_field(escrow, batch_id, name):
    return escrow.batch(batch_id).dict()[name]


# ---------------------------------------------------------------- answers


def answer_payload(batch_id, task_index, who, salt=b"") -> bytes:
    return b"answer %d/%d by %s %s" % (batch_id, task_index, str(who).encode(), salt)


def signed_answer(
    escrow,
    signer,
    batch_id,
    task_index,
    payload=None,
    worker_address=None,
    chain_id=None,
    verifying_contract=None,
):
    """(Answer ABI tuple, 65-byte signature) as a worker's wallet produces them.

    `worker_address`, `chain_id` and `verifying_contract` default to the honest values; tests
    override one of them to forge an answer.
    """
    worker_address = str(worker_address or signer.address)
    if payload is None:
        payload = answer_payload(batch_id, task_index, worker_address)
    answer = Answer(batch_id, task_index, hashlib.sha256(payload).digest(), worker_address)
    domain = Domain(
        chain.id if chain_id is None else chain_id, str(verifying_contract or escrow.address)
    )
    signature = sign(domain.digest(answer.struct_hash()), signer.private_key)
    return answer.as_tuple(), signature


def submit(escrow, relay, signed):
    """Submits [(answer, signature), ...]; returns the transaction."""
    answers = [a for a, _ in signed]
    signatures = [s for _, s in signed]
    return escrow.submitAnswers(answers, signatures, {"from": relay})


def skipped(tx):
    """[(worker, taskIndex, reason)] of the AnswerSkipped events of `tx`."""
    if "AnswerSkipped" not in tx.events:
        return []
    return [(e["worker"], e["taskIndex"], e["reason"]) for e in tx.events["AnswerSkipped"]]


def submitted(tx, batch_id=None) -> list[tuple[str, int, bytes]]:
    """(worker, taskIndex, answerDigest) of every answer the AnswersSubmitted events of `tx`
    accept (of batch `batch_id` only, if given), in emission order: ascending by task within an
    event, and in submission order overall (an event holds a run of consecutive accepted
    answers, logged before the next run opens)."""
    if "AnswersSubmitted" not in tx.events:
        return []
    return [(e["worker"], task, bytes(digest))
            for e in tx.events["AnswersSubmitted"] if batch_id is None or e["batchId"] == batch_id
            for task, digest in submitted_answers(e)]


def accepted(tx):
    """[(worker, taskIndex)] of the answers `tx` accepted, in submission order."""
    return [(who, task) for who, task, _ in submitted(tx)]


def outcomes(tx) -> list[tuple[str, str, int, int]]:
    """(worker, requester, outcome, count) of every entry of the Reputation's OutcomesRecorded
    events of `tx` (one event per review call, one entry per run of a worker's sets), in order."""
    if "OutcomesRecorded" not in tx.events:
        return []
    return [(worker, e["requester"], e["outcome"], count)
            for e in tx.events["OutcomesRecorded"] for worker, count in zip(e["workers"], e["counts"])]


def reviewed(tx, event: str) -> list[tuple[int, str, int]]:
    """(batchId, worker, taskIndex) of every answer the review events `event` of `tx` name, in
    emission order (AnswersApproved / AnswersRejected / AnswersReleased: a 96-task bitmap each)."""
    if event not in tx.events:
        return []
    return [(e["batchId"], e["worker"], e["firstTask"] + b)
            for e in tx.events[event] for b in range(96) if e["tasks"] >> b & 1]


def sets(answers) -> list[tuple[str, int, int]]:
    """TaskSet tuples (worker, firstTask, tasks) naming `answers` in approve / reject / release,
    as the SDK names them (kempelen.protocol.tasksets.task_sets: one set per worker and 96-task
    group, sorted by worker, then group). `answers`: (worker, taskIndex) pairs or
    (worker, batchId, taskIndex[, digest]) entries; workers as accounts or addresses."""
    return task_sets((str(a[0]), a[1] if len(a) == 2 else a[2]) for a in answers)


def single(worker, task_index) -> tuple[str, int, int]:
    """The TaskSet naming one answer alone."""
    first = task_index - task_index % TASKS_PER_SET
    return (str(worker), first, 1 << (task_index - first))


def status(escrow, batch_id, who, task_index) -> int:
    return escrow.answerStatus(batch_id, who, task_index)[0]


def withdrawal_signature(escrow, signer, token, deadline, nonce=0, account=None, chain_id=None):
    account = str(account or signer.address)
    message = Withdrawal(account, str(token), nonce, deadline)
    domain = Domain(chain.id if chain_id is None else chain_id, escrow.address)
    return sign(domain.digest(message.struct_hash()), signer.private_key)


# ---------------------------------------------------------------- money


def fast_call(method, *args):
    """`method(*args)` through a bare eth_call: web3's middleware costs ~6 ms a call, this ~1 ms,
    which is what makes checking every balance after every fuzzing step affordable."""
    response = web3.provider.make_request(
        "eth_call", [{"to": method._address, "data": method.encode_input(*args)}, "latest"]
    )
    if "error" in response:
        raise AssertionError(f"{method._name}{args} failed: {response['error']}")
    return method.decode_output(response["result"])


_session = None


REVERTED = object()  # batch_call's result of a call that reverted, with allow_revert


def batch_call(calls, allow_revert=False):
    """[(method, args), ...] -> results, all in one JSON-RPC batch of eth_calls (one round trip).
    A call that fails raises, or with `allow_revert` gives REVERTED."""
    global _session
    if _session is None:
        import requests

        _session = requests.Session()
    payload = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_call",
            "params": [{"to": method._address, "data": method.encode_input(*args)}, "latest"],
        }
        for i, (method, args) in enumerate(calls)
    ]
    responses = {r["id"]: r for r in _session.post(web3.provider.endpoint_uri, json=payload).json()}
    results = []
    for i, (method, args) in enumerate(calls):
        if "error" in responses[i]:
            if allow_revert:
                results.append(REVERTED)
                continue
            raise AssertionError(f"{method._name}{args} failed: {responses[i]['error']}")
        results.append(method.decode_output(responses[i]["result"]))
    return results


def token_balance(token, holder) -> int:
    """Balance of `holder` in `token` (a contract or an address; ETH = ZERO_ADDRESS)."""
    if str(token) == ETH:
        return web3.eth.get_balance(str(holder))
    if not hasattr(token, "balanceOf"):
        token = TestStablecoin.at(str(token))
    return token.balanceOf(holder)


def locked_in_batches(escrow, token) -> int:
    """Σ funds + pending × reward over the escrow's batches in `token` (ids 1..batchCount)."""
    total = 0
    for batch_id in range(1, escrow.batchCount() + 1):
        b = escrow.batch(batch_id).dict()
        if b["token"] == str(token):
            total += b["funds"] + b["pending"] * b["reward"]
    return total


def assert_money_invariant(escrow, token, holders, surplus=0):
    """The invariant of ITaskEscrow for one token, with `surplus` nobody is owed."""
    locked = locked_in_batches(escrow, token)
    owed_to_accounts = sum(escrow.balanceOf(str(token), h) for h in set(map(str, holders)))
    held = token_balance(token, escrow)
    assert held == locked + owed_to_accounts + surplus, (held, locked, owed_to_accounts, surplus)
