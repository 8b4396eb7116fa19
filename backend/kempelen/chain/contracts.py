"""A web3 connection with the protocol's contracts, transactions signed locally, reverts explained."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted

from kempelen.chain import artifacts
from kempelen.chain.deployment import Deployment
from kempelen.errors import KempelenError
from kempelen.protocol.signing import Domain

ETH = "0x0000000000000000000000000000000000000000"


class ChainUnavailable(KempelenError):
    """The JSON-RPC endpoint does not answer."""


class TransactionReverted(KempelenError):
    """A transaction (or its gas estimate) reverted; the message names the contract's error."""

    def __init__(self, message: str, error: str | None = None, args: dict | None = None):
        super().__init__(message)
        self.error = error
        self.error_args = args or {}


@dataclass(frozen=True)
class _ErrorSpec:
    name: str
    inputs: list


def error_table(*abis: list) -> dict[bytes, _ErrorSpec]:
    """Custom errors of the given ABIs by their 4-byte selector."""
    table: dict[bytes, _ErrorSpec] = {}
    for abi in abis:
        for entry in abi:
            if entry["type"] != "error":
                continue
            signature = f"{entry['name']}({','.join(_abi_type(i) for i in entry['inputs'])})"
            table[keccak(text=signature)[:4]] = _ErrorSpec(entry["name"], entry["inputs"])
    return table


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def explain_revert(data: str | bytes | None, table: dict[bytes, _ErrorSpec]) -> tuple[str, str | None, dict]:
    """Turn revert data into 'ErrorName(arg=value, ...)'."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x")) if data.startswith("0x") else None
    if not data or len(data) < 4:
        return "reverted without a reason", None, {}
    spec = table.get(data[:4])
    if spec is None:
        if data[:4] == keccak(text="Error(string)")[:4]:
            (reason,) = abi_decode(["string"], data[4:])
            return reason, "Error", {"reason": reason}
        return f"reverted with unknown error 0x{data[:4].hex()}", None, {}
    values = abi_decode([_abi_type(i) for i in spec.inputs], data[4:])
    args = {i["name"]: (v.hex() if isinstance(v, bytes) else v) for i, v in zip(spec.inputs, values)}
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    return f"{spec.name}({shown})", spec.name, args


class Chain:
    """The protocol on one chain: escrow, reputation and tokens, plus a signing transactor."""

    def __init__(self, rpc_url: str, deployment: Deployment | None = None, *, timeout: float = 30):
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        try:
            self.chain_id = self.w3.eth.chain_id
        except Exception as exc:  # requests/httpx connection errors vary by provider
            raise ChainUnavailable(f"no Ethereum JSON-RPC answers at {rpc_url} ({type(exc).__name__})") from None
        self.deployment = deployment or Deployment.load(self.chain_id)
        self.escrow = self.w3.eth.contract(
            address=to_checksum_address(self.deployment.escrow), abi=artifacts.load("TaskEscrow").abi
        )
        self.reputation = self.w3.eth.contract(
            address=to_checksum_address(self.deployment.reputation), abi=artifacts.load("Reputation").abi
        )
        self.errors = error_table(artifacts.load("TaskEscrow").abi, artifacts.load("Reputation").abi,
                                  artifacts.load("TestStablecoin").abi)

    @cached_property
    def domain(self) -> Domain:
        return Domain(self.chain_id, self.deployment.escrow)

    def token(self, address: str):
        """An ERC-20 (with EIP-2612 permit) at `address`."""
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifacts.load("TestStablecoin").abi)

    def token_address(self, symbol_or_address: str) -> str:
        """Resolve 'ETH', a symbol of the deployment (e.g. 'USDC') or an address."""
        if symbol_or_address.upper() == "ETH":
            return ETH
        if symbol_or_address in self.deployment.tokens:
            return to_checksum_address(self.deployment.tokens[symbol_or_address])
        if Web3.is_address(symbol_or_address):
            return to_checksum_address(symbol_or_address)
        known = ", ".join(["ETH", *self.deployment.tokens]) or "ETH"
        raise KempelenError(f"unknown token {symbol_or_address!r}: use one of {known} or an address")

    def transact(self, private_key: str, call, *, value: int = 0, gas: int | None = None,
                 wait: bool = True, timeout: float = 120):
        """Sign `call` (a bound contract function) with `private_key`, send it, return its receipt."""
        account = Account.from_key(private_key)
        params = {"from": account.address, "value": value, "chainId": self.chain_id,
                  "nonce": self.w3.eth.get_transaction_count(account.address, "pending")}
        try:
            params["gas"] = gas or int(call.estimate_gas(params) * 1.2) + 10_000
            tx = call.build_transaction(params)
        except (ContractCustomError, ContractLogicError) as exc:
            self._raise_revert(exc)
        if "maxFeePerGas" not in tx and "gasPrice" not in tx:
            tx["gasPrice"] = self.w3.eth.gas_price
        signed = account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        if not wait:
            return tx_hash
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
        except TimeExhausted:
            raise KempelenError(f"transaction {tx_hash.hex()} not mined within {timeout:.0f}s") from None
        if receipt.status != 1:
            raise TransactionReverted(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def _raise_revert(self, exc: Exception):
        data = getattr(exc, "data", None)
        message, name, args = explain_revert(data if isinstance(data, (str, bytes)) else None, self.errors)
        if name is None and getattr(exc, "message", None):
            message = str(exc.message)
        raise TransactionReverted(message, name, args) from None


def deploy_protocol(rpc_url: str, deployer_key: str, *, test_token: bool = True,
                    network: str = "development") -> Deployment:
    """Deploy Reputation and TaskEscrow (and a 6-decimal test stablecoin) with plain web3.py."""
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    deployer = Account.from_key(deployer_key)
    chain_id = w3.eth.chain_id

    def send(tx: dict) -> dict:
        tx = {**tx, "from": deployer.address, "chainId": chain_id,
              "nonce": w3.eth.get_transaction_count(deployer.address, "pending")}
        if "maxFeePerGas" not in tx and "gasPrice" not in tx:
            tx["gasPrice"] = w3.eth.gas_price
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.2)
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction), poll_latency=0.05)
        if receipt.status != 1:
            raise TransactionReverted(f"deployment transaction reverted: {receipt.transactionHash.hex()}")
        return receipt

    def create(name: str, *args) -> str:
        art = artifacts.load(name)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        return send(factory.constructor(*args).build_transaction({"from": deployer.address}))["contractAddress"]

    first_block = w3.eth.block_number
    reputation = create("Reputation", deployer.address)
    escrow = create("TaskEscrow", reputation)
    rep = w3.eth.contract(address=reputation, abi=artifacts.load("Reputation").abi)
    send(rep.functions.setEscrow(escrow, True).build_transaction({"from": deployer.address}))
    tokens = {"USDC": create("TestStablecoin")} if test_token else {}
    return Deployment(chain_id=chain_id, escrow=escrow, reputation=reputation, deploy_block=first_block,
                      network=network, deployer=deployer.address, tokens=tokens)
