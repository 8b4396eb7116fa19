"""The relayer account on the chain: fees, gas estimates, signing and broadcasting, receipts, answer status.

Every node error is sorted into a few outcomes the submitter acts on; nothing here touches the
database, so the submitter decides what each outcome means for the queue.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import requests
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)

from kempelen.chain.contracts import Chain, explain_revert
from kempelen.errors import KempelenError
from kempelen.protocol.events import submitted_answers
from kempelen.relay.fees import Fees, suggest_fees
from kempelen.relay.receipts import escrow_decoder
from kempelen.relay.settlement import settled_history

# Extra gas over eth_estimateGas: state can change between estimate and inclusion (another
# relay's answers filling a task), and an out-of-gas revert would cost the whole pack.
GAS_HEADROOM_NUMERATOR, GAS_HEADROOM_DENOMINATOR = 5, 4
GAS_HEADROOM_FLAT = 30_000

FEES_CACHE_SECONDS = 1.0  # blocks come every second or more; a pack a few ms apart needs no new quote
ANSWER_STATUSES = ("None", "Pending", "Paid", "Rejected")

log = logging.getLogger("kempelen.relay.submitter")


class RelayerError(KempelenError):
    """The relayer cannot act: no key, or the chain refuses in a way retrying will not fix."""


class PackReverts(KempelenError):
    """eth_estimateGas says the pack would revert; the message names the escrow's error."""


class Broadcast(enum.Enum):
    SENT = "sent"  # the node took it (or already had it)
    NONCE_USED = "nonce_used"  # another transaction of ours or of the key's owner got this nonce
    UNDERPRICED = "underpriced"  # a pending transaction with this nonce pays more
    NO_FUNDS = "no_funds"  # the relayer cannot pay for gas
    UNREACHABLE = "unreachable"  # no answer: the node may or may not have it
    REJECTED = "rejected"  # any other refusal


@dataclass(frozen=True)
class SignedTx:
    tx_hash: str  # 0x hex
    raw: bytes
    nonce: int
    gas: int
    fees: Fees


def classify_send_error(message: str) -> Broadcast:
    """Sort a node's refusal of eth_sendRawTransaction (geth, anvil, erigon, reth wording)."""
    text = message.lower()
    if "already known" in text or "already imported" in text or "known transaction" in text:
        return Broadcast.SENT
    if "nonce too low" in text or "nonce is too low" in text or "invalid nonce" in text:
        return Broadcast.NONCE_USED
    if "underpriced" in text or "fee too low" in text:
        return Broadcast.UNDERPRICED
    if "insufficient funds" in text or "insufficient balance" in text:
        return Broadcast.NO_FUNDS
    return Broadcast.REJECTED


@dataclass(frozen=True)
class Receipt:
    status: int  # 1 success, 0 reverted
    block_number: int
    logs: list[dict]  # raw JSON-RPC logs, for EventDecoder


