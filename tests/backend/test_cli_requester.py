"""`kempelen requester ...` through Typer's runner against anvil, and as a subprocess."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kempelen.cli import app
from kempelen.ipfs.store import ContentStore
from kempelen.sdk.answers import sign_answer, submit_direct
from kempelen.sdk.keys import Signer, write_keystore

runner = CliRunner()


@pytest.fixture
def env(chain, keys, tmp_path, monkeypatch):
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]
    monkeypatch.setenv("KEMPELEN_RPC_URL", chain.rpc_url)
    monkeypatch.setenv("KEMPELEN_PRIVATE_KEY", keys[1])
    monkeypatch.setenv("KEMPELEN_STORE", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"text": f"sentence {i}"}) + "\n" for i in range(3)))
    yield tmp_path
    chain.w3.provider.make_request("evm_revert", [snap])


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def created_batch_id(output: str) -> int:
    return int(output.split("batch ")[1].split(" funded")[0])


def test_create_review_export_round_trip(env, chain, keys):
    code, out = invoke("requester", "create-batch", env / "tasks.jsonl", "--reward", "0.01", "--answers", "2",
                       "--labels", "pos,neg")
    assert code == 0, out
    batch_id = created_batch_id(out)
    workers = [Signer(k) for k in keys[4:6]]
    signed = [sign_answer(chain.domain, w, batch_id, t, {"label": "pos"}) for w in workers for t in range(3)]
    store = ContentStore(env / "store")
    for s in signed:
        store.put(s.payload)
    submit_direct(chain, Signer(keys[7]), signed)

    rejects = env / "rejects.jsonl"
    rejects.write_text(json.dumps({"worker": workers[0].address, "task_index": 1, "reason": "off topic"}) + "\n")
    code, out = invoke("requester", "review", batch_id, "--reject-file", rejects)
    assert code == 0 and "rejected 1" in out, out
    code, out = invoke("requester", "review", batch_id, "--approve-all")
    assert code == 0 and "approved 5" in out, out
    code, out = invoke("requester", "status", batch_id)
    assert code == 0 and "approved" in out and "rejected" in out
    code, out = invoke("requester", "export", batch_id, "-o", env / "out.jsonl")
    assert code == 0, out
    rows = [json.loads(line) for line in (env / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["answer"] for r in rows} == {'{"label":"pos"}'}
    assert {r["status"] for r in rows} == {"approved", "rejected"}
    code, out = invoke("requester", "reclaim", batch_id)  # the contract's own error, explained
    assert code == 1 and f"EscrowDeadlineNotPassed(batchId={batch_id}" in out


def test_interactive_review_prompts_per_answer(env, chain, keys):
    code, out = invoke("requester", "create-batch", env / "tasks.jsonl", "--reward", "0.01")
    batch_id = created_batch_id(out)
    signed = [sign_answer(chain.domain, Signer(keys[4]), batch_id, t, {"label": "x"}) for t in range(3)]
    store = ContentStore(env / "store")
    for s in signed:
        store.put(s.payload)
    submit_direct(chain, Signer(keys[7]), signed)
    result = runner.invoke(app, ["requester", "review", str(batch_id)], input="a\nr\nnot a sentence\ns\n")
    assert result.exit_code == 0, result.output
    assert "sentence 0" in result.output and "approved 1, rejected 1, left 1 pending" in result.output


def test_review_file_naming_an_answer_twice_is_one_sentence_and_sends_nothing(env, chain, keys):
    code, out = invoke("requester", "create-batch", env / "tasks.jsonl", "--reward", "0.01")
    batch_id = created_batch_id(out)
    worker = Signer(keys[4])
    signed = [sign_answer(chain.domain, worker, batch_id, t, {"label": "x"}) for t in range(2)]
    submit_direct(chain, Signer(keys[7]), signed)
    rejects = env / "rejects.jsonl"
    nonce = chain.w3.eth.get_transaction_count(Signer(keys[1]).address)
    for reasons in (["off topic", "off topic"], ["off topic", "too short"]):  # one transaction or two
        rows = [{"worker": worker.address, "task_index": 1, "reason": reasons[0]},
                {"worker": worker.address, "task_index": 0, "reason": reasons[0]},
                {"worker": worker.address.lower(), "task_index": 1, "reason": reasons[1]}]
        rejects.write_text("".join(json.dumps(row) + "\n" for row in rows))
        code, out = invoke("requester", "review", batch_id, "--reject-file", rejects)
        assert code == 1 and "Traceback" not in out, out
        assert f"names the answer of worker {worker.address.lower()} to task 1 twice" in " ".join(out.split())
    assert chain.w3.eth.get_transaction_count(Signer(keys[1]).address) == nonce  # nothing was sent
    code, out = invoke("requester", "review", batch_id, "--approve-all")
    assert code == 0 and "approved 2, rejected 0, left 0 pending" in out, out


@pytest.mark.parametrize("args, message", [
    (["requester", "create-batch", "missing.jsonl", "--reward", "1"], "tasks file not found"),
    (["requester", "create-batch", "tasks.jsonl", "--reward", "abc"], "not an amount"),
    (["requester", "create-batch", "tasks.jsonl", "--reward", "1", "--deadline", "soon"], "not a duration"),
    (["requester", "status", "999"], "unknown batch 999"),
    (["requester", "reclaim", "999"], "unknown batch 999"),
    (["requester", "create-batch", "tasks.jsonl", "--reward", "99999999", "--token", "USDC"], "not enough balance"),
])
def test_bad_input_is_one_clear_sentence(env, args, message):
    code, out = invoke(*args)
    assert code != 0
    assert message in out and "Traceback" not in out


def test_wrong_keystore_password_and_chain_down(env, keys, tmp_path):
    path = write_keystore(keys[1], "right", tmp_path / "k.json")
    code, out = invoke("requester", "status", "1", "--keystore", path, "--password", "wrong")
    assert code == 1 and "wrong password" in out
    code, out = invoke("requester", "status", "1", "--rpc", "http://127.0.0.1:9")
    assert code == 1 and "no Ethereum JSON-RPC answers at http://127.0.0.1:9" in out


def test_cli_runs_as_a_subprocess(env):
    done = subprocess.run([sys.executable, "-m", "kempelen.cli", "requester", "status", "999"],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert done.returncode == 1 and "unknown batch 999" in done.stderr and "Traceback" not in done.stderr


def test_deploy_writes_where_every_role_reads(env, anvil, keys, tmp_path):
    code, out = invoke("deploy", "--rpc", anvil.url, "--test-token", "--out", tmp_path / "deployed")
    assert code == 0, out
    written = json.loads((tmp_path / "deployed" / "31337.json").read_text())
    assert written["escrow"] in out and written["tokens"]["USDC"]
    from kempelen.chain.contracts import Chain
    from kempelen.chain.deployment import Deployment
    fresh = Chain(anvil.url, Deployment.load(31337, tmp_path / "deployed"))
    assert fresh.escrow.functions.reputation().call() == written["reputation"]
    code, out = invoke("deploy", "--rpc", anvil.url, "--network", "sepolia")
    assert code == 1 and "exactly one of --rpc URL or --network NAME" in out
