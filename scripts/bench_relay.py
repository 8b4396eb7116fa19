"""make bench-relay: signed answers over HTTP into the relay (wrk, 50 connections), then on-chain.

Starts anvil, deploys, funds one batch big enough, pre-signs every answer body, starts the relay
(uvicorn, 2 workers, uvloop + httptools) and the submitter, runs wrk over a bounded set of
distinct answers, checks that every 202 is a committed row, waits until all are on-chain, and
writes build/bench/relay.json (answers_per_s, p50_ms, p99_ms, seconds_to_all_onchain).
Everything it starts is stopped by PID.

    .venv/bin/python scripts/bench_relay.py [--answers 30000] [--connections 50] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
from eth_account import Account
from sqlalchemy import func, select

from kempelen.chain.anvil import Anvil, dev_keys, free_port
from kempelen.chain.contracts import ETH, Chain, deploy_protocol
from kempelen.db import make_engine, migrate
from kempelen.protocol.signing import Answer, answer_digest, sign
from kempelen.relay.models import RelayAnswer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench"
PYTHON = sys.executable

LUA = r"""
-- Each wrk thread posts its own slice of the pre-signed bodies, each once; a thread that runs
-- out before the time is up starts over (duplicates, answered 409 and counted as "other").
local counter, threads = 1, {}
function setup(thread)
  thread:set("id", counter); counter = counter + 1; table.insert(threads, thread)
end
function init(args)
  local nthreads, path = tonumber(args[1]), args[2]
  requests, accepted, other, index = {}, 0, 0, 0
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == id - 1 then
      table.insert(requests, wrk.format("POST", "/answers", {["Content-Type"] = "application/json"}, line))
    end
    n = n + 1
  end
end
function request()
  index = index % #requests + 1
  return requests[index]
