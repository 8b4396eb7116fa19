"""Reading one escrow's history from JSON-RPC: logs, submitAnswers calldata, timestamps, state.

All I/O of the chain side lives here; what it returns is plain data for the pure checks.
State (balances, batch records, reputation counters) is read at the audited block, so
the node must still hold that block's state (any full node for recent blocks; an
archive node for old ones; anvil --prune-history only for the latest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from eth_abi import decode as abi_decode
from eth_utils import is_address, to_checksum_address

from kempelen.audit.fastabi import decode_submit_args, decode_submit_args_strict
from kempelen.audit.model import ETH, AuditError, Progress
from kempelen.audit.rpc import Rpc, RpcError, call_data, decode_result, selector
from kempelen.chain import artifacts
from kempelen.protocol.events import Event, EventDecoder, checksum
from kempelen.protocol.signing import SettledWord, Settlement

SUBMIT_SIGNATURE = "submitAnswers((uint64,uint32,bytes32,address)[],bytes[])"
SUBMIT_SELECTOR = selector(SUBMIT_SIGNATURE)
_BATCH_TYPE = "(address,uint40,uint32,uint8,address,uint32,uint32,uint128,uint128,uint128,uint64,bytes32)"
SETTLE_TYPES = ["(uint64,uint32,bytes32,uint256,bytes,(address,uint32,uint256)[])", "uint256[]", "bytes"]
SETTLE_SELECTOR = selector(f"settle({','.join(SETTLE_TYPES)})")
# TaskEscrow is OpenZeppelin Multicall: calls may arrive as multicall(bytes[]) of the escrow's own
# calls (delegatecalls to itself, which call traces do not show as CALLs to the escrow).
MULTICALL_SELECTOR = selector("multicall(bytes[])")
MULTICALL_DEPTH = 4  # a multicall of multicalls of ...: deeper is not decoded
SUBMISSION_EVENTS = ("AnswersSubmitted", "AnswerSkipped")
REVIEW_EVENTS = ("AnswersApproved", "AnswersRejected", "AnswersReleased")

# (batchId, taskIndex, answerDigest, worker) and the signature bytes, as relayed in calldata.
CalldataAnswer = tuple[tuple[int, int, bytes, str], bytes]


class SettleCall(NamedTuple):
    """A settlement as posted with `settle`, the worker's earlier bits it passed per entry
    (`before`, unsigned), and the requester's signature over the settlement."""

    settlement: Settlement
    before: tuple[int, ...]
    signature: bytes


@dataclass
class ChainState:
    """What the contracts say at the audited block; None where a read is not supported."""

    balances: dict[str, int] = field(default_factory=dict)  # token -> escrow's balance
    batches: dict[int, tuple[int, int] | None] = field(default_factory=dict)  # id -> (funds, pending)
    # ISettlement, for batches with settlements: id -> settlementOf (sequence, root, cumulativeTotal),
    # and (batch, worker) -> earningsOf (settled, claimed) for every worker settled or claiming.
    settlements: dict[int, tuple[int, bytes, int] | None] = field(default_factory=dict)
    earnings: dict[tuple[int, str], tuple[int, int] | None] = field(default_factory=dict)
    accounts: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (token, account)
    worker_records: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    requester_records: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    token_meta: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol, decimals


@dataclass
class ChainHistory:
    chain_id: int
    escrow: str
    reputation: str | None
    from_block: int
    to_block: int
    to_timestamp: int
    events: list[Event]  # the escrow's and the reputation's, in chain order
    submissions: dict[str, list[CalldataAnswer] | None]  # tx -> answers relayed to the escrow
    senders: dict[str, tuple[str, str | None]]  # tx -> (from, to)
    block_times: dict[int, int]
    state: ChainState
    rpc_seconds: float = 0.0
    decode_seconds: float = 0.0
    settle_calls: dict[str, list[SettleCall] | None] = field(default_factory=dict)  # tx -> settle calldata


def parse_address(text: str, what: str = "--escrow") -> str:
    if not is_address(text):
        raise AuditError(f"{what} is not an Ethereum address: {text!r}")
    return to_checksum_address(text)


def unwrap_multicall(decode: Callable[[bytes], list | None], data: bytes, depth: int = 0) -> list | None:
    """`decode` of a call, or of every call a multicall(bytes[]) carries (concatenated); None if
    none of them is one `decode` reads."""
    if data[:4] != MULTICALL_SELECTOR:
        return decode(data)
    if depth >= MULTICALL_DEPTH:
        return None
    try:
        (calls,) = abi_decode(["bytes[]"], data[4:])
    except Exception:  # noqa: BLE001 - eth-abi raises many unrelated types on malformed input
        return None
    found = [unwrap_multicall(decode, bytes(call), depth + 1) for call in calls]
    found = [item for items in found if items is not None for item in items]
    return found or None


