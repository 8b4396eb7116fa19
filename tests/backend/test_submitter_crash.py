"""The relay killed mid-stream: after a restart every acknowledged answer is on-chain exactly once.

Runs the real `kempelen serve` (uvicorn with 2 workers, the submitter and the indexer as child
processes) against a real anvil, streams signed answers over HTTP from threads, SIGKILLs the
relay's whole process group while answers stream in and transactions are in flight, restarts
it, re-posts whatever was not acknowledged, and checks the chain.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from eth_account import Account
from kempelen.chain.anvil import Anvil, free_port
from kempelen.chain.contracts import Chain, deploy_protocol
from kempelen.db import make_engine
from kempelen.protocol.signing import Answer, answer_digest, sign
from kempelen.relay.models import RelayAnswer
from sqlalchemy import func, select
from submitter_support import create_batch, landed_answers, wait_until, worker_keys

RELAYER = 8


@pytest.fixture(scope="module")
def crash_chain(keys, tmp_path_factory):
    directory = tmp_path_factory.mktemp("crash-chain")
    node = Anvil(log_path=directory / "anvil.log").start()
    try:
        deployment = deploy_protocol(node.url, keys[0])
        deployment.save(directory / "deployments")
        yield Chain(node.url, deployment), directory / "deployments"
    finally:
        node.stop()


@dataclass
class Stream:
    """Answers posted over HTTP, and which the relay acknowledged (202, or 409 naming the original)."""

    bodies: list[dict]
    acknowledged: set[int] = field(default_factory=set)
    refused: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, url: str, indexes: list[int], stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in indexes:
                if stop.is_set():
                    return
                try:
                    reply = client.post("/answers", json=self.bodies[i])
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.refused[type(exc).__name__] += 1
                    time.sleep(0.01)
                    continue
                with self.lock:
                    if reply.status_code == 202 or (reply.status_code == 409 and reply.json().get("receipt")):
                        self.acknowledged.add(i)
                    else:
                        self.refused[f"{reply.status_code} {reply.text[:80]}"] += 1

    def run(self, url: str, indexes: list[int], threads: int = 4) -> tuple[list[threading.Thread], threading.Event]:
        stop = threading.Event()
        workers = [threading.Thread(target=self.post, args=(url, indexes[t::threads], stop), daemon=True)
                   for t in range(threads)]
        for worker in workers:
            worker.start()
        return workers, stop


def signed_bodies(chain: Chain, batch_id: int, keys: list[str], count: int) -> list[dict]:
    bodies = []
    for i in range(count):
        key = keys[i % len(keys)]
        worker = Account.from_key(key).address
        task = i // len(keys)
        payload = f'{{"label": "crash-{i}"}}'.encode()
        digest = answer_digest(payload)
        signature = sign(chain.domain.digest(Answer(batch_id, task, digest, worker).struct_hash()), key)
        bodies.append({"batch_id": batch_id, "task_index": task, "worker": worker,
                       "payload": base64.b64encode(payload).decode(), "signature": "0x" + signature.hex()})
    return bodies


class Relay:
    """`kempelen serve` in a process group of its own, so one SIGKILL takes every part down."""

    def __init__(self, chain: Chain, deployments, database_url: str, store, relayer_key: str, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "kempelen.relay.cli", "serve", "--port", str(self.port),
                        "--workers", "2", "--rpc", chain.rpc_url, "--database-url", database_url,
                        "--store", str(store), "--log-level", "warning"]
        self.env = {**os.environ, "KEMPELEN_DEPLOYMENTS": str(deployments), "KEMPELEN_RELAYER_KEY": relayer_key,
                    "KEMPELEN_ANSWERS_PER_ADDRESS_PER_S": "1000000", "KEMPELEN_ANSWERS_BURST": "1000000"}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Relay:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("relay not healthy within 60s")

    def kill(self) -> None:
        """SIGKILL the whole group: API workers, submitter, indexer and serve itself."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def queue_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(RelayAnswer.status, func.count()).group_by(RelayAnswer.status))
        return dict(rows.all())


def crash_and_recover(crash_chain, keys, database_url, tmp_path, count: int, workers: int) -> None:
    chain, deployments = crash_chain
    batch_id = create_batch(chain, keys[1], task_count=count // workers + 1, answers_per_task=workers)
    bodies = signed_bodies(chain, batch_id, worker_keys(workers), count)
    relay = Relay(chain, deployments, database_url, tmp_path / "store", keys[RELAYER], tmp_path / "relay.log")
    engine = make_engine(database_url)
    try:
        relay.start()
        stream = Stream(bodies)
        threads, _ = stream.run(relay.url, list(range(count)))
        # Kill once a good part is acknowledged and some of it is already on-chain.
        wait_until(lambda: len(stream.acknowledged) >= count // 2 and queue_counts(engine).get("onchain"),
                   timeout=60, interval=0.01)
        relay.kill()
        killed_at = len(stream.acknowledged)
        for thread in threads:
            thread.join(60)
        assert stream.refused, "the kill should have refused some requests"
        relay.start()
        retry = [i for i in range(count) if i not in stream.acknowledged]
        threads, _ = stream.run(relay.url, retry)
        for thread in threads:
            thread.join(60)
        assert len(stream.acknowledged) == count, stream.refused
        wait_until(lambda: queue_counts(engine).get("onchain", 0) == count, timeout=90, interval=0.2)
        assert relay.terminate() == 0  # SIGTERM: every part stops cleanly, by PID
        wait_until(lambda: not group_alive(relay.process.pid), timeout=20)
    finally:
        relay.kill()
        engine.dispose()

    answers = landed_answers(chain, batch_id)
    landed = Counter((worker, task) for worker, task, _ in answers)
    assert all(n == 1 for n in landed.values()), "an answer was submitted twice"
    expected = {(b["worker"], b["task_index"]): base64.b64decode(b["payload"]) for b in bodies}
    assert set(landed) == set(expected)
    for worker, task, digest in answers:
        assert digest == answer_digest(expected[(worker, task)])
    for worker, task in list(expected)[:: max(1, count // 200)]:
        status, _ = chain.escrow.functions.answerStatus(batch_id, worker, task).call()
        assert status == 1  # Pending
    assert killed_at < count


def test_sigkill_mid_stream_loses_nothing_and_submits_nothing_twice(crash_chain, keys, sqlite_url, tmp_path):
    crash_and_recover(crash_chain, keys, sqlite_url, tmp_path, count=2000, workers=20)


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_sigkill_mid_stream_at_scale(crash_chain, keys, database, request, tmp_path):
    url = request.getfixturevalue(f"{database}_url")
    crash_and_recover(crash_chain, keys, url, tmp_path, count=10_000, workers=50)
