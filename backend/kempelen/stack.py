"""The local stack on one machine: anvil, the deployed protocol, a test stablecoin, and the relay
(API + submitter + indexer, serving the embedded content store). Everything on 127.0.0.1,
every process stopped by its own PID. Used by `kempelen up` and `make demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kempelen.chain.anvil import Anvil, dev_keys, free_port
from kempelen.chain.contracts import Chain, deploy_protocol
from kempelen.chain.deployment import Deployment
from kempelen.errors import KempelenError
from kempelen.protocol.signing import address_of

USDC_PER_ACCOUNT = 10_000 * 10**6


class StackError(KempelenError):
    """A part of the local stack did not start."""


@dataclass(frozen=True)
class StackInfo:
    rpc_url: str
    relay_url: str
    deployment: Deployment
    home: Path
    database_url: str
    store_dir: Path
    keys: tuple[str, ...]  # anvil's public dev keys: keys[0] runs the relay


class LocalStack:
    def __init__(self, home: Path, *, chain_port: int | None = None, relay_port: int | None = None,
                 relay_workers: int = 2):
        self.home = home
        self.chain_port = chain_port or free_port()
        self.relay_port = relay_port or free_port()
        self.relay_workers = relay_workers
        self.anvil: Anvil | None = None
        self.relay: subprocess.Popen | None = None
        self.info: StackInfo | None = None

    def start(self) -> StackInfo:
        self.home.mkdir(parents=True, exist_ok=True)
        keys = tuple(dev_keys(10))
        self.anvil = Anvil(self.chain_port, log_path=self.home / "anvil.log").start()
        try:
            deployment = deploy_protocol(self.anvil.url, keys[0])
            deployment.save(self.home / "deployments")
            chain = Chain(self.anvil.url, deployment)
            usdc = chain.token(deployment.tokens["USDC"])
            for key in keys[1:]:
                chain.transact(keys[0], usdc.functions.mint(address_of(key), USDC_PER_ACCOUNT))
            database_url = f"sqlite:///{self.home / 'relay.sqlite'}"
            self.info = StackInfo(self.anvil.url, f"http://127.0.0.1:{self.relay_port}", deployment, self.home,
                                  database_url, self.home / "store", keys)
            self._start_relay(self.info)
        except BaseException:
            self.stop()
            raise
        return self.info

    def _start_relay(self, info: StackInfo, timeout: float = 60) -> None:
        env = {**os.environ, "KEMPELEN_DEPLOYMENTS": str(self.home / "deployments"),
               "KEMPELEN_RELAYER_KEY": info.keys[0], "KEMPELEN_ENVIRONMENT": "development",
               "KEMPELEN_STORE_DIR": str(info.store_dir)}
        log = open(self.home / "relay.log", "ab")
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "kempelen.cli", "serve", "--port", str(self.relay_port),
             "--workers", str(self.relay_workers), "--rpc", info.rpc_url, "--database-url", info.database_url,
             "--store", str(info.store_dir), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.relay.poll() is not None:
                raise StackError(f"the relay exited with code {self.relay.returncode}; see {self.home / 'relay.log'}")
            try:
                if httpx.get(f"{info.relay_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise StackError(f"the relay did not answer on {info.relay_url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.relay and self.relay.poll() is None:
            self.relay.send_signal(signal.SIGTERM)  # `kempelen serve` stops its children by PID
            try:
                self.relay.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.relay.pid, signal.SIGKILL)
                self.relay.wait()
        self.relay = None
        if self.anvil:
            self.anvil.stop()
            self.anvil = None

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