def decode_submit_calldata(data: bytes) -> list[CalldataAnswer] | None:
    """The answers and signatures of one submitAnswers call; None if it is not one."""
    if data[:4] != SUBMIT_SELECTOR:
        return None
    try:
        return decode_submit_args(data[4:])
    except ValueError:
        pass
    try:  # not the canonical layout: let eth-abi judge it
        return decode_submit_args_strict(data[4:])
    except Exception:  # noqa: BLE001 - eth-abi raises many unrelated types on malformed input
        return None


def decode_settle_calldata(data: bytes) -> list[SettleCall] | None:
    """The settlement, `before` and signature of one `settle` call; None if it is not one."""
    if data[:4] != SETTLE_SELECTOR:
        return None
    try:
        (batch_id, sequence, root, total, manifest, words), before, signature = abi_decode(SETTLE_TYPES, data[4:])
    except Exception:  # noqa: BLE001 - eth-abi raises many unrelated types on malformed input
        return None
    settled = tuple(SettledWord(checksum(worker), index, bits) for worker, index, bits in words)
    return [SettleCall(Settlement(batch_id, sequence, root, total, manifest, settled), tuple(before), signature)]


class Scanner:
    """Reads everything the checks need about one escrow over a block range."""

    def __init__(self, rpc: Rpc, escrow: str, progress: Progress | None = None, log_range: int = 50_000):
        self.rpc = rpc
        self.escrow = parse_address(escrow)
        self.progress = progress or Progress()
        self.log_range = log_range
        escrow_abi = artifacts.load("TaskEscrow").abi
        self.decoder = EventDecoder(escrow_abi, artifacts.load("Reputation").abi)
        self.decode_seconds = 0.0

    def scan(self, from_block: int = 0, to_block: int | None = None) -> ChainHistory:
        started = time.perf_counter()
        chain_id = int(self.rpc.call("eth_chainId"), 16)
        latest = int(self.rpc.call("eth_blockNumber"), 16)
        to_block = latest if to_block is None else to_block
        if not 0 <= from_block <= to_block <= latest:
            raise AuditError(f"block range {from_block}..{to_block} is outside 0..{latest} (the chain's head)")
        if self.rpc.call("eth_getCode", self.escrow, "latest") in (None, "0x", "0x0"):
            raise AuditError(f"no contract at {self.escrow} on chain {chain_id}")
        reputation = self._reputation(to_block)
        addresses = [self.escrow] + ([reputation] if reputation else [])
        events = self._events(addresses, from_block, to_block)
        submit_txs = {e.transaction_hash for e in events if e.name in SUBMISSION_EVENTS and e.address == self.escrow}
        review_txs = {e.transaction_hash for e in events if e.name in REVIEW_EVENTS and e.address == self.escrow}
        settle_txs = {e.transaction_hash for e in events if e.name == "SettlementPosted" and e.address == self.escrow}
        submissions, senders, settle_calls = self._transactions(sorted(submit_txs), sorted(review_txs),
                                                                sorted(settle_txs))
        blocks = {e.block_number for e in events if e.address == self.escrow} | {to_block}
        block_times = self._timestamps(sorted(blocks))
        state = self._state(events, reputation, to_block)
        return ChainHistory(
            chain_id=chain_id, escrow=self.escrow, reputation=reputation, from_block=from_block,
            to_block=to_block, to_timestamp=block_times[to_block], events=events,
            submissions=submissions, senders=senders, block_times=block_times, state=state,
            rpc_seconds=time.perf_counter() - started - self.decode_seconds,
            decode_seconds=self.decode_seconds, settle_calls=settle_calls,
        )

    # -- logs and transactions --------------------------------------------------------

    def _reputation(self, block: int) -> str | None:
        try:
            result = self.rpc.eth_call(self.escrow, call_data("reputation()", [], []), block)
            (address,) = decode_result(["address"], result)
        except (RpcError, ValueError, TypeError):
            return None
        address = to_checksum_address(address)
        return None if address == ETH else address

    def _events(self, addresses: list[str], from_block: int, to_block: int) -> list[Event]:
        """eth_getLogs in ranges, halving a range the node refuses as too large."""
        self.progress.begin("scanning blocks", to_block - from_block + 1)
        logs: list[dict] = []
        start, size = from_block, self.log_range
        while start <= to_block:
            end = min(start + size - 1, to_block)
            try:
                logs.extend(self.rpc.call(
                    "eth_getLogs", {"address": addresses, "fromBlock": hex(start), "toBlock": hex(end)}))
            except RpcError:
                if size == 1:
                    raise
                size = max(size // 2, 1)
                continue
            self.progress.advance(end - start + 1)
            start = end + 1
        self.progress.end()
        began = time.perf_counter()
        events = self.decoder.decode_all(logs)
        events.sort(key=lambda e: (e.block_number, e.log_index))
        self.decode_seconds += time.perf_counter() - began
        return events

    def _transactions(self, submit_txs: list[str], review_txs: list[str], settle_txs: list[str]):
        txs = list(dict.fromkeys(submit_txs + review_txs + settle_txs))
        self.progress.begin("reading transactions", len(txs))
        replies = self.rpc.batch([("eth_getTransactionByHash", [tx]) for tx in txs])
        self.progress.advance(len(txs))
        self.progress.end()
        wanted, settles = set(submit_txs), set(settle_txs)
        submissions: dict[str, list[CalldataAnswer] | None] = {}
        settle_calls: dict[str, list[SettleCall] | None] = {}
        senders: dict[str, tuple[str, str | None]] = {}
        began = time.perf_counter()
        for tx_hash, tx in zip(txs, replies):
            if tx is None:
                raise AuditError(f"the node does not know transaction {tx_hash} it logged")
            to = to_checksum_address(tx["to"]) if tx.get("to") else None
            senders[tx_hash] = (to_checksum_address(tx["from"]), to)
            for calls, decode, kept in ((wanted, decode_submit_calldata, submissions),
                                        (settles, decode_settle_calldata, settle_calls)):
                if tx_hash in calls:
                    direct = unwrap_multicall(decode, bytes.fromhex(tx["input"][2:])) if to == self.escrow else None
                    kept[tx_hash] = direct if direct is not None else self._traced(tx_hash, decode)
        self.decode_seconds += time.perf_counter() - began
        return submissions, senders, settle_calls

    def _traced(self, tx_hash: str, decode) -> list | None:
        """submitAnswers or settle reached through another contract: the inner calls in a call trace."""
        try:
            trace = self.rpc.call("debug_traceTransaction", tx_hash, {"tracer": "callTracer"})
        except RpcError:
            return None
        found: list = []
        stack = [trace] if isinstance(trace, dict) else []
        while stack:
            frame = stack.pop(0)
            to = frame.get("to")
            if to and to_checksum_address(to) == self.escrow and frame.get("type") == "CALL":
                decoded = unwrap_multicall(decode, bytes.fromhex(frame.get("input", "0x")[2:]))
                if decoded is not None and not frame.get("error"):
                    found.extend(decoded)
            stack[0:0] = frame.get("calls") or []
        return found or None

    def _timestamps(self, blocks: list[int]) -> dict[int, int]:
        replies = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in blocks])
        return {n: int(block["timestamp"], 16) for n, block in zip(blocks, replies)}

    # -- state at the audited block ---------------------------------------------------

    def _state(self, events: list[Event], reputation: str | None, block: int) -> ChainState:
        state = ChainState()
        mine = [e for e in events if e.address == self.escrow]
        tokens = {ETH} | {e.args["token"] for e in mine if e.name in ("BatchCreated", "Withdrawn")}
        batch_ids = sorted({e.args["batchId"] for e in mine if "batchId" in e.args})
        accounts = _credited_accounts(mine)
        calls: list[tuple[str, list]] = []
        keys: list[tuple] = []

        def eth_call(key: tuple, to: str, signature: str, types: list[str], args: list) -> None:
            keys.append(key)
            calls.append(("eth_call", [{"to": to, "data": call_data(signature, types, args)}, hex(block)]))

        for token in sorted(tokens):
            if token != ETH:
                eth_call(("balance", token), token, "balanceOf(address)", ["address"], [self.escrow])
                eth_call(("symbol", token), token, "symbol()", [], [])
                eth_call(("decimals", token), token, "decimals()", [], [])
        for batch_id in batch_ids:
            eth_call(("batch", batch_id), self.escrow, "batch(uint64)", ["uint64"], [batch_id])
        for batch_id, worker in sorted(_settled_workers(mine), key=lambda k: (k[0], k[1] or "")):
            if worker is None:
                eth_call(("settlement", batch_id), self.escrow, "settlementOf(uint64)", ["uint64"], [batch_id])
            else:
                eth_call(("earnings", batch_id, worker), self.escrow, "earningsOf(uint64,address)",
                         ["uint64", "address"], [batch_id, worker])
        for token, account in sorted(accounts):
            eth_call(("account", token, account), self.escrow, "balanceOf(address,address)",
                     ["address", "address"], [token, account])
        if reputation:
            rep_events = [e for e in events if e.address == reputation and e.name == "OutcomesRecorded"]
            for worker in sorted({worker for e in rep_events for worker in e.args["workers"]}):
                eth_call(("worker", worker), reputation, "workerRecord(address)", ["address"], [worker])
            for requester in sorted({e.args["requester"] for e in rep_events}):
                eth_call(("requester", requester), reputation, "requesterRecord(address)", ["address"], [requester])
        try:
            state.balances[ETH] = int(self.rpc.call("eth_getBalance", self.escrow, hex(block)), 16)
        except RpcError as exc:
            raise AuditError(
                f"the node has no state at block {block} ({exc}); audit up to a recent block "
                "or use an archive node") from None
        for key, result in zip(keys, self.rpc.batch(calls, allow_errors=True)):
            _store_state(state, key, result)
        state.token_meta[ETH] = ("ETH", 18)
        return state


