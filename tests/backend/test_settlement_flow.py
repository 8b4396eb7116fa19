"""The settlement path end to end on the local stack (anvil + `kempelen serve` as a subprocess):
requesters settle held answers with signed settlements, workers claim cumulative earnings with
proofs, unsettled answers fall back to the direct path, and every amount is exact to the unit."""

from __future__ import annotations

import json

import pytest
from _waiting import wait_for
from typer.testing import CliRunner
from web3.logs import DISCARD

from kempelen.chain.contracts import ETH, Chain
from kempelen.chain.settled import settled_history
from kempelen.cli import app
from kempelen.protocol.cid import CID
from kempelen.protocol.sealed import open_words
from kempelen.protocol.settlement import SettlementManifest, verify_manifest
from kempelen.sdk.answers import sign_answer, submit_direct
from kempelen.sdk.keys import Signer
from kempelen.sdk.pinning import RelayPinner
from kempelen.sdk.relay_client import RelayClient
from kempelen.sdk.requester import Requester
from kempelen.sdk.settlement import SettlementError, settlement_records
from kempelen.sdk.worker import Worker
from kempelen.stack import LocalStack

REWARD_ETH, FEE_ETH = 10**15, 10**14  # "0.001" and "0.0001" ETH
REWARD_USDC, FEE_USDC = 50_000, 2_000  # "0.05" and "0.002" USDC


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("settlement-stack"), relay_workers=1) as info:
        yield info


@pytest.fixture(scope="module")
def chain(stack):
    return Chain(stack.rpc_url, stack.deployment)


def requester_of(stack, chain, key: str) -> Requester:
    signer = Signer(key)
    return Requester(chain, signer, RelayPinner(RelayClient(stack.relay_url, signer)))


def worker_of(stack, chain, key: str) -> Worker:
    signer = Signer(key)
    return Worker(RelayClient(stack.relay_url, signer), signer, chain)


def answer(worker: Worker, batch_id: int, task_index: int, label: str) -> dict:
    receipt = worker.submit({"batch_id": batch_id, "task_index": task_index}, {"label": label})
    assert receipt["status"] == "held", receipt  # a settlement-mode batch: never sent on its own
    return receipt


def escrow_balance(chain: Chain, token: str, account: str) -> int:
    return chain.escrow.functions.balanceOf(token, account).call()


def funds(chain: Chain, batch_id: int) -> int:
    return Requester.batch(type("R", (), {"chain": chain})(), batch_id)["funds"]


def advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def test_settle_twice_and_claim_across_batches_exact_to_the_unit(stack, chain):
    requester = requester_of(stack, chain, stack.keys[1])
    alice, bob = worker_of(stack, chain, stack.keys[2]), worker_of(stack, chain, stack.keys[3])
    relayer = Signer(stack.keys[0]).address  # `kempelen serve`'s relayer key in the local stack
    eth = requester.create_batch([{"n": i} for i in range(3)], "0.001", answers_per_task=2, relay_fee="0.0001",
                                 settlement_fallback=2 * 86400, deadline=7 * 86400)
    usdc = requester.create_batch([{"n": i} for i in range(2)], "0.05", token="USDC", relay_fee="0.002",
                                  settlement_fallback=2 * 86400, deadline=7 * 86400)
    usdc_token = chain.token_address("USDC")
    for task in range(3):
        answer(alice, eth.batch_id, task, "a")
    answer(bob, eth.batch_id, 0, "b")
    answer(alice, usdc.batch_id, 0, "a")
    answer(bob, usdc.batch_id, 1, "b")
    assert not requester.list_answers(eth.batch_id)  # nothing went the direct path

    # Settlement 1 of the ETH batch, posted by the requester itself: alice's task 0 and bob's task 0.
    funds_before, fees_before = funds(chain, eth.batch_id), escrow_balance(chain, ETH, requester.signer.address)
    first = requester.settle(eth.batch_id, answers=[(alice.address, 0), (bob.address, 0)])
    assert (first.sequence, first.answers, first.amount) == (1, 2, 2 * REWARD_ETH)
    assert funds_before - funds(chain, eth.batch_id) == 2 * (REWARD_ETH + FEE_ETH)
    assert escrow_balance(chain, ETH, requester.signer.address) - fees_before == 2 * FEE_ETH  # the poster earns fees
    assert chain.escrow.functions.settlementOf(eth.batch_id).call() == [1, first.manifest.root, 2 * REWARD_ETH]

    # alice claims her first answer on her own.
    before = escrow_balance(chain, ETH, alice.address)
    result = alice.claim([eth.batch_id])
    assert result.credited == REWARD_ETH
    assert escrow_balance(chain, ETH, alice.address) - before == REWARD_ETH
    assert chain.escrow.functions.earningsOf(eth.batch_id, alice.address).call() == [REWARD_ETH, REWARD_ETH]

    # Settlement 2 (everything still held: alice's tasks 1 and 2) and the USDC batch, both through the relay.
    relay_eth, relay_usdc = escrow_balance(chain, ETH, relayer), escrow_balance(chain, usdc_token, relayer)
    second = requester.settle(eth.batch_id, via_relay=True)
    third = requester.settle(usdc.batch_id, via_relay=True)
    assert (second.sequence, second.answers, third.answers) == (2, 2, 2)
    assert escrow_balance(chain, ETH, relayer) - relay_eth == 2 * FEE_ETH
    assert escrow_balance(chain, usdc_token, relayer) - relay_usdc == 2 * FEE_USDC
    assert second.manifest.earnings == {alice.address: 3 * REWARD_ETH, bob.address: REWARD_ETH}  # cumulative

    # The manifests verify against the chain's record and each other.
    records = settlement_records(chain, eth.batch_id)
    manifests = [SettlementManifest.from_json(requester.pinner.fetch(r.manifest_cid)) for r in records]
    assert [m.to_json() for m in manifests] == [first.manifest.to_json(), second.manifest.to_json()]
    batch = requester.batch(eth.batch_id)
    for previous, manifest, record in zip([None, manifests[0]], manifests, records):
        settlement = manifest.settlement(record.manifest_cid)
        assert settlement.root == record.root and settlement.cumulative_total == record.cumulative_total
        assert verify_manifest(manifest, previous, settlement=settlement, domain=chain.domain,
                               reward=batch["reward"], token=batch["token"], task_count=batch["taskCount"],
                               previous_cid=records[0].manifest_cid if previous else None) == []

    # alice claims across both batches in one claimMany: cumulative - claimed in the ETH batch.
    eth_before, usdc_before = escrow_balance(chain, ETH, alice.address), escrow_balance(chain, usdc_token, alice.address)
    result = alice.claim()
    assert sorted((c.batch_id, c.cumulative, c.amount) for c in result.claims) == [
        (eth.batch_id, 3 * REWARD_ETH, 2 * REWARD_ETH), (usdc.batch_id, REWARD_USDC, REWARD_USDC)]
    assert escrow_balance(chain, ETH, alice.address) - eth_before == 2 * REWARD_ETH
    assert escrow_balance(chain, usdc_token, alice.address) - usdc_before == REWARD_USDC
    with pytest.raises(SettlementError, match="already claimed"):
        alice.claim([eth.batch_id])

    # bob claims through the relay (no gas) and withdraws through an operator: exact wallet amounts.
    result = bob.claim(via_relay=True)
    assert result.credited == REWARD_ETH + REWARD_USDC
    wallet = chain.w3.eth.get_balance(bob.address)
    assert bob.withdraw("ETH", relayer=Signer(stack.keys[9])) == REWARD_ETH
    assert chain.w3.eth.get_balance(bob.address) - wallet == REWARD_ETH
    receipts = {(a["batch_id"], a["task_index"]): a["status"] for a in bob.relay.my_answers()}
    assert receipts[(usdc.batch_id, 1)] == "settled"  # the relay posted it and marked it at once


