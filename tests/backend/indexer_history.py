"""Helpers for the indexer tests: drive the real protocol on anvil, and compare index databases."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from eth_account import Account
from sqlalchemy import select

from kempelen.chain.anvil import Anvil
from kempelen.chain.contracts import ETH, Chain, deploy_protocol
from kempelen.db import make_engine
from kempelen.indexer.models import PROJECTION_TABLES, ChainEvent, IndexCheckpoint
from kempelen.indexer.runner import Indexer, open_indexer
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.merkle import earnings_tree
from kempelen.protocol.sealed import SettledBook, open_words
from kempelen.protocol.signing import Answer, Settlement, answer_digest, settled_words, sign
from kempelen.protocol.tasksets import task_sets

ETHER = 10**18


def rpc(url: str, method: str, *params):
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    body = reply.json()
    assert "error" not in body, body
    return body["result"]


def cid_bytes(text: str) -> bytes:
    return raw_cid(hashlib.sha256(text.encode()).digest()).to_bytes()


class Actors:
    """The protocol's roles as dev keys: requesters 1-2, workers 3-5, relayer 6."""

    def __init__(self, chain: Chain, keys: list[str]):
        self.chain = chain
        self.requester, self.requester2 = keys[1], keys[2]
        self.workers = keys[3:6]
        self.relayer = keys[6]
        self.escrow = chain.escrow.functions
        # batch -> {"earnings", "sequence", "tree", "words" (a SettledBook)} of its settlements
        self.books: dict[int, dict] = {}

    @staticmethod
    def address(key: str) -> str:
        return Account.from_key(key).address

    def now(self) -> int:
        return self.chain.w3.eth.get_block("latest")["timestamp"]

    def create_batch(self, requester: str, *, token: str = ETH, tasks: int = 4, per_task: int = 2,
                     reward: int = 5 * ETHER, fee: int = ETHER // 100, review_window: int = 3600,
                     deadline_in: int = 7200, gold: bytes = bytes(32), manifest: str = "m") -> int:
        deposit = tasks * per_task * (reward + fee)
        if token != ETH:
            usdc = self.chain.token(token)
            self.chain.transact(requester, usdc.functions.mint(self.address(requester), deposit))
            self.chain.transact(requester, usdc.functions.approve(self.chain.escrow.address, deposit))
        terms = (token, tasks, per_task, reward, fee, self.now() + deadline_in, review_window, 0, gold,
                 cid_bytes(manifest))
        self.chain.transact(requester, self.escrow.createBatch(terms),
                            value=deposit if token == ETH else 0)
        return self.escrow.batchCount().call()

    def submit(self, batch_id: int, answers: list[tuple[str, int, str]]) -> None:
        """answers: (worker key, task index, payload); one submitAnswers by the relayer."""
        tuples, signatures = [], []
        for worker, task, payload in answers:
            answer = Answer(batch_id, task, answer_digest(payload.encode()), self.address(worker))
            tuples.append(answer.as_tuple())
            signatures.append(sign(self.chain.domain.digest(answer.struct_hash()), worker))
        self.chain.transact(self.relayer, self.escrow.submitAnswers(tuples, signatures))

    def refs(self, answers: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return [(self.address(worker), task) for worker, task in answers]

    def sets(self, answers: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
        """The review calls' task sets naming (worker key, task) answers."""
        return task_sets(self.refs(answers))

    def approve(self, requester: str, batch_id: int, answers: list[tuple[str, int]]) -> None:
        self.chain.transact(requester, self.escrow.approve(batch_id, self.sets(answers)))

    def reject(self, requester: str, batch_id: int, answers: list[tuple[str, int]]) -> None:
        self.chain.transact(requester, self.escrow.reject(batch_id, self.sets(answers),
                                                          cid_bytes("not what was asked")))

    def release(self, batch_id: int, answers: list[tuple[str, int]]) -> None:
        self.chain.transact(self.relayer, self.escrow.release(batch_id, self.sets(answers)))

    def book(self, batch_id: int) -> dict:
        return self.books.setdefault(batch_id, {"earnings": {}, "sequence": 0, "tree": None,
                                                "words": SettledBook()})

    def settle(self, requester: str, batch_id: int, answers: list[tuple[str, int]], *,
               poster: str | None = None, sequence: int | None = None) -> None:
        """Settle (worker key, task) answers: the requester signs the next cumulative root of the
        batch's earnings, `poster` (default the relayer) posts it and takes the relay fees. The
        entries restate the earlier words of every worker paid (bits 0 where nothing is new)."""
        reward = self.escrow.batch(batch_id).call()[7]
        book = self.book(batch_id)
        pairs = self.refs(answers)
        earnings = dict(book["earnings"])
        for worker, _ in pairs:
            earnings[worker] = earnings.get(worker, 0) + reward
        tree = earnings_tree(earnings)
        sequence = book["sequence"] + 1 if sequence is None else sequence
        entries = book["words"].restated(settled_words(pairs))
        settlement = Settlement(batch_id, sequence, tree.root, sum(earnings.values()),
                                cid_bytes(f"settlement {batch_id}/{sequence}"), entries)
        signature = sign(self.chain.domain.digest(settlement.struct_hash()), requester)
        self.chain.transact(poster or self.relayer, self.escrow.settle(
            settlement.as_tuple(), book["words"].before(entries), signature))
        book["words"].add(entries)
        book["earnings"], book["sequence"], book["tree"] = earnings, sequence, tree

    def open_settled(self, batch_id: int, worker: str, *, sender: str | None = None) -> None:
        """Open `worker`'s settled words in the batch (anyone may): its other answers can then
        take the direct path."""
        words = self.book(batch_id)["words"]
        self.chain.transact(sender or self.relayer, self.escrow.openSettled(
            batch_id, self.address(worker), open_words(words.of_worker(self.address(worker)))))
        words.opened.add(self.address(worker))

    def claim(self, batch_id: int, worker: str, *, sender: str | None = None) -> None:
        """Claim `worker`'s leaf of the batch's latest root (anyone may send it; the worker is paid)."""
        tree = self.books[batch_id]["tree"]
        index = tree.index_of((self.address(worker), self.books[batch_id]["earnings"][self.address(worker)]))
        _, cumulative = tree.values[index]
        self.chain.transact(sender or worker, self.escrow.claimEarnings(batch_id, self.address(worker),
                                                                        cumulative, tree.proof(index)))

    def advance(self, seconds: int) -> None:
        rpc(self.chain.rpc_url, "evm_increaseTime", seconds)
        rpc(self.chain.rpc_url, "evm_mine")


def opening(actors: Actors) -> tuple[int, int]:
    """Two batches (ETH with rewards above 2**63 wei in sum, USDC with two settled words' worth
    of tasks) and answers to both."""
    w1, w2, w3 = actors.workers
    eth_batch = actors.create_batch(actors.requester)
    usdc = actors.chain.deployment.tokens["USDC"]
    usdc_batch = actors.create_batch(actors.requester2, token=usdc, tasks=200, per_task=1,
                                     reward=1_000_000, fee=10_000, review_window=600)
    actors.submit(eth_batch, [(w1, 0, "cat"), (w2, 0, "cat"), (w1, 1, "dog"), (w3, 2, "cow")])
    actors.submit(usdc_batch, [(w1, 0, "a"), (w2, 1, "b"), (w3, 2, "c"), (w3, 3, "d")])
    return eth_batch, usdc_batch


def review_phase(actors: Actors, eth_batch: int, usdc_batch: int, variant: int = 0) -> None:
    """Reviews, a bonus, an extension, a release and withdrawals; `variant` changes the outcome."""
    w1, w2, w3 = actors.workers
    if variant == 0:
        actors.approve(actors.requester, eth_batch, [(w1, 0), (w1, 1), (w2, 0)])
        actors.reject(actors.requester2, usdc_batch, [(w1, 0)])
        actors.chain.transact(actors.requester, actors.escrow.bonus(
            eth_batch, actors.address(w3), ETHER, cid_bytes("thanks")), value=ETHER)
        actors.chain.transact(actors.requester2, actors.escrow.extend(
            usdc_batch, actors.now() + 90_000, 2, 0))
    else:
        actors.reject(actors.requester, eth_batch, [(w2, 0)])
        actors.approve(actors.requester2, usdc_batch, [(w1, 0), (w2, 1)])
        actors.submit(eth_batch, [(w3, 3, "hen"), (w2, 3, "hen")])
    actors.advance(4000)  # past every review window
    if variant == 0:
        actors.release(eth_batch, [(w3, 2)])
        actors.release(usdc_batch, [(w2, 1), (w3, 2), (w3, 3)])
        actors.chain.transact(w1, actors.escrow.withdraw(ETH))
    else:
        actors.release(eth_batch, [(w1, 0), (w1, 1), (w3, 2), (w3, 3), (w2, 3)])
        actors.chain.transact(w3, actors.escrow.withdraw(ETH))
        actors.chain.transact(actors.relayer, actors.escrow.withdraw(ETH))


def settlement_phase(actors: Actors, eth_batch: int, usdc_batch: int) -> None:
    """Settlements beside the direct path: tasks the opening left unanswered are settled, claims
    (one by a stranger for the worker), workers settled twice in a batch (w2 in one ETH word; w1
    in two USDC words, its second settlement restating word 1 with an entry of no bits), a direct
    answer to a task another worker's answer was settled for, and w2's sealed words in the USDC
    batch: its direct answer is skipped (SettlementSealed), its words opened, then accepted, and
    w2 settled again (task 196, word 1) with no entry restating its word 0."""
    w1, w2, w3 = actors.workers
    actors.settle(actors.requester, eth_batch, [(w2, 1), (w3, 3), (w1, 3)])
    actors.settle(actors.requester2, usdc_batch, [(w1, 5), (w1, 6), (w1, 195), (w2, 7)],
                  poster=actors.workers[1])
    actors.claim(eth_batch, w2)
    actors.claim(usdc_batch, w1, sender=actors.relayer)
    actors.settle(actors.requester, eth_batch, [(w2, 2)])
    actors.claim(eth_batch, w2)  # the second claim pays only the new leaf's difference
    actors.settle(actors.requester2, usdc_batch, [(w1, 8)])  # restates w1's word 1 with bits 0
    actors.submit(usdc_batch, [(w3, 5, "e")])  # w1's answer to task 5 was settled, w3's is direct
    actors.submit(usdc_batch, [(w2, 9, "f")])  # skipped: w2's settled words are sealed
    actors.open_settled(usdc_batch, w2)
    actors.submit(usdc_batch, [(w2, 9, "f"), (w2, 7, "g")])  # 9 accepted; 7 was settled: skipped
    actors.settle(actors.requester2, usdc_batch, [(w2, 196)])  # opened: settled against its stored words


def dump(database_url: str, chain_id: int) -> dict[str, list]:
    """Everything the index says about a chain, order-independent (for comparing two indexes)."""
    engine = make_engine(database_url)
    tables = {"chain_events": ChainEvent.__table__}
    tables.update({model.__tablename__: model.__table__ for model in PROJECTION_TABLES})
    found = {}
    with engine.connect() as conn:
        for name, table in tables.items():
            rows = conn.execute(select(table).where(table.c.chain_id == chain_id)).mappings()
            found[name] = sorted((dict(r) for r in rows), key=repr)
        cp = IndexCheckpoint.__table__
        found["checkpoint"] = [tuple(r) for r in conn.execute(
            select(cp.c.last_block, cp.c.last_block_hash).where(cp.c.chain_id == chain_id))]
    engine.dispose()
    return found


# Fixtures and helpers shared by the indexer tests that need a chain of their own.

@pytest.fixture
def own_chain(tmp_path, keys):
    """A chain of this test's own: reorganising the session's anvil would break other tests."""
    with Anvil(log_path=tmp_path / "anvil.log") as node:
        yield Chain(node.url, deploy_protocol(node.url, keys[0]))


@pytest.fixture
def actors(own_chain, keys) -> Actors:
    return Actors(own_chain, keys)


def indexer(chain: Chain, url: str, **options) -> Indexer:
    d = chain.deployment
    return open_indexer(chain.rpc_url, url, d.escrow, d.reputation, from_block=d.deploy_block,
                        **options)
