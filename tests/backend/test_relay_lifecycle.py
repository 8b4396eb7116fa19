"""A receipt's whole life on real components: relay intake -> submitter -> chain -> indexer -> review -> paid."""

from __future__ import annotations

import hashlib

from eth_account import Account
from relay_helpers import ETH, create_batch, relay_client, signed_answer

from kempelen.indexer.runner import open_indexer
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.tasksets import task_sets
from kempelen.relay.submitter import seconds_to_all_onchain


def test_receipt_follows_submission_review_and_withdrawal(chain, keys, deployment, database_url, tmp_path):
    batch_id = create_batch(chain, keys[1], task_count=1, answers_per_task=2)
    approved_worker, rejected_worker = Account.from_key(keys[2]).address, Account.from_key(keys[3]).address
    with relay_client(chain, database_url, tmp_path / "store") as client:
        receipts = [client.post("/answers", json=signed_answer(chain, key, batch_id, 0, label)).json()["receipt_id"]
                    for key, label in ((keys[2], b"cat"), (keys[3], b"dog"))]

        def status(receipt_id: str) -> dict:
            return client.get(f"/receipts/{receipt_id}").json()

        assert [status(r)["status"] for r in receipts] == ["accepted", "accepted"]
        seconds_to_all_onchain(database_url, chain.rpc_url, keys[8], deployment=deployment, timeout=120)
        first = status(receipts[0])
        assert first["status"] == "onchain" and first["tx_hash"] and first["block_number"]

        indexer = open_indexer(chain.rpc_url, database_url, deployment.escrow, deployment.reputation,
                               from_block=deployment.deploy_block)
        indexer.catch_up()
        assert status(receipts[0])["status"] == "onchain"  # indexed, not reviewed yet

        reason = raw_cid(hashlib.sha256(b"the label is wrong").digest())
        chain.transact(keys[1], chain.escrow.functions.approve(batch_id, task_sets([(approved_worker, 0)])))
        chain.transact(keys[1], chain.escrow.functions.reject(batch_id, task_sets([(rejected_worker, 0)]),
                                                                    reason.to_bytes()))
        indexer.catch_up()
        assert status(receipts[0])["status"] == "approved"
        rejected = status(receipts[1])
        assert rejected["status"] == "rejected" and rejected["reason_cid"] == str(reason)

        chain.transact(keys[2], chain.escrow.functions.withdraw(ETH))
        indexer.catch_up()
        assert status(receipts[0])["status"] == "paid"
        review = client.get(f"/batches/{batch_id}").json()["onchain_answers"]
        assert review == {"approved": 1, "rejected": 1}