def test_safety_valve_sends_unsettled_answers_direct_and_refuses_to_settle_them(stack, chain):
    requester = requester_of(stack, chain, stack.keys[4])
    carol, dave = worker_of(stack, chain, stack.keys[5]), worker_of(stack, chain, stack.keys[6])
    batch = requester.create_batch([{"n": i} for i in range(3)], "0.001", answers_per_task=2, relay_fee="0.0001",
                                   settlement_fallback=3600, deadline=7 * 86400, review_window=600)
    for task in range(3):
        answer(carol, batch.batch_id, task, "c")

    # dave's answer reaches the chain directly (anyone may submit a signed answer): a settlement
    # naming it is refused before any transaction; one of the rest is settled.
    direct = sign_answer(chain.domain, dave.signer, batch.batch_id, 0, {"label": "d"})
    submit_direct(chain, Signer(stack.keys[9]), [direct])
    nonce = chain.w3.eth.get_transaction_count(requester.signer.address)
    with pytest.raises(SettlementError, match=r"to task 0: on the direct path \(status pending\)"):
        requester.settle(batch.batch_id, answers=[(carol.address, 0), (dave.address, 0)])
    with pytest.raises(SettlementError, match="not at the relay"):
        requester.settle(batch.batch_id, answers=[(carol.address, 1), (dave.address, 2)])
    assert chain.w3.eth.get_transaction_count(requester.signer.address) == nonce  # nothing was sent
    requester.settle(batch.batch_id, answers=[(carol.address, 0)])

    # Past the fallback the relay sends carol's unsettled answers 1 and 2 on the direct path.
    advance(chain, 3600 + 60)

    def statuses():
        mine = {a["task_index"]: a["status"] for a in carol.relay.my_answers() if a["batch_id"] == batch.batch_id}
        return mine if not {"held", "accepted", "submitted"} & set(mine.values()) else None

    assert wait_for(statuses) == {0: "settled", 1: "onchain", 2: "onchain"}
    onchain = {(a.worker, a.task_index): a.status for a in requester.list_answers(batch.batch_id)}
    assert onchain == {(dave.address, 0): "pending", (carol.address, 1): "pending", (carol.address, 2): "pending"}
    with pytest.raises(SettlementError, match=r"task 1: on the direct path \(status pending\)"):
        requester.settle(batch.batch_id, answers=[(carol.address, 1)])

    # The requester neither settles nor rejects them: after the review window anyone releases them.
    advance(chain, 600 + 60)
    before = escrow_balance(chain, ETH, carol.address)
    requester.release(batch.batch_id, [(carol.address, 1), (carol.address, 2)])
    assert escrow_balance(chain, ETH, carol.address) - before == 2 * REWARD_ETH
    assert carol.claim([batch.batch_id]).credited == REWARD_ETH
    assert CID.parse(settlement_records(chain, batch.batch_id)[-1].manifest_cid)

    # carol's settled words were sealed: the relay opened them (openSettled) before sending her
    # answers 1 and 2 direct; her settled answer 0 stays settled and the direct path refuses it.
    history = settled_history(chain, batch.batch_id)
    assert history.book.opened == {carol.address} and history.book.of_worker(carol.address) == {0: 0b1}
    assert history.is_settled(carol.address, 0) and not history.is_settled(carol.address, 1)
    again = sign_answer(chain.domain, carol.signer, batch.batch_id, 0, {"label": "c"})
    receipt = submit_direct(chain, Signer(stack.keys[9]), [again])
    (skipped,) = chain.escrow.events.AnswerSkipped().process_receipt(receipt, errors=DISCARD)
    assert skipped.args.reason == 6  # AlreadyAnswered
    with pytest.raises(SettlementError, match="to task 2: on the direct path"):
        requester.settle(batch.batch_id, answers=[(carol.address, 2)])


