"""Each check fails when it should: escrows built to be wrong, dangling reasons, forced ETH."""

from __future__ import annotations

import pytest
from _audit_history import History, address
from kempelen.audit import run_audit
from kempelen.audit.cli import app
from kempelen.audit.content import DirectoryStore
from kempelen.chain import artifacts
from kempelen.chain.contracts import ETH, deploy_protocol
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import answer_digest
from typer.testing import CliRunner
from web3 import Web3

SKIP_SIGNATURE_CHECK, PAY_TWICE, UNDER_REFUND = 1, 2, 3  # FaultyEscrow.Fault


@pytest.fixture
def faulty(anvil, keys, tmp_path):
    """A History against a fresh FaultyEscrow with the requested fault."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    artifact = artifacts.load("FaultyEscrow")
    store = ContentStore(tmp_path / "store")

    def deploy(fault: int) -> History:
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        h = History(w3, factory, store, w3.eth.chain_id)
        receipt = h.send(keys[0], factory.constructor(fault))
        h.escrow = w3.eth.contract(address=receipt.contractAddress, abi=artifact.abi)
        h.domain = type(h.domain)(w3.eth.chain_id, receipt.contractAddress)
        return h

    return deploy


def audit(url: str, history: History, **kwargs):
    return run_audit(url, history.escrow.address, DirectoryStore(history.store.root), **kwargs)


def discrepancies(report) -> set[str]:
    return {f.code for f in report.discrepancies}


def test_signature_the_escrow_did_not_check_is_caught(anvil, keys, faulty):
    h = faulty(SKIP_SIGNATURE_CHECK)
    requester, relayer, worker, impostor = keys[1], keys[3], keys[4], keys[5]
    batch = h.create_batch(requester, tasks=2, answers_per_task=1)
    h.submit(relayer, [h.sign_answer(batch, 0, worker, b"honest answer"),
                       h.sign_answer(batch, 1, worker, b"forged answer", signer=impostor)])
    report = audit(anvil.url, h)
    assert discrepancies(report) == {"bad_signature"}
    (forged,) = report.discrepancies
    assert (forged.check, forged.batch, forged.task, forged.worker) == ("signatures", batch, 1, address(worker))
    assert address(impostor) in forged.message and forged.tx and forged.block
    # The escrow names no reputation contract: said, not hidden, and not a discrepancy.
    assert any(f.code == "reputation_unavailable" for f in report.findings)


def test_answer_paid_twice_is_caught(anvil, keys, faulty):
    h = faulty(PAY_TWICE)
    requester, relayer, worker = keys[1], keys[3], keys[4]
    batch = h.create_batch(requester, tasks=3, answers_per_task=1)  # task 2's money pays the second time
    h.submit(relayer, [h.sign_answer(batch, t, worker, f"answer {t}".encode()) for t in range(2)])
    h.approve(requester, batch, [(worker, 0)])
    second = h.approve(requester, batch, [(worker, 0)])
    h.send(worker, h.escrow.functions.withdraw(ETH))
    report = audit(anvil.url, h)
    assert discrepancies(report) == {"paid_twice"}
    (twice,) = report.discrepancies
    assert (twice.check, twice.batch, twice.task, twice.worker) == ("payouts", batch, 0, address(worker))
    assert twice.tx == "0x" + second.transactionHash.hex().removeprefix("0x")


def test_under_refund_is_caught_by_the_money_check(anvil, keys, faulty):
    h = faulty(UNDER_REFUND)
    requester, relayer, worker = keys[1], keys[3], keys[4]
    batch = h.create_batch(requester, tasks=4, answers_per_task=1, lifetime=300)
    h.submit(relayer, [h.sign_answer(batch, 0, worker, b"only answer")])
    h.approve(requester, batch, [(worker, 0)])
    h.advance(400)
    h.send(requester, h.escrow.functions.reclaim(batch))
    report = audit(anvil.url, h)
    assert discrepancies(report) == {"under_refund", "batch_unbalanced"}
    assert {f.check for f in report.discrepancies} == {"money"}
    funds = 3 * (10**15 + 10**13)  # three unanswered tasks' reward and fee
    kept = funds - funds // 2  # FaultyEscrow refunds half and keeps the rest
    unbalanced = next(f for f in report.discrepancies if f.code == "batch_unbalanced")
    assert unbalanced.batch == batch and f"+{kept} unaccounted" in unbalanced.message


@pytest.fixture(scope="module")
def dangling(anvil, keys, tmp_path_factory):
    """Real TaskEscrow: batch 1 rejects with a reason nobody stored; batch 2 is fine; ETH forced in."""
    deployment = deploy_protocol(anvil.url, keys[0])
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    escrow = w3.eth.contract(address=deployment.escrow, abi=artifacts.load("TaskEscrow").abi)
    h = History(w3, escrow, ContentStore(tmp_path_factory.mktemp("dangling-store")), deployment.chain_id)
    requester, relayer, worker = keys[1], keys[3], keys[4]
    bad = h.create_batch(requester, tasks=2, answers_per_task=1)
    good = h.create_batch(requester, tasks=2, answers_per_task=1)
    h.answer_all(relayer, bad, range(2), [worker])
    h.answer_all(relayer, good, range(2), [worker])
    h.reject(requester, bad, [(worker, 0)], reason=raw_cid(answer_digest(b"a reason never stored")).to_bytes())
    h.approve(requester, good, [(worker, 0), (worker, 1)])
    force = artifacts.load("ForceSend")
    factory = w3.eth.contract(abi=force.abi, bytecode=force.bytecode)
    h.send(keys[9], factory.constructor(deployment.escrow), value=12_345)
    return {"url": anvil.url, "history": h, "bad": bad, "good": good}


def test_rejection_with_a_dangling_reason_is_a_discrepancy(dangling):
    report = audit(dangling["url"], dangling["history"])
    (finding,) = report.discrepancies
    assert (finding.check, finding.code, finding.batch, finding.task) == (
        "content", "rejection_reason_unresolvable", dangling["bad"], 0)


def test_forced_eth_is_reported_as_surplus_not_hidden(dangling):
    report = audit(dangling["url"], dangling["history"], batches=[dangling["good"]])
    assert report.clean  # surplus harms nobody: a notice, exit code 0
    assert report.tokens[ETH].surplus == 12_345
    (surplus,) = [f for f in report.findings if f.code == "surplus"]
    assert surplus.severity == "notice" and "12345" in surplus.message
    h = dangling["history"]
    args = ["--rpc", dangling["url"], "--escrow", h.escrow.address, "--content", str(h.store.root), "--quiet"]
    only_good = CliRunner().invoke(app, args + ["--batch", str(dangling["good"])])
    assert only_good.exit_code == 0 and "surplus" in only_good.output
    assert CliRunner().invoke(app, args).exit_code == 1
