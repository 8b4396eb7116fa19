"""The auditor on settlements (ISettlement): an honest history with settlements, claims and the
direct fallback audits clean; manifests that disagree with the chain are each caught by name."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
from _audit_history import History, address
from test_audit_honest import assert_decoder_matches_web3
from web3 import Web3

from kempelen.audit import run_audit
from kempelen.audit.content import DirectoryStore
from kempelen.audit.report import SCHEMA_PATH, to_json
from kempelen.audit.scan import decode_settle_calldata
from kempelen.chain import artifacts
from kempelen.chain.contracts import ETH, deploy_protocol
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.events import EventDecoder
from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.signing import sign

USDC = 10**6
REWARD = 10**15


def protocol(anvil, keys, store_dir) -> History:
    deployment = deploy_protocol(anvil.url, keys[0])
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    escrow = w3.eth.contract(address=deployment.escrow, abi=artifacts.load("TaskEscrow").abi)
    h = History(w3, escrow, ContentStore(store_dir), deployment.chain_id)
    h.deployment = deployment
    return h


def audit(h: History, **kwargs):
    return run_audit(h.w3.provider.endpoint_uri, h.escrow.address, DirectoryStore(h.store.root), **kwargs)


@pytest.fixture(scope="module")
def settled(anvil, keys, tmp_path_factory):
    """Settlements beside the direct path on an ETH batch (two settled words, two settlements whose
    second restates w1's and w2's earlier words, claims in between, a rejected direct answer
    settled later, w3's sealed words opened so that its next answer takes the direct path, then a
    third settlement paying w3 again in another word with no restating entry and a garbage
    `before`, which the escrow ignores for an opened worker) and a USDC batch settled by a worker,
    reclaimed with part of its pool still unclaimed."""
    h = protocol(anvil, keys, tmp_path_factory.mktemp("settled-store"))
    requester_a, requester_b, relayer, w1, w2, w3, w4 = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]

    eth = h.create_batch(requester_a, tasks=200, answers_per_task=2, reward=REWARD, lifetime=3_000)
    # Direct answers first: once settled, a worker's answers wait for its words to be opened.
    h.submit(relayer, [h.sign_answer(eth, 5, w2, b"direct 5"), h.sign_answer(eth, 0, w3, b"direct 0"),
                       h.sign_answer(eth, 3, w1, b"direct 3")])
    h.settle(requester_a, relayer, eth, [h.signed_answer(eth, t, w, f"eth {t} by {w[-4:]}".encode())
                                         for w, t in ((w1, 0), (w1, 1), (w1, 2), (w1, 195), (w2, 0), (w2, 1))])
    h.approve(requester_a, eth, [(w2, 5)])
    h.reject(requester_a, eth, [(w1, 3)])
    h.claim(relayer, eth, w1)
    h.claim(w2, eth, w2)
    h.settle(requester_a, relayer, eth, [h.signed_answer(eth, 3, w1, b"settled 3 after all"),
                                         h.signed_answer(eth, 196, w2, b"eth 196"),
                                         h.signed_answer(eth, 7, w3, b"eth 7")])
    h.claim(w1, eth, w1)
    h.claim(w3, eth, w3)
    h.submit(relayer, [h.sign_answer(eth, 8, w3, b"direct 8")])  # skipped: w3's settled words are sealed
    h.open_settled(w4, eth, w3)
    h.submit(relayer, [h.sign_answer(eth, 8, w3, b"direct 8"), h.sign_answer(eth, 7, w3, b"again 7")])
    h.approve(requester_a, eth, [(w3, 8)])
    # w3 is opened: settled again in word 1 (task 193) without restating its word 0, with a `before`
    # that is not its bits; w1 is sealed: its words 0 and 1 are restated, its `before` honest.
    garbage = {address(w3): 0xDEAD}
    reopened = h.settle(requester_a, relayer, eth, [h.signed_answer(eth, 193, w3, b"eth 193 after opening"),
                                                    h.signed_answer(eth, 4, w1, b"eth 4")],
                        before=lambda entry, bits: garbage.get(entry.worker, bits))
    h.claim(w3, eth, w3)

    token = h.w3.eth.contract(address=h.deployment.tokens["USDC"], abi=artifacts.load("TestStablecoin").abi)
    h.send(requester_b, token.functions.mint(address(requester_b), 1_000 * USDC))
    h.send(requester_b, token.functions.approve(h.escrow.address, 1_000 * USDC))
    usdc = h.create_batch(requester_b, tasks=10, answers_per_task=1, reward=USDC, relay_fee=USDC // 100,
                          token=token.address, lifetime=1_000)
    h.submit(relayer, [h.sign_answer(usdc, t, w3, f"usdc {t}".encode()) for t in (0, 1)])
    h.settle(requester_b, w4, usdc, [h.signed_answer(usdc, t, w, f"usdc {t}".encode())
                                     for w, t in ((w1, 2), (w2, 3), (w2, 4))])
    h.claim(w4, usdc, w2)  # w1's leaf stays in the pool
    h.approve(requester_b, usdc, [(w3, 0)])
    h.advance(1_100)  # past the review window and the USDC batch's deadline
    h.release(relayer, eth, [(w3, 0)])
    h.release(relayer, usdc, [(w3, 1)])
    h.send(requester_b, h.escrow.functions.reclaim(usdc))
    for key in (w1, w2, w3, relayer):
        h.send(key, h.escrow.functions.withdraw(ETH))
    h.send(w4, h.escrow.functions.withdraw(token.address))
    return {"history": h, "eth": eth, "usdc": usdc, "usdc_token": token.address, "reopened": reopened,
            "w1": address(w1), "w2": address(w2), "w3": address(w3)}


def test_honest_settlements_audit_clean(settled):
    h = settled["history"]
    report = audit(h)
    assert report.findings == [], [f.to_json() for f in report.findings]
    eth, usdc = report.batches[settled["eth"]], report.batches[settled["usdc"]]
    assert (eth.settlements, eth.settled_answers, eth.claims) == (3, 11, 5)
    # w2 has not claimed its third, nor w1 its sixth (task 4, settled after the opening of w3)
    assert eth.settled == 11 * REWARD and eth.claimed == 9 * REWARD
    assert (usdc.settlements, usdc.settled_answers, usdc.settled, usdc.claimed) == (1, 3, 3 * USDC, 2 * USDC)
    assert usdc.locked_onchain == usdc.locked_replayed == USDC  # w1's unclaimed leaf, after the reclaim
    usdc_totals = report.tokens[settled["usdc_token"]]
    assert usdc_totals.owed_replayed == usdc_totals.balance
    # 6 + 3 + 2 + 3 settled answers and 6 direct ones: every signature re-verified.
    assert report.signatures_checked == 14 + 6
    assert len(report.settlements) == 4 and all(s.manifest_verified for s in report.settlements)
    # w3's answer to task 8: skipped while its settled words were sealed, accepted once opened (its
    # settled task 7 skipped again), approved; the second settlement restated earlier words.
    assert (eth.submitted, eth.skipped, eth.approved) == (4, 2, 2)
    # tasks 7 and 193 claimed (193 settled after the opening), 8 approved, 0 released
    assert report.worker_earnings[(ETH, settled["w3"])] == 4 * REWARD


def test_opened_worker_settled_again_with_a_garbage_before_audits_clean(settled):
    """The third ETH settlement really carried no restating entry for w3 and a `before` that is not
    its bits: the escrow ignored it (w3 was opened) and the auditor does too; w1's was checked."""
    h, w1, w3 = settled["history"], settled["w1"], settled["w3"]
    tx = h.w3.eth.get_transaction(settled["reopened"].transactionHash)
    (call,) = decode_settle_calldata(bytes(tx.input))
    entries = [(e.worker, e.word_index, e.bits) for e in call.settlement.settled]
    assert entries == sorted(entries, key=lambda e: (int(e[0], 16), e[1]))  # as the escrow requires
    assert set(entries) == {(w1, 0, 1 << 4), (w1, 1, 0), (w3, 1, 1 << 1)}  # w3's word 0 not restated
    before = dict(zip(((worker, index) for worker, index, _ in entries), call.before))
    assert before == {(w1, 0): 0b1111, (w1, 1): 1 << 3, (w3, 1): 0xDEAD}  # tasks 0-3 and 195 of w1
    report = audit(h, batches=[settled["eth"]])
    assert report.findings == [], [f.to_json() for f in report.findings]
    assert [s.sequence for s in report.settlements] == [1, 2, 3]
    assert all(s.manifest_verified for s in report.settlements)


