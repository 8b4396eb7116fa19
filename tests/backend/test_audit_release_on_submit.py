"""An answer released inside a later submitAnswers (its window had closed) audits clean, and the
SDK, the auditor and the chain agree it was released, not left open for a second review."""

from kempelen.audit import run_audit
from kempelen.chain.anvil import Anvil, dev_keys
from kempelen.chain.contracts import Chain, TransactionReverted, deploy_protocol
from kempelen.ipfs.store import ContentStore
from kempelen.sdk.answers import sign_answer, submit_direct
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import StorePinner
from kempelen.sdk.requester import Requester


def test_overdue_answer_released_by_the_next_answer_audits_clean(tmp_path):
    keys = dev_keys(6)
    with Anvil() as node:
        chain = Chain(node.url, deploy_protocol(node.url, keys[0]))
        store = ContentStore(tmp_path / "store")
        requester = Requester(chain, Signer(keys[1]), StorePinner(store))
        batch = requester.create_batch([{"t": i} for i in range(4)], "0.01", review_window=100, deadline=10_000)
        worker, relay = Signer(keys[2]), Signer(keys[5])
        first = sign_answer(chain.domain, worker, batch.batch_id, 0, {"label": "a"})
        store.put(first.payload)
        submit_direct(chain, relay, [first])
        chain.w3.provider.make_request("evm_increaseTime", [500])
        chain.w3.provider.make_request("evm_mine", [])
        second = sign_answer(chain.domain, worker, batch.batch_id, 1, {"label": "b"})
        store.put(second.payload)
        submit_direct(chain, relay, [second])

        assert {a.task_index: a.status for a in requester.list_answers(batch.batch_id)} == {
            0: "released", 1: "pending"}
        try:
            requester.reject(batch.batch_id, [(worker.address, 0)], "too late")
            raise AssertionError("a released answer was rejected")
        except TransactionReverted as exc:
            assert exc.error == "EscrowAnswerNotPending"
        report = run_audit(node.url, chain.deployment.escrow, content_dir=tmp_path / "store")
        assert report.findings == []
