"""Sign-In with Ethereum and what a session may see: parsing, replay, ownership of batches."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from relay_helpers import create_batch, login, relay_client, signed_answer, siwe_message

from kempelen.relay import siwe
from kempelen.relay.siwe import SiweError, SiweMessage

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _message(**changes) -> SiweMessage:
    fields = dict(domain="relay.example", address=ADDRESS, statement="Sign in.", uri="https://relay.example/",
                  version="1", chain_id=31337, nonce="abcdef0123456789",
                  issued_at=datetime(2026, 1, 1, tzinfo=UTC))
    return SiweMessage(**{**fields, **changes})


def test_siwe_text_round_trips_through_the_parser():
    full = _message(expiration_time=datetime(2026, 1, 2, tzinfo=UTC), not_before=datetime(2026, 1, 1, tzinfo=UTC),
                    request_id="r-1", resources=("ipfs://bafy", "https://relay.example/tos"), scheme="https")
    for message in (_message(), _message(statement=None), full):
        assert siwe.parse(message.text()) == message


def test_siwe_spec_example_parses():
    text = ("service.org wants you to sign in with your Ethereum account:\n"
            "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n"
            "I accept the ServiceOrg Terms of Service: https://service.org/tos\n\n"
            "URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\n"
            "Issued At: 2021-09-30T16:25:24Z\nResources:\n"
            "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
            "- https://example.com/my-web2-claim.json")
    message = siwe.parse(text)
    assert (message.domain, message.chain_id, message.nonce) == ("service.org", 1, "32891756")
    assert len(message.resources) == 2


@pytest.mark.parametrize("text, reason", [
    ("hello", "must start with"),
    (_message().text().replace(ADDRESS, ADDRESS.lower()), "EIP-55"),
    (_message().text().replace("Version: 1\n", ""), "version"),
    (_message().text().replace("Chain ID: 31337", "Chain ID: x"), "Chain ID"),
    (_message().text().replace("abcdef0123456789", "short"), "nonce"),
    (_message().text().replace("2026-01-01T00:00:00Z", "yesterday"), "RFC 3339"),
    (_message().text().replace("URI: ", "Url: "), "unexpected line"),
])
def test_siwe_parser_names_what_is_wrong(text, reason):
    with pytest.raises(SiweError, match=reason):
        siwe.parse(text)


def test_siwe_check_refuses_other_domain_chain_and_expired():
    now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    siwe.check(_message(), domain="relay.example", chain_id=31337, now=now)
    for message, reason in [(_message(domain="evil.example"), "domain"), (_message(chain_id=1), "chain"),
                            (_message(expiration_time=now - timedelta(seconds=1)), "expired"),
                            (_message(issued_at=now + timedelta(hours=1)), "future")]:
        with pytest.raises(SiweError, match=reason):
            siwe.check(message, domain="relay.example", chain_id=31337, now=now)


@pytest.fixture
def client(chain, database_url, tmp_path):
    with relay_client(chain, database_url, tmp_path / "store", answers_burst=1000) as client:
        yield client


def _sign(key: str, text: str) -> str:
    return "0x" + bytes(Account.from_key(key).sign_message(encode_defunct(text=text)).signature).hex()


def test_login_gives_a_session_and_a_replayed_nonce_is_refused(client, chain, keys):
    account = Account.from_key(keys[4])
    text = siwe_message(client, account.address, chain_id=chain.chain_id).text()
    first = client.post("/auth/login", json={"message": text, "signature": _sign(keys[4], text)})
    assert first.status_code == 200 and first.json()["address"] == account.address
    headers = {"Authorization": f"Bearer {first.json()['token']}"}
    assert client.get("/leases", headers=headers).status_code == 200

    replay = client.post("/auth/login", json={"message": text, "signature": _sign(keys[4], text)})
    assert replay.status_code == 401 and "nonce" in replay.json()["detail"]

    assert client.post("/auth/logout", headers=headers).status_code == 204
    assert client.get("/leases", headers=headers).status_code == 401


def test_login_refuses_unissued_nonce_wrong_signer_and_wrong_domain(client, chain, keys):
    address = Account.from_key(keys[4]).address
    made_up = siwe_message(client, address, chain_id=chain.chain_id, nonce="neverissued123").text()
    assert "nonce" in client.post("/auth/login", json={"message": made_up,
                                                        "signature": _sign(keys[4], made_up)}).json()["detail"]
    text = siwe_message(client, address, chain_id=chain.chain_id).text()
    other = client.post("/auth/login", json={"message": text, "signature": _sign(keys[5], text)})
    assert other.status_code == 401 and "signed by" in other.json()["detail"]
    phishing = siwe_message(client, address, chain_id=chain.chain_id, domain="evil.example").text()
    refused = client.post("/auth/login", json={"message": phishing, "signature": _sign(keys[4], phishing)})
    assert refused.status_code == 401 and "domain" in refused.json()["detail"]


def test_routes_need_a_session(client):
    for method, path in [("GET", "/leases"), ("GET", "/tasks/open"), ("GET", "/workers/me/answers"),
                         ("GET", "/batches/1/answers"), ("POST", "/payloads?kind=task")]:
        reply = client.request(method, path, headers={"Authorization": "Bearer forged"})
        assert reply.status_code == 401, path
        assert reply.json()["error"] == "not_authenticated"


def test_requester_sees_its_own_batch_answers_only(client, chain, keys):
    batch_id = create_batch(chain, keys[1], task_count=2, answers_per_task=2)
    for worker, task in ((keys[2], 0), (keys[3], 0), (keys[2], 1)):
        body = signed_answer(chain, worker, batch_id, task, f"label-{task}".encode())
        assert client.post("/answers", json=body).status_code == 202

    owner = login(client, keys[1], chain.chain_id)
    export = client.get(f"/batches/{batch_id}/answers", headers=owner)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [(a["task_index"], a["worker"]) for a in lines] == [
        (0, Account.from_key(keys[2]).address), (0, Account.from_key(keys[3]).address),
        (1, Account.from_key(keys[2]).address)]
    assert base64.b64decode(lines[2]["payload"]) == b"label-1" and lines[2]["status"] == "accepted"
    review = client.get(f"/batches/{batch_id}/review", headers=owner).json()
    assert review["queued_at_relay"] == {"accepted": 3}

    stranger = login(client, keys[6], chain.chain_id)
    for path in (f"/batches/{batch_id}/answers", f"/batches/{batch_id}/review"):
        refused = client.get(path, headers=stranger)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert client.get(f"/batches/{batch_id + 999}/answers", headers=owner).status_code == 404