def _settled_workers(events: list[Event]) -> set[tuple[int, str | None]]:
    """(batch, None) for every batch with a settlement, (batch, worker) for its settled or claiming
    workers: the settlement state worth reading."""
    found: set[tuple[int, str | None]] = set()
    for e in events:
        if e.name == "SettlementPosted":
            found.add((e.args["batchId"], None))
        elif e.name == "AnswersSettled":
            found.update((e.args["batchId"], word["worker"]) for word in e.args["settled"])
        elif e.name == "EarningsClaimed":
            found.add((e.args["batchId"], e.args["worker"]))
    return found


def _credited_accounts(events: list[Event]) -> set[tuple[str, str]]:
    """(token, account) pairs the escrow ever owed something: workers, relays, bonus takers."""
    token_of = {e.args["batchId"]: e.args["token"] for e in events if e.name == "BatchCreated"}
    accounts: set[tuple[str, str]] = set()
    for e in events:
        if e.name == "Withdrawn":
            accounts.add((e.args["token"], e.args["account"]))
        elif e.name in ("AnswersApproved", "AnswersReleased", "BonusPaid", "AnswersSubmitted", "SettlementPosted",
                        "EarningsClaimed"):
            token = token_of.get(e.args["batchId"])
            if token is not None:
                account = e.args.get("relayer") or e.args.get("poster") or e.args["worker"]
                accounts.add((token, account))
    return accounts


