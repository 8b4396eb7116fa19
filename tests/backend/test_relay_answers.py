"""POST /answers end to end: real signatures, real anvil, SQLite and PostgreSQL, the real store."""

from __future__ import annotations

import base64
import hashlib

import pytest
from relay_helpers import create_batch, relay_client, signed_answer
from sqlalchemy import select

from kempelen.db import make_engine
from kempelen.protocol.signing import Answer, answer_digest, sign
from kempelen.relay.models import RelayAnswer


@pytest.fixture
def batch_id(chain, keys):
    return create_batch(chain, keys[1], task_count=4, answers_per_task=2)


@pytest.fixture
def client(chain, database_url, tmp_path):
    with relay_client(chain, database_url, tmp_path / "store", answers_burst=1000) as client:
        yield client


def test_answer_is_acknowledged_after_commit_and_served_by_cid(client, chain, keys, batch_id, database_url):
    body = signed_answer(chain, keys[2], batch_id, 1, b'{"label":"cat"}')
    reply = client.post("/answers", json=body)
    assert reply.status_code == 202, reply.text
    receipt = reply.json()
    digest = chain.domain.digest(Answer(batch_id, 1, answer_digest(b'{"label":"cat"}'), body["worker"]).struct_hash())
    assert receipt["receipt_id"] == "0x" + digest.hex()  # anyone can recompute it
    assert receipt["status"] == "accepted"
    assert receipt["answer_digest"] == "0x" + hashlib.sha256(b'{"label":"cat"}').hexdigest()

    with make_engine(database_url).connect() as connection:
        row = connection.execute(select(RelayAnswer.__table__)).one()
    assert (row.batch_id, row.task_index, row.worker, row.payload) == (batch_id, 1, body["worker"], b'{"label":"cat"}')
    assert row.signature == bytes.fromhex(body["signature"][2:]) and row.status == "accepted"

    status = client.get(f"/receipts/{receipt['receipt_id']}").json()
    assert status["status"] == "accepted" and status["payload_cid"] == receipt["payload_cid"]
    # The pinner copies the payload into the store right after the commit.
    for _ in range(100):
        content = client.get(f"/ipfs/{receipt['payload_cid']}")
        if content.status_code == 200:
            break
    assert content.content == b'{"label":"cat"}'


def test_compact_signature_is_accepted_and_stored_in_full_form(client, chain, keys, batch_id):
    from kempelen.protocol.signing import to_compact

    body = signed_answer(chain, keys[2], batch_id, 0, b"yes")
    full = bytes.fromhex(body["signature"][2:])
    body["signature"] = "0x" + to_compact(full).hex()
    assert client.post("/answers", json=body).status_code == 202


def test_duplicate_returns_the_original_receipt(client, chain, keys, batch_id):
    first = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"cat")).json()
    again = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"cat"))
    assert again.status_code == 409
    assert again.json()["error"] == "duplicate_answer" and again.json()["receipt"] == first
    # Another payload for the same task by the same worker: still the original.
    other = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"dog"))
    assert other.status_code == 409 and other.json()["receipt"]["receipt_id"] == first["receipt_id"]
    # Another worker on the same task is a different answer.
    assert client.post("/answers", json=signed_answer(chain, keys[3], batch_id, 0, b"dog")).status_code == 202


def test_signature_of_someone_else_is_401_naming_the_signer(client, chain, keys, batch_id):
    from eth_account import Account

    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")  # claims keys[2]'s address
    digest = chain.domain.digest(Answer(batch_id, 0, answer_digest(b"cat"), body["worker"]).struct_hash())
    body["signature"] = "0x" + sign(digest, keys[3]).hex()  # but keys[3] signed it
    reply = client.post("/answers", json=body)
    assert reply.status_code == 401
    assert reply.json()["error"] == "signer_mismatch"
    assert reply.json()["recovered"] == Account.from_key(keys[3]).address
    assert reply.json()["worker"] == body["worker"]


def test_signature_over_other_fields_is_401(client, chain, keys, batch_id):
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    body["payload"] = base64.b64encode(b"dog").decode()  # signed "cat", sent "dog"
    assert client.post("/answers", json=body).json()["error"] == "signer_mismatch"