class Relayer:
    """Signs and sends submitAnswers transactions from one key to one escrow."""

    def __init__(self, chain: Chain, private_key: str):
        if not private_key:
            raise RelayerError("no relayer key: set KEMPELEN_RELAYER_KEY or pass --relayer-key")
        try:
            self.account = Account.from_key(private_key)
        except (ValueError, TypeError):
            raise RelayerError("the relayer key is not a 32-byte hex private key") from None
        self.chain = chain
        self.w3: Web3 = chain.w3
        self.escrow = to_checksum_address(chain.deployment.escrow)
        self.address = self.account.address
        self._access_lists = True
        self._fees: tuple[float, Fees] | None = None

    def pending_count(self) -> int:
        """Transactions of the relayer the node knows, mined or in its mempool."""
        return self.w3.eth.get_transaction_count(self.address, "pending")

    def mined_count(self) -> int:
        """Nonces the chain has consumed: a transaction with a lower nonce can never be mined."""
        return self.w3.eth.get_transaction_count(self.address, "latest")

    def suggest_fees(self) -> Fees:
        """Fees for a new transaction, asked of the node at most once a second."""
        now = time.monotonic()
        if self._fees is None or now - self._fees[0] > FEES_CACHE_SECONDS:
            block = self.w3.eth.get_block("latest")
            base_fee = block.get("baseFeePerGas")
            fees = (suggest_fees(None, 0, self.w3.eth.gas_price) if base_fee is None
                    else suggest_fees(base_fee, self.w3.eth.max_priority_fee, 0))
            self._fees = (now, fees)
        return self._fees[1]

    def estimate_gas(self, calldata: bytes) -> int:
        """Gas for the pack with headroom; raises PackReverts when the pack would revert.

        eth_createAccessList runs the transaction once and reports its gas; eth_estimateGas
        binary-searches with a dozen runs (300 ms instead of 50 ms for 200 answers on anvil),
        so it is only the fallback for nodes without the former.
        """
        tx = {"from": self.address, "to": self.escrow, "data": "0x" + calldata.hex()}
        used = self._gas_by_access_list(tx) if self._access_lists else None
        if used is None:
            try:
                used = self.w3.eth.estimate_gas(tx)
            except (ContractCustomError, ContractLogicError) as exc:
                data = getattr(exc, "data", None)
                raise PackReverts(self._explain(data if isinstance(data, (str, bytes)) else None)) from None
        return used * GAS_HEADROOM_NUMERATOR // GAS_HEADROOM_DENOMINATOR + GAS_HEADROOM_FLAT

    def _gas_by_access_list(self, tx: dict) -> int | None:
        reply = self.w3.provider.make_request("eth_createAccessList", [tx, "latest"])
        error = reply.get("error")
        if error is None:
            return int(reply["result"]["gasUsed"], 16)
        message = str(error.get("message", ""))
        if error.get("code") == 3 or "revert" in message.lower():
            raise PackReverts(self._explain(error.get("data")))
        self._access_lists = False  # not supported here: estimate from now on
        return None

    def _explain(self, data) -> str:
        message, _, _ = explain_revert(data if isinstance(data, (str, bytes)) else None, self.chain.errors)
        return message

    def sign(self, calldata: bytes, nonce: int, gas: int, fees: Fees) -> SignedTx:
        tx = {"chainId": self.chain.chain_id, "nonce": nonce, "to": self.escrow, "value": 0,
              "gas": gas, "data": calldata, **fees.tx_fields()}
        raw = bytes(self.account.sign_transaction(tx).raw_transaction)
        return SignedTx("0x" + keccak(raw).hex(), raw, nonce, gas, fees)

    def broadcast(self, raw: bytes) -> tuple[Broadcast, str]:
        """Send a signed transaction; returns the outcome and the node's words."""
        try:
            self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            message = str(exc.rpc_response.get("error", {}).get("message", exc)) if exc.rpc_response else str(exc)
            return classify_send_error(message), message
        except (requests.RequestException, OSError, TimeoutError) as exc:
            return Broadcast.UNREACHABLE, f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # older providers raise ValueError({'code':..,'message':..})
            return classify_send_error(str(exc)), str(exc)
        return Broadcast.SENT, "sent"

    def receipt(self, tx_hash: str) -> Receipt | None:
        """The mined receipt, raw: web3's formatting of hundreds of logs costs more than the call."""
        reply = self.w3.provider.make_request("eth_getTransactionReceipt", [tx_hash])
        if "error" in reply:
            raise RelayerError(f"eth_getTransactionReceipt {tx_hash}: {reply['error'].get('message')}")
        raw = reply.get("result")
        if raw is None or raw.get("blockNumber") is None:
            return None
        return Receipt(int(raw["status"], 16), int(raw["blockNumber"], 16), raw["logs"])

    def is_known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction, mined or in its mempool."""
        try:
            return self.w3.eth.get_transaction(tx_hash) is not None
        except TransactionNotFound:
            return False

    def answer_status(self, batch_id: int, worker: str, task_index: int) -> str:
        status, _ = self.chain.escrow.functions.answerStatus(
            batch_id, to_checksum_address(worker), task_index).call()
        return ANSWER_STATUSES[status]

    def is_settled(self, batch_id: int, worker: str, task_index: int) -> bool:
        """Whether a requester's settlement paid the answer: the escrow keeps only a digest of
        each worker's settled words, so the batch's AnswersSettled events answer it."""
        return settled_history(self.chain, batch_id).book.is_settled(worker, task_index)

    def chain_time(self) -> int:
        """The latest block's timestamp: hold times are judged by the chain's clock."""
        return self.w3.eth.get_block("latest")["timestamp"]

    def submitted_digest(self, batch_id: int, worker: str, task_index: int) -> tuple[bytes, int, str] | None:
        """(answerDigest, block, tx hash) of the answer as the escrow accepted it, if any: from the
        AnswersSubmitted events of the batch and worker (topics), the first naming the task."""
        decoder = escrow_decoder()
        topics = [decoder.topics("AnswersSubmitted")[0], "0x" + batch_id.to_bytes(32, "big").hex(),
                  "0x" + bytes(12).hex() + worker.lower().removeprefix("0x")]
        logs = self.w3.eth.get_logs({"address": self.escrow, "topics": topics,
                                     "fromBlock": self.chain.deployment.deploy_block, "toBlock": "latest"})
        for event in decoder.decode_all(logs):
            offset = task_index - event.args["firstTask"]
            if not 0 <= offset < 256 or not event.args["tasks"] >> offset & 1:
                continue  # another group, or a task of the group this event does not name
            try:
                answers = dict(submitted_answers(event.args))
            except ValueError as exc:  # not the escrow's shape: the answer status decides alone
                log.error("ignoring malformed AnswersSubmitted in %s: %s", event.transaction_hash, exc)
                continue
            return answers[task_index], event.block_number, event.transaction_hash
        return None
