"""Settlement mode at the relay: held answers, POST /settlements and /claims with their refusals,
relayed transactions sent by the submitter (real anvil, SQLite and PostgreSQL, the real store)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from relay_helpers import ETH, create_batch, login, relay_client, signed_answer
from sqlalchemy import select

from kempelen.chain.settled import settled_history
from kempelen.db import make_engine
from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import file_cid
from kempelen.protocol.cid import CID
from kempelen.protocol.manifest import BatchManifest, ManifestError, canonical_json
from kempelen.protocol.sealed import open_words
from kempelen.protocol.settlement import ManifestAnswer, build_settlement, claim_for
from kempelen.protocol.signing import SettledWord, address_of, sign
from kempelen.relay import jobs
from kempelen.relay.models import RelayAnswer, RelayJob
from kempelen.relay.packing import PackingPolicy
from kempelen.relay.relayer import Relayer
from kempelen.relay.submitter import Submitter, SubmitterConfig
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import RelayPinner
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.requester import Requester
from kempelen.sdk.settlement import SettlementError
from kempelen.sdk.worker import Worker

RELAYER = 8
REWARD, FEE = 10**12, 10**11


@pytest.fixture
def relay(chain, keys, database_url, tmp_path, snapshot):
    with relay_client(chain, database_url, tmp_path / "store", answers_burst=1000,
                      relayer_key=keys[RELAYER]) as client:
        yield client


@pytest.fixture
def submitter(chain, keys, database_url):
    engine = make_engine(database_url)
    config = SubmitterConfig(policy=PackingPolicy(flush_after=0.0), idle_sleep=0.01, hold_check_every=0.0)
    yield Submitter(engine, Relayer(chain, keys[RELAYER]), config)
    engine.dispose()


def settlement_batch(chain, keys, store_dir, *, fallback_in: int, task_count: int = 4) -> int:
    now = chain.w3.eth.get_block("latest")["timestamp"]
    store = ContentStore(store_dir)
    cids = tuple(str(store.put(f'{{"n":{i}}}'.encode())) for i in range(task_count))
    manifest = BatchManifest(title="settled", task_cids=cids, settlement_fallback_at=now + fallback_in)
    return create_batch(chain, keys[1], task_count=task_count, manifest_cid=str(store.put(manifest.to_json())),
                        reward=REWARD, relay_fee=FEE)


def rows(database_url) -> dict:
    with make_engine(database_url).connect() as conn:
        found = conn.execute(select(RelayAnswer.__table__).order_by(RelayAnswer.id)).all()
    return {(r.batch_id, r.worker, r.task_index): r for r in found}


def run(submitter, until, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the submitter did not get there"
        submitter.step()
        time.sleep(0.02)


def held_answers(relay, headers, batch_id) -> list[ManifestAnswer]:
    lines = relay.get(f"/batches/{batch_id}/answers", headers=headers).text.splitlines()
    return [ManifestAnswer(a["worker"], a["task_index"], bytes.fromhex(a["answer_digest"][2:]),
                           bytes.fromhex(a["signature"][2:]))
            for a in map(json.loads, lines) if a["status"] == "held"]


def settlement_body(chain, key, batch_id, answers, previous=None, store_dir=None, upload=True, relay=None,
                    headers=None, book=None, settled=None) -> dict:
    """POST /settlements's body; `book` (the batch's SettledBook) restates earlier settled words;
    `settled` signs these entries instead."""
    settlement, manifest = build_settlement(previous, answers, domain=chain.domain, batch_id=batch_id,
                                            token=ETH, reward=REWARD, cid_of=file_cid)
    if book is not None:
        settlement = manifest.settlement(settlement.manifest_cid, book)
    if settled is not None:
        settlement = replace(settlement, settled=tuple(settled))
    if upload:
        reply = relay.post("/payloads?kind=settlement", content=manifest.to_json(), headers=headers)
        assert reply.status_code == 201, reply.text
        assert reply.json()["cid"] == str(CID.from_bytes(settlement.manifest_cid))
    return {"batch_id": batch_id, "sequence": settlement.sequence, "root": "0x" + settlement.root.hex(),
            "cumulative_total": str(settlement.cumulative_total),
            "manifest_cid": str(CID.from_bytes(settlement.manifest_cid)),
            "settled": [{"worker": w.worker, "word_index": w.word_index, "bits": str(w.bits)} for w in settlement.settled],
            "signature": "0x" + sign(chain.domain.digest(settlement.struct_hash()), key).hex(),
            "_manifest": manifest}


def test_manifest_field_is_optional_and_checked():
    plain = BatchManifest(title="t", task_cids=(str(file_cid(b"x")),))
    assert b"settlement" not in plain.to_json()
    assert BatchManifest.from_json(plain.to_json()) == plain
    held = BatchManifest(title="t", task_cids=plain.task_cids, settlement_fallback_at=1_800_000_000)
    assert json.loads(held.to_json())["settlement"] == {"fallbackAt": 1_800_000_000}
    assert BatchManifest.from_json(held.to_json()) == held
    document = json.loads(held.to_json())
    for bad in ({"fallbackAt": "soon"}, {"fallbackAt": 0}, {"fallbackAt": True}, {"at": 5}, [1]):
        document["settlement"] = bad
        with pytest.raises(ManifestError, match="settlement"):
            BatchManifest.from_json(canonical_json(document))


def test_held_answers_wait_for_a_settlement_the_relay_posts(relay, submitter, chain, keys, database_url, tmp_path):
    settled_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400)
    direct_id = create_batch(chain, keys[1], task_count=2, reward=REWARD, relay_fee=FEE)
    for task in range(3):
        assert relay.post("/answers", json=signed_answer(chain, keys[2], settled_id, task, b"yes")).json()["status"] == "held"
    assert relay.post("/answers", json=signed_answer(chain, keys[3], settled_id, 0, b"no")).status_code == 202
    assert relay.post("/answers", json=signed_answer(chain, keys[2], direct_id, 0, b"yes")).json()["status"] == "accepted"

    run(submitter, lambda: rows(database_url)[(direct_id, address_of(keys[2]), 0)].status == "onchain")
    for _ in range(5):
        submitter.step()
    held = [r for r in rows(database_url).values() if r.batch_id == settled_id]
    assert {r.status for r in held} == {"held"} and all(r.hold_until for r in held)
    assert chain.escrow.functions.answerStatus(settled_id, address_of(keys[2]), 0).call()[0] == 0  # None

    requester = login(relay, keys[1], chain.chain_id)
    answers = held_answers(relay, requester, settled_id)
    assert len(answers) == 4
    stranger = settlement_body(chain, keys[4], settled_id, answers[:2], relay=relay, headers=requester)
    stranger.pop("_manifest")
    reply = relay.post("/settlements", json=stranger)
    assert reply.status_code == 401 and reply.json()["recovered"] == address_of(keys[4])

    unstored = settlement_body(chain, keys[1], settled_id, answers[:1], upload=False)
    unstored.pop("_manifest")
    reply = relay.post("/settlements", json=unstored)
    assert reply.status_code == 422 and "not stored at this relay" in reply.json()["detail"]

    body = settlement_body(chain, keys[1], settled_id, answers[:3], relay=relay, headers=requester)
    first = body.pop("_manifest")
    relayer = address_of(keys[RELAYER])
    before = chain.escrow.functions.balanceOf(ETH, relayer).call()
    reply = relay.post("/settlements", json=body)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")
    assert chain.escrow.functions.balanceOf(ETH, relayer).call() - before == 3 * FEE  # the relay earned the fees
    statuses = {(w, t): r.status for (b, w, t), r in rows(database_url).items() if b == settled_id}
    assert sorted(statuses.values()) == ["held", "settled", "settled", "settled"]
    again = relay.post("/settlements", json=body).json()  # the chain has moved on
    assert again["error"] == "invalid_content" and "sequence 1 is not above the previous manifest's 1" in again["detail"]

    latest = relay.get(f"/settlements/{settled_id}", params={"worker": address_of(keys[2])}).json()
    assert latest["sequence"] == 1 and latest["manifest_cid"] == body["manifest_cid"]
    worker = login(relay, keys[2], chain.chain_id)
    cumulative, proof = claim_for(first, address_of(keys[2]))
    assert latest["earnings"] == {"worker": address_of(keys[2]), "settled": str(cumulative), "claimed": "0"}
    wrong = {"claims": [{"batch_id": settled_id, "cumulative": str(cumulative + REWARD),
                         "proof": ["0x" + p.hex() for p in proof]}]}
    assert relay.post("/claims", json=wrong).status_code == 401  # signed-in workers only
    reply = relay.post("/claims", json=wrong, headers=worker)
    assert reply.status_code == 409 and "SettlementInvalidProof" in reply.json()["detail"]
    good = {"claims": [{"batch_id": settled_id, "cumulative": str(cumulative), "proof": ["0x" + p.hex() for p in proof]}]}
    job_id = relay.post("/claims", json=good, headers=worker).json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")
    assert chain.escrow.functions.balanceOf(ETH, address_of(keys[2])).call() >= cumulative
    assert chain.escrow.functions.earningsOf(settled_id, address_of(keys[2])).call() == [cumulative, cumulative]
    assert relay.get("/jobs/999999").status_code == 404


def test_a_settlement_that_would_revert_is_refused_before_it_is_queued(relay, chain, keys, tmp_path):
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400)
    for task in range(2):
        relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, task, b"x"))
    requester = login(relay, keys[1], chain.chain_id)
    answers = held_answers(relay, requester, batch_id)
    # Someone puts task 1 on-chain directly: settling it too would revert (one answer, one path).
    from kempelen.sdk.answers import submit_direct
    from kempelen.sdk.keys import Signer

    row = next(a for a in map(json.loads, relay.get(f"/batches/{batch_id}/answers", headers=requester).text.splitlines())
               if a["task_index"] == 1)
    signed = type("Signed", (), {"answer": answers[1].answer(batch_id), "signature": answers[1].signature,
                                 "payload": base64.b64decode(row["payload"])})()
    submit_direct(chain, Signer(keys[9]), [signed])
    body = settlement_body(chain, keys[1], batch_id, answers, relay=relay, headers=requester)
    body.pop("_manifest")
    reply = relay.post("/settlements", json=body)
    assert reply.status_code == 409
    assert reply.json()["error"] == "refused_by_escrow" and "SettlementAnsweredDirectly" in reply.json()["detail"]


def test_tampered_manifest_and_missing_relayer_are_refused(chain, keys, database_url, tmp_path, snapshot):
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400)
    with relay_client(chain, database_url, tmp_path / "store", answers_burst=1000) as relay:  # no relayer key
        relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"x"))
        requester = login(relay, keys[1], chain.chain_id)
        answers = held_answers(relay, requester, batch_id)
        body = settlement_body(chain, keys[1], batch_id, answers, relay=relay, headers=requester)
        manifest = body.pop("_manifest")
        reply = relay.post("/settlements", json=body)
        assert reply.status_code == 403 and reply.json()["error"] == "no_relayer"

        # A manifest that pays 2 rewards for 1 answer is still a well-formed upload ...
        document = json.loads(manifest.to_json())
        document["earnings"] = {k: str(2 * REWARD) for k in document["earnings"]}
        document["cumulativeTotal"] = str(2 * REWARD)
        reply = relay.post("/payloads?kind=settlement", content=canonical_json(document), headers=requester)
        assert reply.status_code == 201
        reply = relay.post("/payloads?kind=settlement", content=b'{"format": "nope"}', headers=requester)
        assert reply.status_code == 422 and "not a settlement manifest" in reply.json()["detail"]
    with relay_client(chain, database_url, tmp_path / "store", relayer_key=keys[RELAYER]) as relay:
        # ... but a settlement the requester signs over it does not verify, and is not posted.
        tampered_cid = file_cid(canonical_json(document))
        signed = replace(manifest.settlement(body["manifest_cid"]), manifest_cid=tampered_cid.to_bytes())
        tampered = {**body, "manifest_cid": str(tampered_cid),
                    "signature": "0x" + sign(chain.domain.digest(signed.struct_hash()), keys[1]).hex()}
        reply = relay.post("/settlements", json=tampered)
        assert reply.status_code == 422 and "does not verify" in reply.json()["detail"]
        assert any("earnings of" in p for p in reply.json()["problems"])


def test_a_later_settlement_posted_by_the_relay_restates_earlier_words(relay, submitter, chain, keys, tmp_path):
    """The body carries the signed entries only: the relay refuses entries that do not restate the
    worker's earlier words, and computes `settle`'s `before` from AnswersSettled itself."""
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400, task_count=200)
    for task in (195, 0):
        relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, task, b"x"))
    requester = login(relay, keys[1], chain.chain_id)
    late, early = sorted(held_answers(relay, requester, batch_id), key=lambda a: -a.task_index)
    body = settlement_body(chain, keys[1], batch_id, [late], relay=relay, headers=requester)
    first = body.pop("_manifest")
    job_id = relay.post("/settlements", json=body).json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")

    unrestated = settlement_body(chain, keys[1], batch_id, [early], previous=first, relay=relay, headers=requester)
    unrestated.pop("_manifest")
    reply = relay.post("/settlements", json=unrestated)
    assert reply.status_code == 422 and "must restate every earlier settled word" in reply.json()["detail"]

    book = settled_history(chain, batch_id).book
    body = settlement_body(chain, keys[1], batch_id, [early], previous=first, relay=relay, headers=requester,
                           book=book)
    body.pop("_manifest")
    worker = address_of(keys[2])
    assert [(w["word_index"], w["bits"]) for w in body["settled"]] == [(0, "1"), (1, "0")]
    job_id = relay.post("/settlements", json=body).json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")
    assert settled_history(chain, batch_id).book.of_worker(worker) == {0: 1, 1: 1 << 3}
    assert chain.escrow.functions.earningsOf(batch_id, worker).call() == [2 * REWARD, 0]
    assert relay.post("/settlements", json=body).status_code == 422  # stale sequence: nothing queued


# ------------------------------------------------------------------------------ opened workers


def open_settled(chain, keys, batch_id, worker) -> None:
    """A stranger (keys[9]) opens the worker's settled words: anyone may."""
    words = open_words(settled_history(chain, batch_id).book.of_worker(worker))
    chain.transact(keys[9], chain.escrow.functions.openSettled(batch_id, worker, words))
    assert worker in settled_history(chain, batch_id).book.opened


