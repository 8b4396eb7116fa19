"""The submitter alone: N acknowledged answers queued in the database, how long until all are on-chain.

Starts anvil (by PID), deploys, funds a batch, queues pre-signed answers straight into
relay_answers (as the intake stores them), runs the submitter in this process until the queue
is drained, and prints answers/s, transactions and gas per answer.

    .venv/bin/python scripts/bench_submitter.py [--answers 20000] [--database sqlite|postgres] [--max-answers 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "backend"))

from kempelen.chain.anvil import Anvil, dev_keys
from kempelen.chain.contracts import Chain, deploy_protocol
from kempelen.db import make_engine, migrate
from kempelen.relay.packing import PackingPolicy
from kempelen.relay.submitter import SubmitterConfig, seconds_to_all_onchain
from submitter_support import create_batch, enqueue, signed_rows, transaction_rows, worker_keys


def postgres_url() -> tuple[str, callable]:
    import psycopg

    admin_url = "postgresql://postgres@127.0.0.1:5432/test"
    name = f"kempelen_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--max-answers", type=int, default=200)
    options = parser.parse_args()
    keys = dev_keys(10)
    drop = None
    with tempfile.TemporaryDirectory() as work, Anvil() as node:
        url = f"sqlite:///{work}/bench.sqlite"
        if options.database == "postgres":
            url, drop = postgres_url()
        try:
            migrate(url)
            engine = make_engine(url)
            chain = Chain(node.url, deploy_protocol(node.url, keys[0]))
            tasks = options.answers // options.workers + 1
            batch_id = create_batch(chain, keys[1], task_count=tasks, answers_per_task=options.workers)
            enqueue(engine, signed_rows(chain.domain, batch_id, worker_keys(options.workers), options.answers))
            config = SubmitterConfig(policy=PackingPolicy(max_answers=options.max_answers, flush_after=0.0))
            started = time.perf_counter()
            seconds = seconds_to_all_onchain(url, node.url, keys[8], config=config,
                                             deployment=chain.deployment)
            elapsed = time.perf_counter() - started
            txs = transaction_rows(engine)
            gas_used = sum(chain.w3.eth.get_transaction_receipt(t.tx_hash)["gasUsed"] for t in txs
                           if t.status == "mined")
            engine.dispose()
        finally:
            if drop:
                drop()
    print(f"answers                 {options.answers}")
    print(f"database                {options.database}")
    print(f"seconds_to_all_onchain  {seconds:.2f} (process {elapsed:.2f})")
    print(f"answers_per_s_onchain   {options.answers / seconds:.0f}")
    print(f"transactions            {len(txs)} ({options.max_answers} answers max each)")
    print(f"gas_per_answer          {gas_used / options.answers:.0f}")


if __name__ == "__main__":
    main()