def _store_state(state: ChainState, key: tuple, result) -> None:
    kind = key[0]
    ok = isinstance(result, str) and len(result) > 2
    try:
        if kind == "balance":
            state.balances[key[1]] = decode_result(["uint256"], result)[0] if ok else 0
        elif kind == "symbol":
            symbol = decode_result(["string"], result)[0] if ok else "?"
            state.token_meta[key[1]] = (symbol, state.token_meta.get(key[1], ("?", 18))[1])
        elif kind == "decimals":
            decimals = decode_result(["uint8"], result)[0] if ok else 18
            state.token_meta[key[1]] = (state.token_meta.get(key[1], ("?", 18))[0], decimals)
        elif kind == "batch":
            record = decode_result([_BATCH_TYPE], result)[0] if ok else None
            state.batches[key[1]] = (record[9], record[10]) if record else None
        elif kind == "settlement":
            state.settlements[key[1]] = tuple(decode_result(["uint32", "bytes32", "uint256"], result)) if ok else None
        elif kind == "earnings":
            state.earnings[(key[1], key[2])] = tuple(decode_result(["uint256", "uint256"], result)) if ok else None
        elif kind == "account":
            state.accounts[(key[1], key[2])] = decode_result(["uint256"], result)[0] if ok else None
        elif kind in ("worker", "requester") and ok:
            records = state.worker_records if kind == "worker" else state.requester_records
            records[key[1]] = tuple(decode_result(["(uint64,uint64,uint64)"], result)[0])
    except Exception:  # noqa: BLE001 - a contract answering in the wrong shape: treat as unsupported
        if kind == "batch":
            state.batches[key[1]] = None
        elif kind == "settlement":
            state.settlements[key[1]] = None
        elif kind == "earnings":
            state.earnings[(key[1], key[2])] = None
