"""Drives real batches through their lives on anvil, for the auditor's tests: no mocks."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from eth_account import Account
from web3 import Web3

from kempelen.chain.contracts import ETH
from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import file_cid
from kempelen.protocol.cid import CID
from kempelen.protocol.manifest import BatchManifest
from kempelen.protocol.sealed import SettledBook, open_words
from kempelen.protocol.settlement import (
    ManifestAnswer,
    SettlementManifest,
    build_settlement,
    claim_for,
)
from kempelen.protocol.signing import Answer, Domain, SettledWord, answer_digest, sign
from kempelen.protocol.tasksets import task_sets


def address(key: str) -> str:
    return Account.from_key(key).address


def sets(refs: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """The review calls' task sets naming (worker key, task) answers."""
    return task_sets((address(k), t) for k, t in refs)


class History:
    """Writes payloads to a real content store and sends real transactions to `escrow`."""

    def __init__(self, w3: Web3, escrow, store: ContentStore, chain_id: int):
        self.w3, self.escrow, self.store = w3, escrow, store
        self.domain = Domain(chain_id, escrow.address)
        self.settled: dict[int, tuple[SettlementManifest, CID]] = {}  # batch -> latest manifest, its CID
        self.books: dict[int, SettledBook] = {}  # batch -> its settled words (sealed settled words)

    # -- plumbing -------------------------------------------------------------------

    def send(self, key: str, call, value: int = 0):
        sender = address(key)
        tx = call.build_transaction({
            "from": sender, "value": value, "gas": 8_000_000, "gasPrice": self.w3.eth.gas_price,
            "nonce": self.w3.eth.get_transaction_count(sender, "pending"),
        })
        signed = Account.from_key(key).sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.02)
        assert receipt.status == 1, f"transaction reverted: {receipt.transactionHash.hex()}"
        return receipt

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def advance(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def put_json(self, value) -> CID:
        return self.store.put(json.dumps(value, sort_keys=True).encode())

    # -- protocol steps ---------------------------------------------------------------

    def create_batch(self, requester: str, *, tasks: int = 3, answers_per_task: int = 2, reward: int = 10**15,
                     relay_fee: int = 10**13, token: str = ETH, lifetime: int = 3_600,
                     review_window: int = 600) -> int:
        task_cids = tuple(str(self.put_json({"task": i, "text": f"label item {i}"})) for i in range(tasks))
        manifest = self.store.put(BatchManifest(title="audit test", task_cids=task_cids).to_json())
        terms = (token, tasks, answers_per_task, reward, relay_fee, self.now() + lifetime, review_window, 0,
                 bytes(32), manifest.to_bytes())
        deposit = tasks * answers_per_task * (reward + relay_fee)
        receipt = self.send(requester, self.escrow.functions.createBatch(terms), deposit if token == ETH else 0)
        (event,) = self.escrow.events.BatchCreated().process_receipt(receipt)
        return event.args.batchId

    def sign_answer(self, batch_id: int, task: int, worker_key: str, payload: bytes, *, signer: str | None = None,
                    store: bool = True):
        if store:
            self.store.put_block(payload)
        answer = Answer(batch_id, task, answer_digest(payload), address(worker_key))
        return answer.as_tuple(), sign(self.domain.digest(answer.struct_hash()), signer or worker_key)

    def submit(self, relayer: str, signed: list[tuple]):
        answers, signatures = zip(*signed)
        return self.send(relayer, self.escrow.functions.submitAnswers(list(answers), list(signatures)))

    def answer_all(self, relayer: str, batch_id: int, tasks: range, worker_keys: list[str]):
        signed = [self.sign_answer(batch_id, t, key, f"answer {batch_id}/{t} by {address(key)}".encode())
                  for t in tasks for key in worker_keys]
        return self.submit(relayer, signed)

    def approve(self, requester: str, batch_id: int, refs: list[tuple[str, int]]):
        return self.send(requester, self.escrow.functions.approve(batch_id, sets(refs)))

    def release(self, anyone: str, batch_id: int, refs: list[tuple[str, int]]):
        return self.send(anyone, self.escrow.functions.release(batch_id, sets(refs)))

    def reject(self, requester: str, batch_id: int, refs: list[tuple[str, int]], reason: bytes | None = None):
        if reason is None:
            reason = self.put_json({"reason": "does not follow the instructions"}).to_bytes()
        call = self.escrow.functions.reject(batch_id, sets(refs), reason)
        return self.send(requester, call)

    # -- settlements (ISettlement) ----------------------------------------------------

    def signed_answer(self, batch_id: int, task: int, worker_key: str, payload: bytes, *,
                      signer: str | None = None) -> ManifestAnswer:
        """A worker's signed answer as a settlement manifest lists it; the payload is stored."""
        self.store.put_block(payload)
        answer = Answer(batch_id, task, answer_digest(payload), address(worker_key))
        return ManifestAnswer.of(answer, sign(self.domain.digest(answer.struct_hash()), signer or worker_key))

    def settle(self, requester: str, poster: str, batch_id: int, answers: list[ManifestAnswer], *,
               tamper: Callable[[SettlementManifest], SettlementManifest] | None = None,
               root: bytes | None = None, store_manifest: bool = True,
               before: Callable[[SettledWord, int], int] | None = None):
        """The requester's next settlement of `answers`, built with kempelen.protocol.settlement,
        its manifest stored, signed and posted by `poster`. `tamper` rewrites the manifest before
        it is stored and signed (a dishonest requester; it gets the honest one), `root` replaces the signed root (a manifest
        that is not the root's), `store_manifest=False` never stores it (a manifest nobody has). The
        entries restate the earlier words of the sealed workers paid, with their bits as `before`;
        `before(entry, bits)` replaces an entry's (the escrow ignores it for an opened worker)."""
        record = self.escrow.functions.batch(batch_id).call()
        token, reward = record[4], record[7]
        previous, previous_cid = self.settled.get(batch_id, (None, None))
        _, manifest = build_settlement(previous, answers, domain=self.domain, batch_id=batch_id, token=token,
                                       reward=reward, cid_of=file_cid, previous_cid=previous_cid)
        if tamper is not None:
            manifest = tamper(manifest)
        document = manifest.to_json()
        cid = self.store.put(document) if store_manifest else file_cid(document)
        book = self.books.get(batch_id, SettledBook())
        settlement = manifest.settlement(cid, book)
        if root is not None:
            settlement = dataclasses.replace(settlement, root=root)
        signature = sign(self.domain.digest(settlement.struct_hash()), requester)
        prior = book.before(settlement.settled)
        if before is not None:
            prior = [before(entry, bits) for entry, bits in zip(settlement.settled, prior)]
        receipt = self.send(poster, self.escrow.functions.settle(settlement.as_tuple(), prior, signature))
        book.add(settlement.settled)
        self.books[batch_id] = book
        self.settled[batch_id] = (manifest, cid)
        return receipt

    def open_settled(self, sender: str, batch_id: int, worker_key: str):
        """Opens the worker's settled words in the batch (anyone may): its other answers can then
        take the direct path."""
        book = self.books[batch_id]
        words = open_words(book.of_worker(address(worker_key)))
        receipt = self.send(sender, self.escrow.functions.openSettled(batch_id, address(worker_key), words))
        book.opened.add(address(worker_key))
        return receipt

    def claim(self, sender: str, batch_id: int, worker_key: str):
        """Claims the worker's leaf of the batch's latest manifest (anyone may send it)."""
        cumulative, proof = claim_for(self.settled[batch_id][0], address(worker_key))
        claim = self.escrow.functions.claimEarnings(batch_id, address(worker_key), cumulative, proof)
        return self.send(sender, claim)