end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local acc, oth = 0, 0
  for _, t in ipairs(threads) do acc = acc + t:get("accepted"); oth = oth + t:get("other") end
  io.write(string.format('BENCH {"accepted": %d, "other": %d, "requests": %d, "duration_us": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "socket_errors": %d}\n',
    acc, oth, summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""


def _sign_task_range(domain, batch_id: int, workers: list[str], tasks: range) -> list[str]:
    lines = []
    for task in tasks:
        for key in workers:
            address = Account.from_key(key).address
            payload = json.dumps({"task": task, "label": "cat" if task % 2 else "dog"}).encode()
            digest = domain.digest(Answer(batch_id, task, answer_digest(payload), address).struct_hash())
            lines.append(json.dumps({"batch_id": batch_id, "task_index": task, "worker": address,
                                     "payload": base64.b64encode(payload).decode(),
                                     "signature": "0x" + sign(digest, key).hex()}) + "\n")
    return lines


def sign_bodies(chain: Chain, batch_id: int, workers: list[str], tasks: int, path: Path) -> int:
    """One distinct signed answer per (worker, task), a JSON body per line, shuffled by task."""
    step = -(-tasks // 8)
    ranges = [range(start, min(tasks, start + step)) for start in range(0, tasks, step)]
    with ProcessPoolExecutor(2) as pool:
        parts = pool.map(_sign_task_range, *zip(*[(chain.domain, batch_id, workers, r) for r in ranges]))
        lines = [line for part in parts for line in part]
    path.write_text("".join(lines))
    return len(lines)


def fund_batch(chain: Chain, requester: str, tasks: int, answers_per_task: int) -> int:
    now = chain.w3.eth.get_block("latest")["timestamp"]
    reward, fee = 10**9, 10**8
    terms = (ETH, tasks, answers_per_task, reward, fee, now + 30 * 24 * 3600, 3600, 0, bytes(32),
             bytes.fromhex("01551220") + bytes(32))
    chain.transact(requester, chain.escrow.functions.createBatch(terms),
                   value=tasks * answers_per_task * (reward + fee))
    return chain.escrow.functions.batchCount().call()


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"relay exited with code {process.returncode}; see {OUT / 'relay.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("relay did not become healthy")


SUBMITTER_INLINE = """
import os, signal, threading
from kempelen.chain.contracts import Chain
from kempelen.db import make_engine
from kempelen.relay.relayer import Relayer
from kempelen.relay.submitter import Submitter
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
engine = make_engine(os.environ["KEMPELEN_DATABASE_URL"])
Submitter(engine, Relayer(Chain(os.environ["KEMPELEN_RPC_URL"]), os.environ["KEMPELEN_RELAYER_KEY"])).run(stop)
"""


def submitter_command() -> list[str] | None:
    """The other engineer's submitter as a process: its CLI if it has one, else its class."""
    try:
        from kempelen.relay import submitter
    except ImportError:
        return None
    if hasattr(submitter, "main"):
        return [PYTHON, "-m", "kempelen.relay.submitter"]
    if hasattr(submitter, "Submitter"):
        return [PYTHON, "-c", SUBMITTER_INLINE]
    return None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its direct children (uvicorn's workers)."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in (pid, *map(int, children)):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def count_rows(engine, status: str | None = None) -> int:
    query = select(func.count()).select_from(RelayAnswer)
    if status:
        query = query.where(RelayAnswer.status == status)
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def wait_onchain(engine, stored: int, submitter: subprocess.Popen, began: float,
                 timeout: float = 900) -> float | None:
    """Seconds from the first request until every stored answer is on-chain (None if not reached)."""
    deadline = time.monotonic() + timeout
    shown = 0.0
    while time.monotonic() < deadline:
        onchain = count_rows(engine, "onchain")
        if onchain >= stored:
            return round(time.perf_counter() - began, 2)
        if submitter.poll() is not None:
            print(f"submitter exited with code {submitter.returncode}; see {OUT / 'submitter.log'}")
            return None
        if time.monotonic() - shown > 5:
            print(f"on-chain: {onchain}/{stored} ({count_rows(engine, 'skipped')} skipped)")
            shown = time.monotonic()
        time.sleep(0.5)
    return None


def postgres_database() -> tuple[str, callable]:
    import psycopg

    admin_url = os.environ.get("KEMPELEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"kempelen_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", drop


def run_wrk(url: str, bodies: Path, seconds: int, connections: int, work: Path) -> dict:
    script = work / "answers.lua"
    script.write_text(LUA)
    threads = 2
    duration = seconds
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script),
         f"{url}/answers", "--", str(threads), str(bodies)],
        capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    return json.loads(line[6:])


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=40_000, help="distinct signed answers (the bound)")
    parser.add_argument("--seconds", type=int, default=15, help="how long wrk posts")
    parser.add_argument("--workers-keys", type=int, default=20, help="distinct worker addresses")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--no-submitter", action="store_true")
    return parser.parse_args()


def prepare_answers(anvil: Anvil, options: argparse.Namespace, work: Path) -> Path:
    """Deploy, fund one batch with a slot per answer, pre-sign every body; the bodies file."""
    keys = dev_keys(2)
    deployment = deploy_protocol(anvil.url, keys[0])
    deployment.save(work / "deployments")
    chain = Chain(anvil.url, deployment)
    worker_keys = ["0x" + os.urandom(32).hex() for _ in range(options.workers_keys)]
    tasks = -(-options.answers // len(worker_keys))
    batch_id = fund_batch(chain, keys[1], tasks, len(worker_keys))
    bodies = work / "answers.jsonl"
    began = time.perf_counter()
    count = sign_bodies(chain, batch_id, worker_keys, tasks, bodies)
    print(f"signed {count} answers in {time.perf_counter() - began:.1f}s (batch {batch_id})")
    return bodies


def start_relay(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    relay = start([PYTHON, "-m", "uvicorn", "kempelen.relay.main:create_app_from_env", "--factory",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--loop", "uvloop",
                   "--http", "httptools", "--no-access-log", "--log-level", "warning"], env, OUT / "relay.log")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, relay)
    return relay, url


def measure(options, database_url: str, env: dict, bodies: Path, work: Path) -> dict:
    """Relay and submitter up, wrk's load, the durability check, the wait until all are on-chain."""
    relay = submitter = None
    try:
        relay, url = start_relay(env)
        command = None if options.no_submitter else submitter_command()
        if command:
            submitter = start(command, env, OUT / "submitter.log")
        began = time.perf_counter()
        cpu_before = process_cpu(relay.pid)
        result = run_wrk(url, bodies, options.seconds, options.connections, work)
        result["relay_cpu"] = process_cpu(relay.pid) - cpu_before
        engine = make_engine(database_url)
        stored = count_rows(engine)
        # Every 202 is a stored row; a few more rows are answers committed while wrk hung up.
        if not result["accepted"] <= stored <= result["accepted"] + options.connections:
            raise SystemExit(f"{result['accepted']} answers got a 202 but {stored} rows are stored")
        result["onchain_seconds"] = wait_onchain(engine, stored, submitter, began) if submitter else None
        result["submitter"] = " ".join(command[:3]) if command else "none"
        engine.dispose()
        return result
    finally:
        stop(submitter)
        stop(relay)


def write_report(result: dict, options: argparse.Namespace) -> None:
    seconds = result["duration_us"] / 1e6
    report = {"answers_per_s": round(result["accepted"] / seconds, 1),
              "p50_ms": round(result["p50_us"] / 1000, 2), "p99_ms": round(result["p99_us"] / 1000, 2),
              "seconds_to_all_onchain": result["onchain_seconds"],
              "answers": result["accepted"], "non_202": result["other"], "socket_errors": result["socket_errors"],
              "connections": options.connections, "database": options.database, "relay_workers": 2,
              "relay_cpu_ms_per_answer": round(result["relay_cpu"] * 1000 / max(1, result["accepted"]), 3),
              "load_average_1m": round(os.getloadavg()[0], 2), "submitter": result["submitter"]}
    (OUT / "relay.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'metric':<26}value")
    for key in ("answers_per_s", "p50_ms", "p99_ms", "seconds_to_all_onchain", "answers", "non_202",
                "socket_errors", "database", "relay_cpu_ms_per_answer", "load_average_1m"):
        shown = report[key] if report[key] is not None else "missing (submitter did not finish)"
        print(f"{key:<26}{shown}")
    print(f"\nwritten to {OUT / 'relay.json'}")


def main() -> None:
    options = parse_options()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kempelen-bench-relay-"))
    drop_database = None
    with Anvil(log_path=OUT / "anvil.log") as anvil:
        try:
            bodies = prepare_answers(anvil, options, work)
            if options.database == "postgres":
                database_url, drop_database = postgres_database()
            else:
                database_url = f"sqlite:///{work / 'relay.sqlite'}"
            migrate(database_url)
            env = {**os.environ, "KEMPELEN_DATABASE_URL": database_url, "KEMPELEN_RPC_URL": anvil.url,
                   "KEMPELEN_STORE_DIR": str(work / "store"), "KEMPELEN_DEPLOYMENTS": str(work / "deployments"),
                   "KEMPELEN_ANSWERS_PER_ADDRESS_PER_S": "1000000", "KEMPELEN_ANSWERS_BURST": "1000000",
                   "KEMPELEN_RELAYER_KEY": dev_keys(1)[0]}
            result = measure(options, database_url, env, bodies, work)
        finally:
            if drop_database:
                drop_database()
    write_report(result, options)


if __name__ == "__main__":
    main()