def settled_entries(chain, batch_id) -> list[list[tuple[str, int, int]]]:
    """The `settled` entries of each AnswersSettled event of the batch, oldest first."""
    logs = chain.escrow.events.AnswersSettled().get_logs(from_block=chain.deployment.deploy_block,
                                                          argument_filters={"batchId": batch_id})
    return [[(w["worker"], w["wordIndex"], w["bits"]) for w in log.args.settled] for log in logs]


def test_the_relay_settles_a_worker_whose_words_were_opened(relay, submitter, chain, keys, tmp_path):
    """An opened worker is settled against its stored words: no restating needed (restating entries
    are harmless), only a bits-0 entry on a word it has nothing in is refused (SettlementEmptyWord)."""
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400, task_count=400)
    for task in (0, 195, 196):
        relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, task, b"x"))
    requester = login(relay, keys[1], chain.chain_id)
    by_task = {a.task_index: a for a in held_answers(relay, requester, batch_id)}
    worker = address_of(keys[2])
    body = settlement_body(chain, keys[1], batch_id, [by_task[0]], relay=relay, headers=requester)
    first = body.pop("_manifest")
    job_id = relay.post("/settlements", json=body).json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")
    open_settled(chain, keys, batch_id, worker)

    empty = settlement_body(chain, keys[1], batch_id, [by_task[195]], previous=first, relay=relay,
                            headers=requester, settled=[SettledWord(worker, 1, 1 << 3), SettledWord(worker, 2, 0)])
    empty.pop("_manifest")
    reply = relay.post("/settlements", json=empty)
    assert reply.status_code == 422 and "SettlementEmptyWord" in reply.json()["detail"], reply.text

    book = settled_history(chain, batch_id).book
    body = settlement_body(chain, keys[1], batch_id, [by_task[195]], previous=first, relay=relay, headers=requester,
                           book=book)
    second = body.pop("_manifest")
    assert [(w["word_index"], w["bits"]) for w in body["settled"]] == [(1, str(1 << 3))]  # nothing restated
    reply = relay.post("/settlements", json=body)
    assert reply.status_code == 202, reply.text
    run(submitter, lambda: relay.get(f"/jobs/{reply.json()['job_id']}").json()["status"] == "mined")

    # A restating entry (bits 0 on a word it has bits in) is optional for it, and harmless.
    body = settlement_body(chain, keys[1], batch_id, [by_task[196]], previous=second, relay=relay, headers=requester,
                           settled=[SettledWord(worker, 0, 0), SettledWord(worker, 1, 1 << 4)])
    body.pop("_manifest")
    reply = relay.post("/settlements", json=body)
    assert reply.status_code == 202, reply.text
    run(submitter, lambda: relay.get(f"/jobs/{reply.json()['job_id']}").json()["status"] == "mined")

    assert settled_entries(chain, batch_id)[1:] == [[(worker, 1, 1 << 3)], [(worker, 0, 0), (worker, 1, 1 << 4)]]
    book = settled_history(chain, batch_id).book
    assert book.opened == {worker} and book.of_worker(worker) == {0: 1, 1: 0b11 << 3}
    assert chain.escrow.functions.earningsOf(batch_id, worker).call() == [3 * REWARD, 0]


