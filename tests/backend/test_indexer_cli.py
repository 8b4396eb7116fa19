"""`kempelen index` as a user runs it: one-line errors, resume, and surviving SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from indexer_history import Actors, dump, opening, review_phase, rpc
from sqlalchemy.exc import SQLAlchemyError
from typer.testing import CliRunner

from kempelen.chain.anvil import Anvil
from kempelen.chain.contracts import Chain, deploy_protocol
from kempelen.db import make_engine
from kempelen.indexer.cli import app
from kempelen.indexer.models import IndexCheckpoint

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["index", *args])


def one_line_error(result) -> str:
    output = result.output.strip()
    assert result.exit_code == 1, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith("error: ")
    return output


@pytest.fixture
def deployment_file(deployment, tmp_path):
    return str(deployment.save(tmp_path / "deployments"))


def test_once_indexes_every_event_and_resumes_without_duplicates(chain, deployment_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    first = run("--rpc", chain.rpc_url, "--deployment", deployment_file, "--database-url", url)
    assert first.exit_code == 0, first.output
    assert "indexed chain 31337 to block" in first.output
    logs = rpc(chain.rpc_url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": [
        chain.deployment.escrow, chain.deployment.reputation]})
    indexed = dump(url, chain.chain_id)["chain_events"]
    assert len(logs) == len(indexed) > 0
    again = run("--rpc", chain.rpc_url, "--escrow", chain.deployment.escrow, "--database-url", url,
                "-q")
    assert again.exit_code == 0, again.output
    assert dump(url, chain.chain_id)["chain_events"] == indexed


@pytest.mark.parametrize("args, expected", [
    (["--rpc", "http://127.0.0.1:9"], "no JSON-RPC answer at http://127.0.0.1:9"),
    (["--escrow", "0x1234"], "--escrow '0x1234' is not an address"),
    (["--database-url", "not a url"], "database not a url"),
    (["--database-url", "postgresql+psycopg://nobody@127.0.0.1:9/none"], "database postgresql"),
    (["--escrow", "0x000000000000000000000000000000000000dEaD"], "does not answer reputation()"),
])
def test_bad_input_is_one_line_error(chain, deployment_file, args, expected):
    defaults = {"--rpc": chain.rpc_url, "--deployment": deployment_file}
    if "--escrow" in args:
        defaults.pop("--deployment")
    for name in args[::2]:
        defaults.pop(name, None)
    flat = [part for pair in defaults.items() for part in pair]
    assert expected in one_line_error(run(*flat, *args))


def test_unreadable_deployment_file(chain, tmp_path):
    bad = tmp_path / "deployment.json"
    bad.write_text("{not json")
    assert "cannot read deployment" in one_line_error(run("--rpc", chain.rpc_url,
                                                          "--deployment", str(bad)))


def test_second_escrow_in_same_database_is_refused(chain, deployment_file, tmp_path, keys):
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    assert run("--rpc", chain.rpc_url, "--deployment", deployment_file, "--database-url", url,
               "-q").exit_code == 0
    other = deploy_protocol(chain.rpc_url, keys[0], test_token=False)
    message = one_line_error(run("--rpc", chain.rpc_url, "--escrow", other.escrow,
                                 "--database-url", url))
    assert f"already indexes escrow {chain.deployment.escrow}" in message


def _checkpoint(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(IndexCheckpoint.__table__.select()).mappings().first()
        return -1 if found is None else found["last_block"]
    except SQLAlchemyError:  # the table does not exist until the child has migrated
        return -1
    finally:
        engine.dispose()


def test_killed_follower_resumes_to_the_same_index(tmp_path, keys):
    with Anvil(log_path=tmp_path / "anvil.log") as node:
        chain = Chain(node.url, deploy_protocol(node.url, keys[0]))
        actors = Actors(chain, keys)
        batches = opening(actors)
        rpc(node.url, "anvil_mine", hex(400))  # room to be killed in the middle
        review_phase(actors, *batches)
        head = chain.w3.eth.block_number
        deployment_file = str(chain.deployment.save(tmp_path / "deployments"))
        url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
        args = ["index", "--rpc", node.url, "--deployment", deployment_file, "--database-url", url]
        child = subprocess.Popen([sys.executable, "-m", "kempelen.indexer", *args, "--follow",
                                  "--max-range", "1", "-q"], start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while _checkpoint(url) < 100 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        killed_at = _checkpoint(url)
        assert 100 <= killed_at < head, "the child must die mid-way"

        resumed = subprocess.run([sys.executable, "-m", "kempelen.indexer", *args, "-q"],
                                 capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        assert run("--rpc", node.url, "--deployment", deployment_file, "--database-url", fresh,
                   "-q").exit_code == 0
        assert dump(url, chain.chain_id) == dump(fresh, chain.chain_id)