# -- a requester whose manifests disagree with the chain ------------------------------------------


@pytest.fixture(scope="module")
def dishonest(anvil, keys, tmp_path_factory):
    """One escrow, one batch per fault; each audited alone (--batch) so its findings are its own."""
    h = protocol(anvil, keys, tmp_path_factory.mktemp("dishonest-store"))
    requester, relayer, w1, w2, impostor = keys[1], keys[3], keys[4], keys[5], keys[8]
    batches = {}

    def answers(batch_id: int, signer: dict | None = None):
        signer = signer or {}
        return [h.signed_answer(batch_id, t, w, f"{batch_id}/{t} by {w[-4:]}".encode(), signer=signer.get((w, t)))
                for w, t in ((w1, 0), (w1, 1), (w2, 0))]

    # A root that is not the manifest's tree: w1 claims a leaf only the posted tree has.
    batches["root"] = b = h.create_batch(requester, tasks=4, answers_per_task=2)
    other = earnings_tree({address(w1): REWARD, address(w2): REWARD})
    h.settle(requester, relayer, b, answers(b), root=other.root)
    index = other.index_of((address(w1), REWARD))
    h.send(w1, h.escrow.functions.claimEarnings(b, address(w1), REWARD, other.proof(index)))

    # Leaves that move w2's earnings to w1: the total still matches the chain's.
    batches["leaf"] = b = h.create_batch(requester, tasks=4, answers_per_task=2)

    def shift(manifest):
        earnings = {address(w1): 3 * REWARD}
        return dataclasses.replace(manifest, earnings=earnings, tree=earnings_tree(earnings))

    h.settle(requester, relayer, b, answers(b), tamper=shift)

    # w2's answer to task 0 in the manifest carries a signature the impostor made.
    batches["forged"] = b = h.create_batch(requester, tasks=4, answers_per_task=2)

    def forge(manifest):
        forged = [dataclasses.replace(a, signature=sign(h.domain.digest(a.answer(b).struct_hash()), impostor))
                  if a.worker == address(w2) else a for a in manifest.answers]
        return dataclasses.replace(manifest, answers=tuple(forged))

    h.settle(requester, relayer, b, answers(b), tamper=forge)

    # A manifest nobody stored, then an honest settlement after it, and a claim.
    batches["missing"] = b = h.create_batch(requester, tasks=4, answers_per_task=2)
    h.settle(requester, relayer, b, answers(b)[:2], store_manifest=False)
    h.settle(requester, relayer, b, answers(b)[2:])
    h.claim(relayer, b, w2)
    return {"history": h, "batches": batches, "w1": address(w1), "w2": address(w2)}