def test_a_settlement_signed_while_sealed_and_posted_after_an_opening_is_mined(relay, submitter, chain, keys,
                                                                               tmp_path):
    """The requester signs restating entries while the worker is sealed; a stranger's openSettled
    lands before the settlement is posted: the relay takes it and the escrow settles it against
    the stored words (`before` ignored)."""
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=86400, task_count=200)
    for task in (195, 0):
        relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, task, b"x"))
    requester = login(relay, keys[1], chain.chain_id)
    late, early = sorted(held_answers(relay, requester, batch_id), key=lambda a: -a.task_index)
    worker = address_of(keys[2])
    body = settlement_body(chain, keys[1], batch_id, [late], relay=relay, headers=requester)
    first = body.pop("_manifest")
    job_id = relay.post("/settlements", json=body).json()["job_id"]
    run(submitter, lambda: relay.get(f"/jobs/{job_id}").json()["status"] == "mined")

    sealed = settled_history(chain, batch_id).book
    assert sealed.is_sealed(worker)
    body = settlement_body(chain, keys[1], batch_id, [early], previous=first, relay=relay, headers=requester,
                           book=sealed)
    body.pop("_manifest")
    assert [(w["word_index"], w["bits"]) for w in body["settled"]] == [(0, "1"), (1, "0")]  # restates word 1
    open_settled(chain, keys, batch_id, worker)

    reply = relay.post("/settlements", json=body)
    assert reply.status_code == 202, reply.text
    run(submitter, lambda: relay.get(f"/jobs/{reply.json()['job_id']}").json()["status"] == "mined")
    assert settled_history(chain, batch_id).book.of_worker(worker) == {0: 1, 1: 1 << 3}
    assert chain.escrow.functions.earningsOf(batch_id, worker).call() == [2 * REWARD, 0]