def test_later_settlements_restate_earlier_words_through_the_sdk_and_the_relay(stack, chain):
    """Workers with answers in two 192-task words: each settlement's signed entries restate every
    earlier word of the workers it pays (bits 0), `before` comes from AnswersSettled (computed by
    the SDK when it posts, by the relay when it does), and the claims add up."""
    requester = requester_of(stack, chain, stack.keys[4])
    erin, frank = worker_of(stack, chain, stack.keys[5]), worker_of(stack, chain, stack.keys[6])
    batch = requester.create_batch([b"%d" % i for i in range(200)], "0.001", answers_per_task=2,
                                   relay_fee="0.0001", settlement_fallback=2 * 86400, deadline=7 * 86400)
    for worker, task in [(erin, 195), (erin, 0), (erin, 1), (frank, 0), (frank, 196)]:
        answer(worker, batch.batch_id, task, "e")

    requester.settle(batch.batch_id, answers=[(erin.address, 195), (frank.address, 0)])  # word 1, word 0
    second = requester.settle(batch.batch_id, answers=[(erin.address, 0)])  # restates erin's word 1
    third = requester.settle(batch.batch_id, via_relay=True)  # erin's task 1, frank's 196: restates frank's word 0

    logged = [e.args.settled for e in chain.escrow.events.AnswersSettled().get_logs(
        from_block=chain.deployment.deploy_block, argument_filters={"batchId": batch.batch_id})]
    entries = [[(w["worker"], w["wordIndex"], w["bits"]) for w in settled] for settled in logged]
    first_words = sorted([(erin.address, 1, 1 << 3), (frank.address, 0, 1)], key=lambda e: int(e[0], 16))
    assert entries[0] == first_words
    assert entries[1] == [(erin.address, 0, 1), (erin.address, 1, 0)]  # the restated word pays nothing
    assert sorted(entries[2]) == sorted([(erin.address, 0, 0b10), (erin.address, 1, 0),
                                         (frank.address, 0, 0), (frank.address, 1, 1 << 4)])
    assert (second.sequence, second.answers, third.sequence, third.answers) == (2, 1, 3, 2)
    assert third.manifest.earnings == {erin.address: 3 * REWARD_ETH, frank.address: 2 * REWARD_ETH}
    book = settled_history(chain, batch.batch_id).book
    assert book.of_worker(erin.address) == {0: 0b11, 1: 1 << 3} and book.of_worker(frank.address) == {0: 1, 1: 1 << 4}
    assert not book.opened

    with pytest.raises(SettlementError, match="nothing to settle"):
        requester.settle(batch.batch_id)
    assert erin.claim([batch.batch_id]).credited == 3 * REWARD_ETH
    assert frank.claim([batch.batch_id], via_relay=True).credited == 2 * REWARD_ETH


def test_a_worker_opened_early_by_a_stranger_is_still_settled_and_claims(stack, chain):
    """Anyone may open a worker's settled words (openSettled) before the fallback: the requester's
    later settlements of that worker, posted by itself or by the relay, are settled against the
    stored words (no restating) and the worker claims them all. The opening only costs gas."""
    requester = requester_of(stack, chain, stack.keys[4])
    gina = worker_of(stack, chain, stack.keys[5])
    batch = requester.create_batch([b"%d" % i for i in range(200)], "0.001", answers_per_task=1,
                                   relay_fee="0.0001", settlement_fallback=2 * 86400, deadline=7 * 86400)
    for task in (195, 0, 1):
        answer(gina, batch.batch_id, task, "g")
    requester.settle(batch.batch_id, answers=[(gina.address, 195)])  # word 1: her words are sealed

    words = open_words(settled_history(chain, batch.batch_id).book.of_worker(gina.address))
    chain.transact(stack.keys[9], chain.escrow.functions.openSettled(batch.batch_id, gina.address, words))
    assert settled_history(chain, batch.batch_id).book.opened == {gina.address}

    progress = []
    second = requester.settle(batch.batch_id, answers=[(gina.address, 0)], progress=progress.append)
    third = requester.settle(batch.batch_id, via_relay=True)  # her task 1, posted by the relay
    assert (second.sequence, second.answers, third.sequence, third.answers) == (2, 1, 3, 1)
    assert not any("restated" in line for line in progress), progress
    logged = [e.args.settled for e in chain.escrow.events.AnswersSettled().get_logs(
        from_block=chain.deployment.deploy_block, argument_filters={"batchId": batch.batch_id})]
    entries = [[(w["worker"], w["wordIndex"], w["bits"]) for w in settled] for settled in logged]
    assert entries[1:] == [[(gina.address, 0, 0b1)], [(gina.address, 0, 0b10)]]  # nothing restated
    book = settled_history(chain, batch.batch_id).book
    assert book.opened == {gina.address} and book.of_worker(gina.address) == {0: 0b11, 1: 1 << 3}
    assert third.manifest.earnings == {gina.address: 3 * REWARD_ETH}

    with pytest.raises(SettlementError, match="nothing to settle"):
        requester.settle(batch.batch_id)
    assert gina.claim([batch.batch_id]).credited == 3 * REWARD_ETH
    assert chain.escrow.functions.earningsOf(batch.batch_id, gina.address).call() == [3 * REWARD_ETH] * 2


