"""How the demo's signed answers reach the chain: through a relay, or directly."""

from __future__ import annotations

from typing import Protocol

from kempelen.chain.contracts import Chain
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.signing import Withdrawal
from kempelen.sdk.answers import SignedAnswer, sign_answer, submit_direct
from kempelen.sdk.history import AnswerRecord
from kempelen.sdk.keys import Signer


class Transport(Protocol):
    def describe(self) -> str: ...

    def submit(self, worker: Signer, batch_id: int, task_index: int, answer: object) -> None: ...

    def wait_onchain(self) -> None: ...

    def release(self, batch_id: int, answers: list[AnswerRecord]) -> None: ...

    def withdraw_for(self, withdrawal: Withdrawal, signature: bytes) -> None: ...


class DirectTransport:
    """The operator's key submits signed answers itself, 100 per transaction: what a relay
    does, without the HTTP service (the protocol needs no relay)."""

    def __init__(self, chain: Chain, operator: Signer, store: ContentStore, per_tx: int = 100):
        self.chain, self.operator, self.store, self.per_tx = chain, operator, store, per_tx
        self.queue: list[SignedAnswer] = []

    def __enter__(self) -> DirectTransport:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def describe(self) -> str:
        return "direct submission by the operator (no relay)"

    def submit(self, worker: Signer, batch_id: int, task_index: int, answer: object) -> None:
        signed = sign_answer(self.chain.domain, worker, batch_id, task_index, answer)
        self.store.put(signed.payload)  # pinned under its CID, as a relay would
        self.queue.append(signed)
        if len(self.queue) >= self.per_tx:
            self.wait_onchain()

    def wait_onchain(self) -> None:
        while self.queue:
            chunk, self.queue = self.queue[: self.per_tx], self.queue[self.per_tx:]
            submit_direct(self.chain, self.operator, chunk)

    def release(self, batch_id: int, answers: list[AnswerRecord]) -> None:
        for start in range(0, len(answers), 150):
            refs = [(a.worker, a.task_index) for a in answers[start:start + 150]]
            self.chain.transact(self.operator.private_key, self.chain.escrow.functions.release(batch_id, refs))

    def withdraw_for(self, withdrawal: Withdrawal, signature: bytes) -> None:
        call = self.chain.escrow.functions.withdrawFor(withdrawal.account, withdrawal.token,
                                                      withdrawal.deadline, signature)
        self.chain.transact(self.operator.private_key, call)
