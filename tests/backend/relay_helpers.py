"""Shared helpers of the relay tests: a relay app on real anvil + a real database, batches, signed answers."""

from __future__ import annotations

import base64
import time
from contextlib import contextmanager
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from kempelen.chain.contracts import Chain
from kempelen.db import migrate
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import CID
from kempelen.protocol.manifest import BatchManifest
from kempelen.protocol.signing import Answer, answer_digest, sign
from kempelen.relay.config import Settings
from kempelen.relay.main import create_app
from kempelen.relay.siwe import SiweMessage

ETH = "0x0000000000000000000000000000000000000000"


@contextmanager
def relay_client(chain: Chain, database_url: str, store_dir, **overrides):
    """A TestClient over create_app with a migrated database; the lifespan runs inside."""
    migrate(database_url)
    settings = Settings(database_url=database_url, store_dir=store_dir, rpc_url=chain.rpc_url, **overrides)
    app = create_app(settings, chain=chain)
    with TestClient(app) as client:
        yield client


def pin_manifest(store_dir, task_payloads: list[bytes], assignment_seconds: int = 600) -> str:
    store = ContentStore(store_dir)
    cids = tuple(str(store.put(p)) for p in task_payloads)
    manifest = BatchManifest(title="cats", task_cids=cids, instructions="cat or not?",
                             assignment_seconds=assignment_seconds)
    return str(store.put(manifest.to_json()))


def create_batch(chain: Chain, requester_key: str, *, task_count: int = 4, answers_per_task: int = 2,
                 manifest_cid: str | None = None, reward: int = 10**12, relay_fee: int = 10**11,
                 min_reputation: int = 0, deadline_in: int = 400 * 24 * 3600) -> int:
    """Fund an ETH batch on-chain; return its id."""
    now = chain.w3.eth.get_block("latest")["timestamp"]
    manifest = CID.parse(manifest_cid).to_bytes() if manifest_cid else bytes.fromhex("01551220") + bytes(32)
    terms = (ETH, task_count, answers_per_task, reward, relay_fee, now + deadline_in, 3600,
             min_reputation, bytes(32), manifest)
    deposit = task_count * answers_per_task * (reward + relay_fee)
    chain.transact(requester_key, chain.escrow.functions.createBatch(terms), value=deposit)
    return chain.escrow.functions.batchCount().call()


def signed_answer(chain: Chain, key: str, batch_id: int, task_index: int, payload: bytes) -> dict:
    """The JSON body of POST /answers, signed like a worker's wallet would."""
    worker = Account.from_key(key).address
    digest = chain.domain.digest(Answer(batch_id, task_index, answer_digest(payload), worker).struct_hash())
    return {"batch_id": batch_id, "task_index": task_index, "worker": worker,
            "payload": base64.b64encode(payload).decode(), "signature": "0x" + sign(digest, key).hex()}


def siwe_message(client: TestClient, address: str, *, chain_id: int, domain: str = "localhost",
                 nonce: str | None = None) -> SiweMessage:
    nonce = nonce or client.post("/auth/nonce").json()["nonce"]
    return SiweMessage(domain=domain, address=address, statement="Sign in to the Kempelen relay.",
                       uri=f"http://{domain}/", version="1", chain_id=chain_id, nonce=nonce,
                       issued_at=datetime.fromtimestamp(int(time.time()), UTC))


def login(client: TestClient, key: str, chain_id: int) -> dict:
    """Sign in with Ethereum; return the Authorization header."""
    account = Account.from_key(key)
    message = siwe_message(client, account.address, chain_id=chain_id).text()
    signature = account.sign_message(encode_defunct(text=message)).signature
    reply = client.post("/auth/login", json={"message": message, "signature": "0x" + bytes(signature).hex()})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['token']}"}
