"""`kempelen worker ...` and the Worker SDK against the real local stack (relay as a subprocess)."""

import json

import pytest
from _waiting import wait_for
from typer.testing import CliRunner

from kempelen.chain.contracts import Chain
from kempelen.cli import app
from kempelen.protocol.tasksets import task_sets
from kempelen.sdk.keys import Signer
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.worker import Worker
from kempelen.stack import LocalStack

runner = CliRunner()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("stack")) as info:
        yield info


@pytest.fixture
def env(stack, monkeypatch, tmp_path):
    monkeypatch.setenv("KEMPELEN_RPC_URL", stack.rpc_url)
    monkeypatch.setenv("KEMPELEN_RELAY_URL", stack.relay_url)
    monkeypatch.setenv("KEMPELEN_DEPLOYMENTS", str(stack.home / "deployments"))
    monkeypatch.setenv("KEMPELEN_STORE", str(stack.store_dir))
    monkeypatch.chdir(tmp_path)
    return stack


def run(*args, key: str, input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input, env={"KEMPELEN_PRIVATE_KEY": key})
    return result.exit_code, result.output


def test_worker_answers_in_the_terminal_and_gets_paid(env, tmp_path):
    requester, worker_key = env.keys[1], env.keys[2]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"text": "great"}\n{"text": "awful"}\n')
    code, out = run("requester", "create-batch", tasks, "--reward", "0.05", "--token", "USDC",
                    "--labels", "negative,positive", "--review-window", "1h", key=requester)
    assert code == 0, out
    batch_id = int(out.split("batch ")[1].split(" funded")[0])
    worker = Worker(RelayClient(env.relay_url, Signer(worker_key)), Signer(worker_key))
    wait_for(lambda: worker.open_tasks(batch_id))  # the relay's indexer has seen the batch

    code, out = run("worker", "work", "--batch", batch_id, key=worker_key, input="2\nnegative\n")
    assert code == 0, out
    assert '"great"' in out and '"awful"' in out and out.count("signed and posted") == 2
    assert "no open tasks" in out
    answers = wait_for(lambda: [a for a in worker.relay.my_answers() if a["status"] == "onchain"] or None)
    labels = {a["task_index"]: json.loads(worker.relay.fetch(a["payload_cid"]))["label"] for a in answers}
    assert labels == {0: "positive", 1: "negative"}

    code, out = run("requester", "review", batch_id, "--approve-all", key=requester)
    assert code == 0 and "approved 2" in out, out
    code, out = run("worker", "earnings", key=worker_key)
    assert code == 0 and "100000" in out and "answers:" in out, out  # 2 x 0.05 USDC in base units
    code, out = run("worker", "withdraw", "--token", "USDC", key=worker_key)
    assert code == 0 and "withdrew 0.1 USDC" in out, out
    usdc = Chain(env.rpc_url).token(env.deployment.tokens["USDC"])
    assert usdc.functions.balanceOf(Signer(worker_key).address).call() >= 100_000


def test_worker_sdk_gasless_withdrawal_and_duplicate_answer(env):
    chain = Chain(env.rpc_url)
    worker_key, requester_key, operator = env.keys[3], env.keys[1], Signer(env.keys[0])
    from kempelen.ipfs.store import ContentStore
    from kempelen.sdk.pinning import StorePinner
    from kempelen.sdk.requester import Requester
    batch = Requester(chain, Signer(requester_key), StorePinner(ContentStore(env.store_dir))).create_batch(
        [{"text": "x"}], "0.001", review_window=3600)
    worker = Worker(RelayClient(env.relay_url, Signer(worker_key)), Signer(worker_key), chain)
    wait_for(lambda: worker.open_tasks(batch.batch_id))
    task = {"batch_id": batch.batch_id, "task_index": 0}
    worker.lease(task)
    assert json.loads(worker.payload(task)) == {"text": "x"}
    receipt = worker.submit(task, {"label": "a"})
    again = worker.submit(task, {"label": "a"})  # 409 from the relay: the original receipt back
    assert again["receipt_id"] == receipt["receipt_id"]
    assert worker.wait(receipt)["status"] == "onchain"
    chain.transact(requester_key, chain.escrow.functions.approve(batch.batch_id, task_sets([(worker.address, 0)])))
    before = chain.w3.eth.get_balance(worker.address)
    assert worker.withdraw("ETH", relayer=operator) == 10**15
    assert chain.w3.eth.get_balance(worker.address) - before == 10**15  # the worker spent no gas


def test_worker_commands_fail_in_one_sentence(env, tmp_path):
    code, out = run("worker", "earnings", "--relay", "http://127.0.0.1:9", key=env.keys[2])
    assert code == 1 and "cannot reach http://127.0.0.1:9" in out and "Traceback" not in out
    code, out = run("worker", "withdraw", "--token", "DOGE", key=env.keys[2])
    assert code == 1 and "unknown token 'DOGE'" in out
    code, out = run("worker", "earnings", key="0x1234")
    assert code == 1 and "not a valid private key" in out