# ------------------------------------------------------------------------------ the command line

runner = CliRunner()


def cli(stack, *args, key: str):
    env = {"KEMPELEN_PRIVATE_KEY": key, "KEMPELEN_RPC_URL": stack.rpc_url, "KEMPELEN_RELAY_URL": stack.relay_url,
           "KEMPELEN_DEPLOYMENTS": str(stack.home / "deployments"), "KEMPELEN_STORE": str(stack.store_dir)}
    result = runner.invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_settle_and_claim_from_the_command_line(stack, chain, tmp_path):
    requester_key, worker = stack.keys[7], worker_of(stack, chain, stack.keys[8])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    code, out = cli(stack, "requester", "create-batch", tasks, "--reward", "0.001", "--settlement-fallback", "2d",
                    key=requester_key)
    assert code == 0 and "settlement mode" in out, out
    batch_id = int(out.split("batch ")[1].split(" funded")[0])
    code, out = cli(stack, "requester", "settle", batch_id, key=requester_key)
    assert code == 1 and "nothing to settle" in out and "waiting at the relay" in out, out
    for task in range(3):
        answer(worker, batch_id, task, "x")

    skip = tmp_path / "skip.jsonl"
    skip.write_text(json.dumps({"worker": worker.address, "task_index": 2}) + "\n")
    code, out = cli(stack, "requester", "settle", batch_id, "--answers", skip, "--skip", skip, key=requester_key)
    assert code == 1 and "--answers or --skip, not both" in out, out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"worker": 5}\n')
    code, out = cli(stack, "requester", "settle", batch_id, "--answers", bad, key=requester_key)
    assert code == 1 and "needs \"worker\"" in out, out
    code, out = cli(stack, "requester", "settle", 99999, key=requester_key)
    assert code == 1 and "unknown batch 99999" in out, out
    code, out = cli(stack, "requester", "settle", batch_id, key=stack.keys[9])
    assert code == 1 and "belongs to" in out, out

    code, out = cli(stack, "requester", "settle", batch_id, "--skip", skip, "--via-relay", key=requester_key)
    assert code == 0 and "3 answers held for settlement, 2 chosen" in out, out
    assert "settled 2 answers" in out and "0.002 claimable by workers" in out, out
    code, out = cli(stack, "requester", "settle", batch_id, "--answers", skip, key=requester_key)
    assert code == 0 and "settled 1 answers" in out and "(settlement 2)" in out, out

    code, out = cli(stack, "worker", "claim", batch_id, "--via-relay", key=worker.signer.private_key)
    assert code == 0 and f"batch {batch_id}: +{3 * REWARD_ETH} base units" in out, out
    code, out = cli(stack, "worker", "claim", batch_id, key=worker.signer.private_key)
    assert code == 1 and "already claimed" in out, out
    code, out = cli(stack, "worker", "claim", key=stack.keys[9])
    assert code == 1 and "nothing to claim" in out, out
    code, out = cli(stack, "worker", "claim", "seven", key=worker.signer.private_key)
    assert code == 2 and "valid integer" in out, out