def findings_of(dishonest, fault: str):
    report = audit(dishonest["history"], batches=[dishonest["batches"][fault]])
    return report, {f.code for f in report.discrepancies}


def test_root_that_is_not_the_manifests_is_caught(dishonest):
    report, codes = findings_of(dishonest, "root")
    assert codes == {"settlement_root_mismatch", "claim_not_a_leaf"}
    claim = next(f for f in report.discrepancies if f.code == "claim_not_a_leaf")
    assert (claim.check, claim.worker, claim.batch) == ("payouts", dishonest["w1"], dishonest["batches"]["root"])
    assert f"claim up to {REWARD}" in claim.message and f"is {2 * REWARD}" in claim.message
    assert not report.settlements[0].manifest_verified


def test_leaf_above_the_signed_answers_is_caught(dishonest):
    report, codes = findings_of(dishonest, "leaf")
    assert codes == {"leaf_above_signed_answers", "leaf_below_signed_answers", "settlement_manifest_unsound"}
    above = next(f for f in report.discrepancies if f.code == "leaf_above_signed_answers")
    below = next(f for f in report.discrepancies if f.code == "leaf_below_signed_answers")
    assert (above.worker, below.worker) == (dishonest["w1"], dishonest["w2"])
    assert f"leaf of {3 * REWARD}" in above.message and f"earned {2 * REWARD}" in above.message
    unsound = next(f for f in report.discrepancies if f.code == "settlement_manifest_unsound")
    assert "earnings of" in unsound.message  # the protocol module's reasons, quoted


def test_forged_answer_signature_in_a_manifest_is_caught(dishonest):
    report, codes = findings_of(dishonest, "forged")
    assert codes == {"settlement_bad_signature", "settlement_manifest_unsound", "leaf_above_signed_answers"}
    forged = next(f for f in report.discrepancies if f.code == "settlement_bad_signature")
    assert (forged.check, forged.batch, forged.task, forged.worker) == (
        "signatures", dishonest["batches"]["forged"], 0, dishonest["w2"])
    assert forged.tx and forged.block


