"""The worker's side: find tasks, lease one, read its payload, sign and post an answer, get paid.

Workers need no gas: answers go through a relay, and withdrawals can be signed and relayed too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kempelen.chain.contracts import Chain
from kempelen.errors import KempelenError
from kempelen.protocol.signing import Domain, Withdrawal, sign
from kempelen.sdk import settlement
from kempelen.sdk.answers import SignedAnswer, sign_answer
from kempelen.sdk.keys import Signer
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.settlement import ClaimResult

FINAL_STATUSES = {"skipped", "rejected", "paid", "approved", "released"}


@dataclass(frozen=True)
class TaskRef:
    batch_id: int
    task_index: int


class Worker:
    def __init__(self, relay: RelayClient, signer: Signer, chain: Chain | None = None):
        self.relay = relay
        self.signer = signer
        self.chain = chain  # only for withdrawals; answers need just the relay
        self._domain = chain.domain if chain else None

    @property
    def address(self) -> str:
        return self.signer.address

    def open_tasks(self, batch_id: int | None = None, limit: int = 50) -> list[dict]:
        return self.relay.open_tasks(batch_id, limit)

    def lease(self, task: TaskRef | dict) -> dict:
        ref = _ref(task)
        return self.relay.lease(ref.batch_id, ref.task_index)

    def payload(self, task: TaskRef | dict) -> bytes:
        ref = _ref(task)
        return self.relay.payload(ref.batch_id, ref.task_index)

    @property
    def domain(self) -> Domain:
        """What answers are signed for: the chain's deployment, or else the chain and escrow
        the relay names (a relay naming another escrow only gets signatures that escrow refuses)."""
        if self._domain is None:
            health = self.relay.health()
            self._domain = Domain(int(health["chain_id"]), health["escrow"])
        return self._domain

    def sign(self, task: TaskRef | dict, answer: object) -> SignedAnswer:
        ref = _ref(task)
        return sign_answer(self.domain, self.signer, ref.batch_id, ref.task_index, answer)

    def submit(self, task: TaskRef | dict, answer: object) -> dict:
        """Sign the answer here (its CID computed locally) and post it; returns the receipt."""
        return self.relay.post_answer(self.sign(task, answer))

    def status(self, receipt: dict | str) -> dict:
        return self.relay.receipt(receipt if isinstance(receipt, str) else receipt["receipt_id"])

    def wait(self, receipt: dict | str, until: set[str] = frozenset({"onchain"} | FINAL_STATUSES),
             timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(receipt)
            if current["status"] in until or time.monotonic() > deadline:
                return current
            time.sleep(0.2)

    def earnings(self) -> dict:
        return self.relay.earnings(self.address)

    def claim(self, batch_ids: Iterable[int] | None = None, via_relay: bool = False,
              sender: Signer | None = None) -> ClaimResult:
        """Claim this worker's settled earnings (docs/settlement.md) in one claimMany: per batch,
        the leaf of its latest settlement minus what was claimed, proved against its root.

        Batches default to every settled one (from the chain's settlements, or without a chain
        from the relay's receipts). The transaction is the worker's own (needs gas and chain=),
        `sender`'s, or `via_relay` the relay's (claims only ever credit the worker, so anyone may
        send them). The money lands in the escrow balance: withdraw it after.
        """
        return settlement.claim(self, batch_ids, via_relay=via_relay, sender=sender)

    def withdraw(self, token: str = "ETH", relayer: Signer | None = None) -> int:
        """Pay out the whole balance in `token` to this worker. With `relayer`, the worker only
        signs a Withdrawal and the relayer sends it (the worker holds no gas)."""
        if self.chain is None:
            raise KempelenError("withdrawing needs the chain: pass chain=")
        address = self.chain.token_address(token)
        balance = self.chain.escrow.functions.balanceOf(address, self.address).call()
        if balance == 0:
            raise KempelenError(f"nothing to withdraw in {token}")
        if relayer is None:
            self.chain.transact(self.signer.private_key, self.chain.escrow.functions.withdraw(address))
            return balance
        nonce = self.chain.escrow.functions.nonces(self.address).call()
        now = self.chain.w3.eth.get_block("latest")["timestamp"]  # the chain's clock, not ours
        withdrawal = Withdrawal(self.address, address, nonce, now + 3600)
        signature = sign(self.chain.domain.digest(withdrawal.struct_hash()), self.signer.private_key)
        call = self.chain.escrow.functions.withdrawFor(self.address, address, withdrawal.deadline, signature)
        self.chain.transact(relayer.private_key, call)
        return balance


def _ref(task: TaskRef | dict) -> TaskRef:
    if isinstance(task, TaskRef):
        return task
    return TaskRef(int(task["batch_id"]), int(task["task_index"]))


def decode_payload(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