def sdk_relay(relay: TestClient, key: str) -> RelayClient:
    """The SDK's relay client, talking to the in-process relay app."""
    client = RelayClient("http://testserver", Signer(key))
    client.http.close()
    client.http = TestClient(relay.app)
    return client


def test_the_sdk_settles_a_worker_the_fallback_opened_and_the_worker_claims(relay, submitter, chain, keys,
                                                                            database_url, tmp_path):
    """At the fallback the relay opens the words of a worker settled once; before it sends that
    worker's held answers direct, the requester settles one of them through the SDK (against the
    stored words: nothing restated). The rest go direct, which the SDK still refuses to settle."""
    batch_id = settlement_batch(chain, keys, tmp_path / "store", fallback_in=3600)
    worker = address_of(keys[2])
    for task in range(3):
        assert relay.post("/answers", json=signed_answer(chain, keys[2], batch_id, task, b"x")).json()["status"] == "held"
    client = sdk_relay(relay, keys[1])
    requester = Requester(chain, Signer(keys[1]), RelayPinner(client))
    assert requester.settle(batch_id, answers=[(worker, 0)]).answers == 1  # its words are sealed now

    chain.w3.provider.make_request("evm_increaseTime", [3600 + 60])
    chain.w3.provider.make_request("evm_mine", [])
    submitter.release_held()  # due: the worker's words are sealed, so an "open" job first
    with submitter.engine.connect() as conn:
        opens = conn.execute(select(RelayJob.__table__).where(RelayJob.__table__.c.kind == "open")).all()
    assert [(j.batch_id, j.requested_by, j.status) for j in opens] == [(batch_id, worker.lower(), "queued")]
    assert submitter.send_job()

    def open_mined() -> bool:
        submitter.follow_transactions()  # not step(): that would release the held answers at once
        with submitter.engine.connect() as conn:
            return jobs.get(conn, opens[0].id).status == "mined"

    deadline = time.monotonic() + 20
    while not open_mined():
        assert time.monotonic() < deadline, "the open job was not mined"
        time.sleep(0.02)
    assert settled_history(chain, batch_id).book.opened == {worker}
    assert {t: rows(database_url)[(batch_id, worker, t)].status for t in (1, 2)} == {1: "held", 2: "held"}

    progress = []
    posted = requester.settle(batch_id, answers=[(worker, 1)], progress=progress.append)
    assert (posted.sequence, posted.answers) == (2, 1)
    assert settled_entries(chain, batch_id)[-1] == [(worker, 0, 0b10)]  # no restating, no `before` needed
    assert not any("restated" in line for line in progress), progress

    run(submitter, lambda: {t: rows(database_url)[(batch_id, worker, t)].status for t in range(3)}
        == {0: "settled", 1: "settled", 2: "onchain"})
    with pytest.raises(SettlementError, match=r"to task 2: on the direct path \(status pending\)"):
        requester.settle(batch_id, answers=[(worker, 2)])
    with pytest.raises(SettlementError, match="already settled"):
        requester.settle(batch_id, answers=[(worker, 1)])

    paid = Worker(sdk_relay(relay, keys[2]), Signer(keys[2]), chain).claim([batch_id])
    assert paid.credited == 2 * REWARD
    assert chain.escrow.functions.earningsOf(batch_id, worker).call() == [2 * REWARD, 2 * REWARD]
