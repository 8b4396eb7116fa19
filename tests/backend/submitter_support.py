"""Helpers of the submitter tests: a funded batch on a real anvil, signed answers, the queue."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from eth_account import Account
from kempelen.chain.contracts import ETH, Chain
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import Answer, Domain, answer_digest, sign
from kempelen.relay.models import RelayAnswer
from kempelen.relay.outbox import transactions
from sqlalchemy import insert, select

answers_table = RelayAnswer.__table__


def create_batch(chain: Chain, requester_key: str, *, task_count: int = 1000, answers_per_task: int = 10,
                 reward: int = 10**12, relay_fee: int = 10**11, deadline_in: int = 86_400) -> int:
    """Fund an ETH batch and return its id."""
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + deadline_in
    terms = (ETH, task_count, answers_per_task, reward, relay_fee, deadline, 3600, 0, bytes(32), b"\x01\x55")
    deposit = task_count * answers_per_task * (reward + relay_fee)
    chain.transact(requester_key, chain.escrow.functions.createBatch(terms), value=deposit)
    return chain.escrow.functions.batchCount().call()


def worker_keys(count: int) -> list[str]:
    """Fresh worker keys: workers sign, they need no gas."""
    return ["0x" + os.urandom(32).hex() for _ in range(count)]


def signed_rows(domain: Domain, batch_id: int, keys: list[str], count: int, *, first_task: int = 0,
                tag: str = "") -> list[dict]:
    """`count` relay_answers rows as the intake stores them, spread over the workers."""
    rows = []
    now = datetime.now(UTC)
    for i in range(count):
        key = keys[i % len(keys)]
        worker = Account.from_key(key).address
        task = first_task + i // len(keys)
        payload = f'{{"label": "{tag}{batch_id}-{task}-{i}"}}'.encode()
        digest = answer_digest(payload)
        message = domain.digest(Answer(batch_id, task, digest, worker).struct_hash())
        rows.append({
            "receipt_id": "0x" + message.hex(), "chain_id": domain.chain_id, "batch_id": batch_id,
            "task_index": task, "worker": worker, "answer_digest": digest,
            "signature": sign(message, key), "payload": payload, "payload_cid": str(raw_cid(digest)),
            "status": "accepted", "accepted_at": now,
        })
    return rows


def enqueue(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(answers_table), rows)


def answer_rows(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(answers_table).order_by(answers_table.c.id)))


def transaction_rows(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(transactions).order_by(transactions.c.nonce, transactions.c.sent_at)))


def submitted_events(chain: Chain, batch_id: int) -> list:
    """Every AnswersSubmitted event of the batch, straight from the chain."""
    from kempelen.relay.receipts import escrow_decoder

    decoder = escrow_decoder()
    logs = chain.w3.eth.get_logs({
        "address": chain.escrow.address, "fromBlock": 0, "toBlock": "latest",
        "topics": [decoder.topics("AnswersSubmitted")[0], "0x" + batch_id.to_bytes(32, "big").hex()],
    })
    return decoder.decode_all(logs)


def landed_answers(chain: Chain, batch_id: int) -> list[tuple[str, int, bytes]]:
    """(worker, task index, answer digest) of every answer the batch's AnswersSubmitted events
    name, in log order; each event is checked to name one 96-task group, ascending."""
    from kempelen.protocol.events import submitted_answers

    landed = []
    for event in submitted_events(chain, batch_id):
        first = event.args["firstTask"]
        answers = submitted_answers(event.args)
        assert first % 96 == 0 and answers and all(first <= task < first + 96 for task, _ in answers), event
        landed += [(event.args["worker"], task, digest) for task, digest in answers]
    return landed


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def rpc(chain: Chain, method: str, *params):
    reply = chain.w3.provider.make_request(method, list(params))
    if "error" in reply:
        raise AssertionError(f"{method}: {reply['error']}")
    return reply.get("result")
