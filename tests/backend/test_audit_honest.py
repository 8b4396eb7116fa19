"""The auditor on an honest history: ETH and USDC batches through every step of their lives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import httpx
import jsonschema_rs
import pytest
from _audit_history import History, address
from kempelen.audit import run_audit
from kempelen.audit.cli import app
from kempelen.audit.content import DirectoryStore, TrustlessGateway
from kempelen.audit.report import SCHEMA_PATH, to_json
from kempelen.chain import artifacts
from kempelen.chain.anvil import free_port
from kempelen.chain.contracts import ETH, deploy_protocol
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import answer_digest
from typer.testing import CliRunner
from web3 import Web3

USDC = 10**6


@pytest.fixture(scope="module")
def honest(anvil, keys, tmp_path_factory):
    """A fresh protocol deployment and a history touching every kind of event."""
    deployment = deploy_protocol(anvil.url, keys[0])
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    escrow = w3.eth.contract(address=deployment.escrow, abi=artifacts.load("TaskEscrow").abi)
    store = ContentStore(tmp_path_factory.mktemp("audit-store"))
    h = History(w3, escrow, store, deployment.chain_id)
    requester_a, requester_b, relayer, w1, w2, w3k, w4 = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]

    # ETH batch: approvals, a rejection, a bonus, auto-releases, withdrawals, a reclaim.
    eth_batch = h.create_batch(requester_a, tasks=3, answers_per_task=2, lifetime=3_000, review_window=600)
    h.answer_all(relayer, eth_batch, range(3), [w1, w2])
    h.approve(requester_a, eth_batch, [(w1, 0), (w1, 1), (w2, 0)])
    h.reject(requester_a, eth_batch, [(w2, 1)])
    reason = h.put_json({"bonus": "careful work"}).to_bytes()
    h.send(requester_a, escrow.functions.bonus(eth_batch, address(w1), 5 * 10**14, reason), value=5 * 10**14)

    # USDC batch over two 96-task groups, submitted in two rounds 400 s apart.
    token = w3.eth.contract(address=deployment.tokens["USDC"], abi=artifacts.load("TestStablecoin").abi)
    h.send(requester_b, token.functions.mint(address(requester_b), 1_000 * USDC))
    h.send(requester_b, token.functions.approve(deployment.escrow, 1_000 * USDC))
    usdc_batch = h.create_batch(requester_b, tasks=100, answers_per_task=2, reward=USDC, relay_fee=USDC // 100,
                                token=token.address, lifetime=3_000, review_window=600)
    h.answer_all(relayer, usdc_batch, range(50), [w3k])
    h.advance(400)
    h.answer_all(relayer, usdc_batch, range(50, 100), [w3k])
    h.answer_all(relayer, usdc_batch, range(5), [w4])
    h.advance(400)
    # 800 s after the first round: inside the window only by ITaskEscrow's group rule.
    h.approve(requester_b, usdc_batch, [(w3k, t) for t in range(60)])
    h.reject(requester_b, usdc_batch, [(w4, 0)])
    h.send(requester_b, escrow.functions.extend(usdc_batch, h.now() + 3_000, 2, 10 * USDC))

    h.advance(700)
    h.release(relayer, eth_batch, [(w1, 2), (w2, 2)])
    h.release(w4, usdc_batch, [(w3k, t) for t in range(60, 100)] + [(w4, t) for t in range(1, 5)])
    for key in (w1, w2, relayer):
        h.send(key, escrow.functions.withdraw(ETH))
    for key in (w3k, relayer):
        h.send(key, escrow.functions.withdraw(token.address))
    h.advance(3_000)
    h.send(requester_a, escrow.functions.reclaim(eth_batch))
    h.send(requester_b, escrow.functions.reclaim(usdc_batch))
    return {"deployment": deployment, "store": store, "url": anvil.url, "history": h,
            "batches": (eth_batch, usdc_batch), "workers": (w1, w2, w3k, w4)}


def test_honest_history_audits_clean(honest):
    report = run_audit(honest["url"], honest["deployment"].escrow, DirectoryStore(honest["store"].root))
    assert report.findings == []
    assert report.clean
    eth_batch, usdc_batch = (report.batches[i] for i in honest["batches"])
    assert (eth_batch.submitted, eth_batch.approved, eth_batch.rejected, eth_batch.released) == (6, 3, 1, 2)
    assert (usdc_batch.submitted, usdc_batch.approved, usdc_batch.rejected, usdc_batch.released) == (105, 60, 1, 44)
    assert report.answers_audited == report.signatures_checked == 111
    assert eth_batch.locked_onchain == usdc_batch.locked_onchain == 0
    eth = report.tokens[ETH]
    assert eth.balance == eth.expected_balance == eth.owed_replayed
    usdc = report.tokens[honest["deployment"].tokens["USDC"]]
    assert usdc.symbol == "tUSDC" and usdc.decimals == 6 and usdc.topped_up == 10 * USDC
    assert usdc.balance == usdc.expected_balance == usdc.owed_replayed
    # Distinct files: 2 manifests, 100 task payloads (the ETH batch's 3 equal the USDC batch's first 3),
    # 111 answers, 1 rejection reason (both rejections give the same one), 1 bonus reason.
    assert report.content_checked == 2 + 100 + 111 + 1 + 1


def test_cli_exit_zero_and_reports_follow_the_schema(honest, tmp_path):
    json_path, html_path = tmp_path / "audit.json", tmp_path / "audit.html"
    result = CliRunner().invoke(app, [
        "--rpc", honest["url"], "--escrow", honest["deployment"].escrow, "--content", str(honest["store"].root),
        "--json", str(json_path), "--html", str(html_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "CLEAN" in result.output
    document = json.loads(json_path.read_text())
    jsonschema_rs.validator_for(json.loads(SCHEMA_PATH.read_text())).validate(document)
    assert document["clean"] is True and document["summary"]["answers"] == 111
    html = html_path.read_text()
    assert html.count("<svg") == 5  # payments over time and per worker for ETH and USDC, review delays
    for external in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert external not in html  # self-contained: opens offline


def test_batch_filter_audits_only_that_batch(honest):
    eth_batch, _ = honest["batches"]
    report = run_audit(honest["url"], honest["deployment"].escrow, DirectoryStore(honest["store"].root),
                       batches=[eth_batch])
    assert report.clean and list(report.batches) == [eth_batch] and report.answers_audited == 6


def test_altered_and_missing_content_are_found(honest, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(honest["store"].root, copy)
    store = ContentStore(copy)
    h: History = honest["history"]
    w1 = honest["workers"][0]
    eth_batch, _ = honest["batches"]
    answer = raw_cid(answer_digest(f"answer {eth_batch}/0 by {address(w1)}".encode()))
    where = store.blocks.locate(answer)  # a pack or a flatfs file: edit the stored bytes in place
    with open(where.path, "r+b") as stored:
        stored.seek(where.offset)
        stored.write(b"ANSWER")
    task = h.put_json({"task": 2, "text": "label item 2"})
    store.blocks.delete_block(task)

    report = run_audit(honest["url"], honest["deployment"].escrow, DirectoryStore(copy))
    codes = {(f.check, f.code, f.batch, f.task) for f in report.discrepancies}
    assert ("content", "answer_corrupt", eth_batch, 0) in codes
    assert ("content", "task_missing", eth_batch, 2) in codes
    corrupt = next(f for f in report.findings if f.code == "answer_corrupt")
    assert corrupt.worker == address(w1) and corrupt.tx and corrupt.block
    result = CliRunner().invoke(app, ["--rpc", honest["url"], "--escrow", honest["deployment"].escrow,
                                      "--content", str(copy), "--quiet"])
    assert result.exit_code == 1 and "DISCREPANCIES" in result.output


@pytest.fixture
def gateway(honest):
    """The embedded store's trustless gateway under uvicorn, in its own process, stopped by PID."""
    port = free_port()
    code = ("import sys, uvicorn; from fastapi import FastAPI; from kempelen.ipfs.gateway import gateway_router;"
            "from kempelen.ipfs.store import ContentStore; app = FastAPI();"
            "app.include_router(gateway_router(ContentStore(sys.argv[1])));"
            "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')")
    server = subprocess.Popen([sys.executable, "-c", code, str(honest["store"].root), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(url + "/ipfs/bafkqaaa", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_audit_through_a_trustless_gateway(honest, gateway):
    source = TrustlessGateway(gateway)
    report = run_audit(honest["url"], honest["deployment"].escrow, source)
    source.close()
    assert report.findings == [] and report.content_checked == 215
    assert to_json(report)["content_source"] == f"gateway {gateway}"


def assert_decoder_matches_web3(url: str, query: dict, logs: list[dict]) -> None:
    """kempelen.protocol.events against web3.py's own event decoding, log by log."""
    from web3 import Web3

    from kempelen.protocol.events import EventDecoder

    w3 = Web3(Web3.HTTPProvider(url))
    abis = {name: artifacts.load(name).abi for name in ("TaskEscrow", "Reputation")}
    decoder = EventDecoder(*abis.values())
    web3_logs = w3.eth.get_logs(query)
    assert len(web3_logs) == len(logs)
    for raw, web3_log in zip(logs, web3_logs):
        event = decoder.decode(raw)
        abi = next(a for a in abis.values() if any(e.get("name") == event.name for e in a))
        reference = getattr(w3.eth.contract(abi=abi).events, event.name)().process_log(web3_log)
        assert event.args == dict(reference["args"]), event.name
        assert event.block_number == reference["blockNumber"] and event.log_index == reference["logIndex"]


def test_fast_decoders_agree_with_eth_abi_on_the_real_history(honest):
    from kempelen.audit.fastabi import decode_submit_args, decode_submit_args_strict
    from kempelen.audit.scan import SUBMIT_SELECTOR
    from kempelen.protocol.events import EventDecoder

    abis = (artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi)
    head = httpx.post(honest["url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                           "params": []}).json()["result"]
    query = {"fromBlock": "0x0", "toBlock": head,
             "address": [honest["deployment"].escrow, honest["deployment"].reputation]}
    logs = httpx.post(honest["url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                                           "params": [query]}).json()["result"]
    assert len(logs) > 20  # submissions and reviews name a worker's answers per 96-task group, one log each
    assert_decoder_matches_web3(honest["url"], query, logs)
    decoder = EventDecoder(abis[0])
    submitted = [e for e in decoder.decode_all(logs) if e.name == "AnswersSubmitted"]
    named = sorted(len(e.args["answerDigests"]) for e in submitted)
    assert sum(named) == 111 and named[-3:] == [5, 46, 50]  # w4's 5, w3's 50 + (46 + 4) in the USDC batch
    submits = {e.transaction_hash for e in submitted}
    for tx_hash in submits:
        tx = httpx.post(honest["url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionByHash",
                                             "params": [tx_hash]}).json()["result"]
        calldata = bytes.fromhex(tx["input"][2:])
        assert calldata[:4] == SUBMIT_SELECTOR
        assert decode_submit_args(calldata[4:]) == decode_submit_args_strict(calldata[4:])


def test_gateway_source_verifies_multi_block_files_and_reports_missing_ones(honest, gateway):
    from kempelen.audit.content import file_verdict
    from kempelen.protocol.cid import DAG_PB

    big = bytes(range(256)) * 3_000  # 768,000 bytes: a dag-pb root over three 256 KiB leaves
    cid = honest["store"].put(big)
    assert cid.codec == DAG_PB
    source = TrustlessGateway(gateway)
    try:
        assert source.read_file(cid) == big
        assert file_verdict(source, raw_cid(answer_digest(b"never stored"))).startswith("missing")
    finally:
        source.close()
