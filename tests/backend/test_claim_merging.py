"""The submitter sends queued claims of several workers in one claimMany (relay/settlement.py
merge_claims), and a claim that would revert goes alone and fails without holding back the others
(real anvil, SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from _audit_history import History, address
from eth_account import Account
from sqlalchemy import select

from kempelen.db import make_engine, migrate
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.settlement import claim_for
from kempelen.relay import jobs
from kempelen.relay.models import RelayJob
from kempelen.relay.packing import PackingPolicy
from kempelen.relay.relayer import Relayer
from kempelen.relay.settlement import (
    MAX_MERGED_CLAIMS,
    claim_many_calldata,
    claims_of,
    merge_claims,
)
from kempelen.relay.submitter import Submitter, SubmitterConfig

RELAYER, REQUESTER, WORKERS = 8, 1, (4, 5, 6, 7)
REWARD = 10**12


@pytest.fixture
def settled(chain, keys, tmp_path, snapshot):
    """A batch whose one settlement pays workers 4..7 two answers each; the History holds its manifest."""
    h = History(chain.w3, chain.escrow, ContentStore(tmp_path / "store"), chain.chain_id)
    batch_id = h.create_batch(keys[REQUESTER], tasks=4, answers_per_task=4, reward=REWARD, lifetime=3_000)
    answers = [h.signed_answer(batch_id, task, keys[w], f"{task} by {w}".encode()) for w in WORKERS for task in (0, 1)]
    h.settle(keys[REQUESTER], keys[RELAYER], batch_id, answers)
    return h, batch_id


@pytest.fixture
def submitter(chain, keys, database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    config = SubmitterConfig(policy=PackingPolicy(flush_after=0.0), idle_sleep=0.01, hold_check_every=0.0)
    yield Submitter(engine, Relayer(chain, keys[RELAYER]), config)
    engine.dispose()


def claim_job(submitter, h, batch_id, worker_key, cumulative=None) -> int:
    """Queues the worker's claim as POST /claims does (one claimMany of its own claims)."""
    leaf, proof = claim_for(h.settled[batch_id][0], address(worker_key))
    calldata = claim_many_calldata([(batch_id, address(worker_key), leaf if cumulative is None else cumulative, proof)])
    with submitter.engine.begin() as conn:
        return jobs.add(conn, submitter.chain_id, "claim", calldata, requested_by=address(worker_key))


def finished(submitter, job_ids, timeout=20.0) -> dict[int, jobs.Job]:
    deadline = time.monotonic() + timeout
    while True:
        with submitter.engine.connect() as conn:
            found = {i: jobs.get(conn, i) for i in job_ids}
        if all(j.status in ("mined", "failed") for j in found.values()):
            return found
        assert time.monotonic() < deadline, {i: j.status for i, j in found.items()}
        submitter.step()
        time.sleep(0.02)


def test_queued_claims_share_one_transaction(chain, keys, settled, submitter):
    h, batch_id = settled
    ids = [claim_job(submitter, h, batch_id, keys[w]) for w in WORKERS]

    done = finished(submitter, ids)

    assert {j.status for j in done.values()} == {"mined"}
    assert len({j.tx_hash for j in done.values()}) == 1  # one claimMany carried all four
    receipt = chain.w3.eth.get_transaction_receipt(done[ids[0]].tx_hash)
    claimed = chain.escrow.events.EarningsClaimed().process_receipt(receipt)
    assert sorted(e.args.worker for e in claimed) == sorted(address(keys[w]) for w in WORKERS)
    for w in WORKERS:
        assert chain.escrow.functions.earningsOf(batch_id, address(keys[w])).call() == [2 * REWARD, 2 * REWARD]