@pytest.mark.parametrize("mangle, reason", [
    (lambda sig: sig[:64] + bytes([29]), "v must be 27 or 28"),
    (lambda sig: sig[:32] + (2**256 - 1 - 5).to_bytes(32, "big") + sig[64:], "upper half"),
    (lambda sig: bytes(32) + sig[32:], "does not recover"),
])
def test_malformed_signature_is_400_saying_why(client, chain, keys, batch_id, mangle, reason):
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    body["signature"] = "0x" + mangle(bytes.fromhex(body["signature"][2:])).hex()
    reply = client.post("/answers", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "bad_signature" and reason in reply.json()["detail"]


def test_wrong_answer_digest_is_400(client, chain, keys, batch_id):
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    body["answer_digest"] = "0x" + hashlib.sha256(b"dog").hexdigest()
    reply = client.post("/answers", json=body)
    assert reply.status_code == 400 and reply.json()["error"] == "digest_mismatch"


def test_unknown_batch_and_task_are_404(client, chain, keys, batch_id):
    unknown = client.post("/answers", json=signed_answer(chain, keys[2], batch_id + 1000, 0, b"cat"))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_batch"
    no_task = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 4, b"cat"))
    assert no_task.status_code == 404 and no_task.json()["error"] == "unknown_task"
    assert "0..3" in no_task.json()["detail"]


@pytest.mark.parametrize("field, value", [
    ("worker", "0x1234"), ("batch_id", 0), ("task_index", 2**32), ("signature", "0xzz"),
    ("payload", "not base64!"), ("answer_digest", "0x12"),
])
def test_schema_errors_are_422_naming_the_field(client, chain, keys, batch_id, field, value):
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    body[field] = value
    reply = client.post("/answers", json=body)
    assert reply.status_code == 422
    assert [e["loc"] for e in reply.json()["detail"]] == [["body", field]]


def test_missing_field_is_422_naming_it(client, chain, keys, batch_id):
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    del body["signature"]
    assert client.post("/answers", json=body).json()["detail"][0]["loc"] == ["body", "signature"]


def test_oversized_payload_is_413_and_nothing_stored(client, chain, keys, batch_id, database_url):
    reply = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"x" * (262_144 + 1)))
    assert reply.status_code == 413 and reply.json()["limit"] == 262_144
    huge = client.post("/answers", content=b"{" + b" " * 400_000 + b"}",
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413
    with make_engine(database_url).connect() as connection:
        assert connection.execute(select(RelayAnswer.id)).first() is None
    # The limit itself is fine.
    assert client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 0, b"x" * 262_144)).status_code == 202


def test_rate_limit_per_worker_is_429_with_retry_after(chain, keys, sqlite_url, tmp_path, batch_id):
    with relay_client(chain, sqlite_url, tmp_path / "store", answers_burst=2,
                      answers_per_address_per_s=0.01) as client:
        codes = [client.post("/answers", json=signed_answer(chain, keys[2], batch_id, i, b"a")).status_code
                 for i in range(3)]
        assert codes == [202, 202, 429]
        limited = client.post("/answers", json=signed_answer(chain, keys[2], batch_id, 3, b"a"))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another worker has its own bucket.
        assert client.post("/answers", json=signed_answer(chain, keys[3], batch_id, 3, b"a")).status_code == 202


def test_concurrent_answers_share_commits_and_all_are_stored(chain, keys, sqlite_url, tmp_path, batch_id):
    """Many answers in flight at once: each gets its own receipt or the original on a duplicate."""
    import concurrent.futures

    bodies = [signed_answer(chain, k, batch_id, t, f"{k[-4:]}-{t}".encode()) for k in keys[2:8] for t in range(4)]
    bodies += bodies[:5]  # duplicates racing their originals
    with relay_client(chain, sqlite_url, tmp_path / "store", answers_burst=1000) as client:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda b: client.post("/answers", json=b), bodies))
        codes = [r.status_code for r in replies]
        assert codes.count(202) == 24 and codes.count(409) == 5
        groups = client.app.state.relay.intake.writer.groups
    assert groups < 29  # several answers shared a commit
    with make_engine(sqlite_url).connect() as connection:
        assert len(connection.execute(select(RelayAnswer.id)).all()) == 24


def test_receipt_unknown_is_404(client):
    assert client.get("/receipts/0x" + "ab" * 32).status_code == 404
    assert client.get("/receipts/nope").status_code == 422


def test_answer_for_closed_batch_is_410(chain, keys, client):
    short = create_batch(chain, keys[1], deadline_in=30)
    chain.w3.provider.make_request("evm_increaseTime", [60])
    chain.w3.provider.make_request("evm_mine", [])
    reply = client.post("/answers", json=signed_answer(chain, keys[2], short, 0, b"late"))
    assert reply.status_code == 410, reply.text
    assert reply.json()["error"] == "batch_closed"


def test_signed_for_another_chain_is_401(client, chain, keys, batch_id):
    from kempelen.protocol.signing import Domain

    other = Domain(chain.chain_id + 1, chain.deployment.escrow)
    body = signed_answer(chain, keys[2], batch_id, 0, b"cat")
    digest = other.digest(Answer(batch_id, 0, answer_digest(b"cat"), body["worker"]).struct_hash())
    body["signature"] = "0x" + sign(digest, keys[2]).hex()
    assert client.post("/answers", json=body).status_code == 401
