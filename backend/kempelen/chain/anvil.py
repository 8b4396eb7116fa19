"""A local anvil chain started and stopped by PID: for tests, benchmarks, the demo and `kempelen up`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from eth_account import Account

from kempelen.errors import KempelenError

# anvil's well-known development mnemonic: its accounts are public, for local chains only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


class AnvilError(KempelenError):
    """anvil could not be found or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dev_keys(count: int = 10, mnemonic: str = DEV_MNEMONIC) -> list[str]:
    """Private keys (0x hex) of the first `count` accounts anvil funds for `mnemonic`."""
    Account.enable_unaudited_hdwallet_features()
    return [
        "0x" + bytes(Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key).hex()
        for i in range(count)
    ]


def _anvil_binary() -> str:
    found = shutil.which("anvil")
    if found:
        return found
    repo_bin = Path(__file__).resolve().parents[3] / "node_modules" / ".bin" / "anvil"
    if repo_bin.exists():
        return str(repo_bin)
    raise AnvilError("anvil not found: run `make bootstrap` (it installs anvil from npm)")


class Anvil:
    """One anvil process on 127.0.0.1; use as a context manager or call start()/stop().

    Runs the cancun hardfork with pruned history, which keeps it fast and its disk use flat
    on long runs (the default hardfork slows down as the chain grows).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        chain_id: int = 31337,
        accounts: int = 10,
        block_time: float | None = None,
        extra_args: tuple[str, ...] = (),
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.chain_id = chain_id
        self.accounts = accounts
        self.block_time = block_time
        self.extra_args = extra_args
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Anvil:
        args = [
            _anvil_binary(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--hardfork", "cancun",
            "--prune-history",
            "--gas-limit", "30000000",
            "--base-fee", "0",
            *(("--block-time", str(self.block_time)) if self.block_time else ()),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AnvilError(f"anvil exited with code {self.process.returncode} (port {self.port})")
            try:
                reply = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1)
                if reply.status_code == 200 and "result" in reply.json():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AnvilError(f"anvil did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