def test_a_claim_that_reverts_fails_alone(chain, keys, settled, submitter):
    h, batch_id = settled
    first, bad, *rest = WORKERS
    ids = [claim_job(submitter, h, batch_id, keys[first]),
           claim_job(submitter, h, batch_id, keys[bad], cumulative=3 * REWARD),  # not its leaf: InvalidProof
           *(claim_job(submitter, h, batch_id, keys[w]) for w in rest)]

    done = finished(submitter, ids)

    assert done[ids[1]].status == "failed" and "SettlementInvalidProof" in done[ids[1]].error
    good = [done[i] for i in ids if i != ids[1]]
    assert {j.status for j in good} == {"mined"}
    for w in (first, *rest):
        assert chain.escrow.functions.earningsOf(batch_id, address(keys[w])).call() == [2 * REWARD, 2 * REWARD]
    assert chain.escrow.functions.earningsOf(batch_id, address(keys[bad])).call() == [2 * REWARD, 0]
    with submitter.engine.connect() as conn:
        assert conn.execute(select(RelayJob.__table__.c.status)).scalars().all().count("queued") == 0


def test_a_merged_claim_the_chain_reverts_is_requeued_claim_by_claim(chain, keys, settled, submitter):
    """A worker's own claim lands first (higher fee, same block): the merged claimMany reverts
    once mined; its claims are tried again, and only the one already claimed fails."""
    h, batch_id = settled
    ids = [claim_job(submitter, h, batch_id, keys[w]) for w in WORKERS]
    rpc = chain.w3.provider.make_request
    rpc("evm_setAutomine", [False])
    try:
        submitter.step()  # estimates, signs and broadcasts the merged claimMany; nothing is mined
        with submitter.engine.connect() as conn:
            merged = {jobs.get(conn, i).tx_hash for i in ids}
        assert len(merged) == 1 and None not in merged
        own, (leaf, proof) = keys[WORKERS[1]], claim_for(h.settled[batch_id][0], address(keys[WORKERS[1]]))
        call = chain.escrow.functions.claimEarnings(batch_id, address(own), leaf, proof)
        tx = call.build_transaction({"from": address(own), "gas": 200_000, "gasPrice": 50 * chain.w3.eth.gas_price,
                                     "nonce": chain.w3.eth.get_transaction_count(address(own))})
        chain.w3.eth.send_raw_transaction(Account.from_key(own).sign_transaction(tx).raw_transaction)
        rpc("evm_mine", [])
    finally:
        rpc("evm_setAutomine", [True])
    assert chain.w3.eth.get_transaction_receipt(merged.pop()).status == 0

    done = finished(submitter, ids)

    assert done[ids[1]].status == "failed" and "SettlementNothingToClaim" in done[ids[1]].error
    assert {done[i].status for i in ids if i != ids[1]} == {"mined"}
    for w in WORKERS:
        assert chain.escrow.functions.earningsOf(batch_id, address(keys[w])).call() == [2 * REWARD, 2 * REWARD]


class _Job:
    def __init__(self, calldata):
        self.calldata = calldata


def claims(*keys_) -> bytes:
    return claim_many_calldata([(7, k, 10 * (i + 1), [bytes(32)]) for i, k in enumerate(keys_)])


def test_merge_takes_the_oldest_and_what_fits():
    a, b, c = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20
    truncated = claims(c)[:40]  # a claimMany selector, a body eth-abi cannot read
    queued = [_Job(claims(a)), _Job(claims(b, a)), _Job(b"\x00not a claim"), _Job(truncated), _Job(claims(c))]
    taken, calldata = merge_claims(queued)
    assert taken == [queued[0], queued[4]]  # (7, a) twice would revert the call; junk goes alone
    assert [(w.lower(), amount) for _, w, amount, _ in claims_of(calldata)] == [(a, 10), (c, 10)]

    many = [_Job(claims(*["0x%040x" % (n * 100 + i) for i in range(40)])) for n in range(1, 4)]
    taken, calldata = merge_claims(many)
    assert taken == many[:2] and len(claims_of(calldata)) == 80 <= MAX_MERGED_CLAIMS