def test_missing_manifest_is_reported_not_crashed_on(dishonest):
    report, codes = findings_of(dishonest, "missing")
    assert codes == {"settlement_manifest_missing"}
    missing = next(f for f in report.discrepancies if f.code == "settlement_manifest_missing")
    assert missing.check == "content" and "settlement 1" in missing.message
    notices = {f.code for f in report.findings if f.severity == "notice"}
    assert "settlement_unverifiable" in notices  # the second one's earnings rest on the first's
    assert [s.manifest_verified for s in report.settlements] == [False, True]


def test_reports_show_settlements_and_follow_the_schema(settled, dishonest, tmp_path):
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema_rs.validator_for(schema)
    h = settled["history"]
    html_path = tmp_path / "audit.html"
    report = run_audit(h.w3.provider.endpoint_uri, h.escrow.address, DirectoryStore(h.store.root),
                       html_path=html_path)
    document = to_json(report)
    validator.validate(document)
    assert document["summary"]["settlements"] == 4 and document["summary"]["settled_answers"] == 14
    assert document["summary"]["claims"] == 6
    eth = next(b for b in document["batches"] if b["batch"] == settled["eth"])
    assert (eth["settled"], eth["claimed"], eth["settlements"]) == (str(11 * REWARD), str(9 * REWARD), 3)
    assert [(s["batch"], s["sequence"], s["manifest_verified"]) for s in document["settlements"]] == [
        (settled["eth"], 1, True), (settled["eth"], 2, True), (settled["eth"], 3, True), (settled["usdc"], 1, True)]
    page = html_path.read_text()
    assert "<h2>Settlements</h2>" in page and document["settlements"][0]["manifest_cid"] in page

    dirty = to_json(audit(dishonest["history"]))
    validator.validate(dirty)  # every settlement finding code is one the schema lists
    assert not dirty["clean"] and any(not s["manifest_verified"] for s in dirty["settlements"])

    listed = {code for codes in schema["x-finding-codes"].values() for code in codes}
    assert listed == set(schema["properties"]["findings"]["items"]["properties"]["code"]["enum"])
    source = "".join(p.read_text() for p in Path(SCHEMA_PATH).parent.glob("*.py"))
    emitted = set(re.findall(r'(?:MONEY|PAYOUTS|SIGNATURES|CONTENT|REPUTATION|TIMING), "([a-z_]+[a-z])"', source))
    assert emitted and emitted <= listed, emitted - listed


def test_event_decoder_reads_settlement_events_as_web3_does(settled):
    """SettlementPosted, AnswersSettled (a struct array, with restating entries of no bits),
    EarningsClaimed and SettledWordsOpened from the real history."""
    h = settled["history"]
    url = h.w3.provider.endpoint_uri
    query = {"fromBlock": "0x0", "toBlock": "latest", "address": [h.escrow.address]}
    logs = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [query]}).json()["result"]
    assert_decoder_matches_web3(url, query, logs)
    decoded = EventDecoder(artifacts.load("TaskEscrow").abi).decode_all(logs)
    names = {e.name for e in decoded}
    assert {"SettlementPosted", "AnswersSettled", "EarningsClaimed", "SettledWordsOpened"} <= names
    words = [w for e in decoded if e.name == "AnswersSettled" for w in e.args["settled"]]
    assert any(w["wordIndex"] == 1 for w in words)  # tasks 195/196: the second 192-task word
    w1, w2 = settled["w1"], settled["w2"]
    assert {"worker": w1, "wordIndex": 1, "bits": 0} in words and {"worker": w2, "wordIndex": 0, "bits": 0} in words
    (opened,) = [e for e in decoded if e.name == "SettledWordsOpened"]
    assert opened.args == {"batchId": settled["eth"], "worker": settled["w3"]}
    # settled again after the opening: its word 1 alone, its word 0 not restated
    w3_words = [(w["wordIndex"], w["bits"]) for e in decoded if e.name == "AnswersSettled"
                and e.block_number > opened.block_number for w in e.args["settled"] if w["worker"] == settled["w3"]]
    assert w3_words == [(1, 1 << 1)]
