"""Requesters' uploads and unsigned createBatch, workers' open tasks, leases, payloads; public reads."""

from __future__ import annotations

import pytest
from eth_account import Account
from relay_helpers import login, relay_client, signed_answer

from kempelen.protocol.manifest import BatchManifest


@pytest.fixture
def client(chain, database_url, tmp_path):
    with relay_client(chain, database_url, tmp_path / "store", answers_burst=1000, siwe_domain="localhost") as client:
        yield client


def _fund_through_relay(client, chain, requester_key: str, tasks: list[bytes], answers_per_task: int = 1) -> int:
    """Upload tasks and manifest, get the unsigned createBatch transaction, sign and send it."""
    owner = login(client, requester_key, chain.chain_id)
    cids = []
    for payload in tasks:
        reply = client.post("/payloads?kind=task", content=payload, headers=owner)
        assert reply.status_code == 201, reply.text
        cids.append(reply.json()["cid"])
    manifest = BatchManifest(title="t", task_cids=tuple(cids), assignment_seconds=120).to_json()
    manifest_cid = client.post("/payloads?kind=manifest", content=manifest, headers=owner).json()["cid"]
    now = chain.w3.eth.get_block("latest")["timestamp"]
    terms = {"task_count": len(tasks), "answers_per_task": answers_per_task, "reward": "1000",
             "relay_fee": "10", "deadline": now + 400 * 86400, "review_window": 3600, "manifest_cid": manifest_cid}
    reply = client.post("/batches/transaction", json=terms, headers=owner)
    assert reply.status_code == 200, reply.text
    (tx,) = reply.json()["transactions"]
    account = Account.from_key(requester_key)
    w3 = chain.w3
    signed = account.sign_transaction({
        "to": tx["to"], "data": tx["data"], "value": int(tx["value"]), "chainId": tx["chain_id"],
        "nonce": w3.eth.get_transaction_count(account.address, "pending"), "gas": 1_000_000,
        "gasPrice": w3.eth.gas_price})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt.status == 1
    return chain.escrow.functions.batchCount().call()


def test_requester_funds_from_the_unsigned_transaction_and_workers_get_payloads(client, chain, keys):
    batch_id = _fund_through_relay(client, chain, keys[1], [b"image-0", b"image-1"])
    status = client.get(f"/batches/{batch_id}").json()
    assert status["requester"] == Account.from_key(keys[1]).address and status["task_count"] == 2
    assert status["open"] is True and status["manifest_cid"]

    task = client.get(f"/tasks/{batch_id}/1").json()
    assert task["assignment_seconds"] == 120
    payload = client.get(f"/tasks/{batch_id}/1/payload")
    assert payload.content == b"image-1" and payload.headers["x-ipfs-roots"] == task["payload_cid"]
    assert client.get(f"/ipfs/{task['payload_cid']}").content == b"image-1"
    assert client.get(f"/tasks/{batch_id}/2").status_code == 404


def test_open_tasks_and_leases_respect_slots(client, chain, keys):
    batch_id = _fund_through_relay(client, chain, keys[1], [b"a", b"b"], answers_per_task=1)
    first, second = login(client, keys[2], chain.chain_id), login(client, keys[3], chain.chain_id)

    listed = client.get(f"/tasks/open?batch_id={batch_id}", headers=first).json()["tasks"]
    assert [t["task_index"] for t in listed] == [0, 1] and listed[0]["slots_left"] == 1

    lease = client.post("/leases", json={"batch_id": batch_id, "task_index": 0}, headers=first)
    assert lease.status_code == 201, lease.text
    taken = client.post("/leases", json={"batch_id": batch_id, "task_index": 0}, headers=second)
    assert taken.status_code == 409 and "no slot left" in taken.json()["detail"]
    assert [t["task_index"] for t in client.get(f"/tasks/open?batch_id={batch_id}", headers=second)
            .json()["tasks"]] == [1]
    assert [entry["task_index"] for entry in client.get("/leases", headers=first).json()] == [0]

    # The answer fills the slot; the lease holder is done with that task.
    assert client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"A")).status_code == 202
    assert client.delete(f"/leases/{batch_id}/0", headers=first).status_code == 204
    assert client.delete(f"/leases/{batch_id}/0", headers=first).status_code == 404
    again = client.post("/leases", json={"batch_id": batch_id, "task_index": 0}, headers=first)
    assert again.status_code == 409 and "already answered" in again.json()["detail"]
    assert client.post("/leases", json={"batch_id": batch_id, "task_index": 0},
                       headers=second).status_code == 409
    assert client.post("/leases", json={"batch_id": batch_id, "task_index": 9}, headers=second).status_code == 404


def test_blocked_worker_cannot_lease(client, chain, keys):
    batch_id = _fund_through_relay(client, chain, keys[1], [b"a"])
    worker = Account.from_key(keys[7]).address
    chain.transact(keys[1], chain.escrow.functions.blockWorker(worker, b"\x01"))
    try:
        session = login(client, keys[7], chain.chain_id)
        refused = client.post("/leases", json={"batch_id": batch_id, "task_index": 0}, headers=session)
        assert refused.status_code == 403 and "blocked" in refused.json()["detail"]
        assert client.get(f"/tasks/open?batch_id={batch_id}", headers=session).json()["tasks"] == []
    finally:
        chain.transact(keys[1], chain.escrow.functions.unblockWorker(worker))


def test_manifest_upload_is_validated_and_uploads_are_listed(client, chain, keys):
    owner = login(client, keys[1], chain.chain_id)
    bad = client.post("/payloads?kind=manifest", content=b'{"format":"nope"}', headers=owner)
    assert bad.status_code == 422 and "manifest" in bad.json()["detail"]
    assert client.post("/payloads?kind=nonsense", content=b"x", headers=owner).status_code == 422
    client.post("/payloads?kind=reason", content=b"wrong label", headers=owner)
    assert [u["kind"] for u in client.get("/payloads", headers=owner).json()] == ["reason"]


def test_unsigned_transaction_for_a_token_batch_approves_first(client, chain, keys):
    owner = login(client, keys[1], chain.chain_id)
    terms = {"token": chain.deployment.tokens["USDC"], "task_count": 2, "answers_per_task": 2, "reward": "5",
             "relay_fee": "1", "deadline": 2**39, "review_window": 60,
             "manifest_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}
    body = client.post("/batches/transaction", json=terms, headers=owner).json()
    assert body["deposit"] == "24" and [t["to"] for t in body["transactions"]] == [
        chain.deployment.tokens["USDC"], chain.escrow.address]
    terms["manifest_cid"] = "not-a-cid"
    assert client.post("/batches/transaction", json=terms, headers=owner).status_code == 422


def test_public_reads(client, chain, keys):
    address = Account.from_key(keys[2]).address
    reputation = client.get(f"/reputation/{address}").json()
    assert set(reputation) == {"address", "score", "as_worker", "as_requester"}
    earnings = client.get(f"/workers/{address}/earnings").json()
    assert "ETH" in earnings["withdrawable"] and "USDC" in earnings["withdrawable"]
    assert client.get("/reputation/0x12").status_code == 422
    assert client.get("/events?limit=5").json()["events"] == []  # no indexer ran on this database
    assert client.get("/batches").status_code == 200
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["chain"] == "ok"
    client.get("/batches/999999")
    metrics = client.get("/metrics").text
    assert 'route="/batches/{batch_id}",status="404"' in metrics
    assert "# TYPE kempelen_relay_request_seconds histogram" in metrics
