"""The requester SDK against a real anvil and a real content store."""

import json

import pytest
from eth_utils import keccak
from web3.logs import DISCARD

from kempelen.chain.contracts import ETH, TransactionReverted
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.events import reviewed_tasks
from kempelen.sdk.amounts import AmountError, format_amount, to_base_units
from kempelen.sdk.answers import sign_answer, submit_direct
from kempelen.sdk.keys import KeyLoadError, Signer, load_signer, write_keystore
from kempelen.sdk.pinning import StorePinner
from kempelen.sdk.requester import BatchError, Requester


@pytest.fixture
def requester(chain, keys, tmp_path):
    signer = Signer(keys[1])
    usdc = chain.token(chain.deployment.tokens["USDC"])
    chain.transact(keys[1], usdc.functions.mint(signer.address, 1_000 * 10**6))
    return Requester(chain, signer, StorePinner(ContentStore(tmp_path / "store")))


def advance(chain, seconds):
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


@pytest.mark.parametrize("amount, decimals, units", [("0.05", 6, 50_000), ("1", 18, 10**18), (3, 6, 3_000_000),
                                                      ("0.000001", 6, 1)])
def test_amounts_round_trip(amount, decimals, units):
    assert to_base_units(amount, decimals) == units
    assert to_base_units(format_amount(units, decimals), decimals) == units


@pytest.mark.parametrize("bad", ["-1", "abc", "0.0000001", "nan", ""])
def test_bad_amounts_are_refused_clearly(bad):
    with pytest.raises(AmountError):
        to_base_units(bad, 6)


def test_keystore_round_trip_and_wrong_password(tmp_path, keys, monkeypatch):
    path = write_keystore(keys[3], "correct horse", tmp_path / "key.json")
    assert load_signer(path, "correct horse").address == Signer(keys[3]).address
    with pytest.raises(KeyLoadError, match="wrong password"):
        load_signer(path, "battery staple")
    monkeypatch.delenv("KEMPELEN_PRIVATE_KEY", raising=False)
    with pytest.raises(KeyLoadError, match="no key"):
        load_signer()
    assert keys[3][2:] not in repr(Signer(keys[3]))  # the key never shows in a repr


@pytest.mark.parametrize("token", ["ETH", "USDC"])
def test_batch_life_through_the_sdk(chain, keys, requester, snapshot, token):
    tasks = [{"text": f"sentence {i}"} for i in range(4)]
    unallocated = requester.balance(token)["unallocated_in_batches"]  # other tests' batches
    batch = requester.create_batch(tasks, "0.05", token=token, answers_per_task=2, relay_fee="0.001",
                                   deadline=3600, review_window=600)
    decimals = 18 if token == "ETH" else 6
    assert batch.deposit == 4 * 2 * to_base_units("0.051", decimals)
    manifest = json.loads(requester.pinner.fetch(batch.manifest_cid))
    assert [t["cid"] for t in manifest["tasks"]] == list(batch.task_cids)
    assert json.loads(requester.pinner.fetch(batch.task_cids[2])) == tasks[2]

    workers = [Signer(k) for k in keys[4:6]]
    signed = [sign_answer(chain.domain, w, batch.batch_id, t, {"label": "x"}) for w in workers for t in range(4)]
    submit_direct(chain, Signer(keys[7]), signed)
    for answer in signed:
        requester.pinner.store.put(answer.payload)  # as the relay that took them would
    answers = requester.list_answers(batch.batch_id)
    assert {(a.worker, a.task_index) for a in answers} == {(w.address, t) for w in workers for t in range(4)}
    assert {a.answer_cid for a in answers} == {s.cid for s in signed}

    requester.approve(batch.batch_id, answers[:3])
    requester.reject(batch.batch_id, answers[3:5], "labels contradict the instructions")
    rejected = requester.list_answers(batch.batch_id, "rejected")
    reason = json.loads(requester.pinner.fetch(rejected[0].reason_cid))
    assert reason["reason"] == "labels contradict the instructions" and len(reason["answers"]) == 2

    with pytest.raises(TransactionReverted, match="EscrowDeadlineNotPassed"):
        requester.reclaim(batch.batch_id)
    advance(chain, 3601)
    pending = requester.list_answers(batch.batch_id, "pending")
    requester.release(batch.batch_id, pending)
    refund = requester.reclaim(batch.batch_id)
    reward = to_base_units("0.05", decimals)
    assert refund == 2 * reward  # the two rejected answers' rewards; fees were earned by the submitter
    assert {a.status for a in requester.list_answers(batch.batch_id)} == {"approved", "rejected", "released"}
    exported = [json.loads(line) for line in requester.export(batch.batch_id, "jsonl",
                                                              fetch=requester.pinner.fetch).splitlines()]
    assert len(exported) == 8 and {row["answer"] for row in exported} == {'{"label":"x"}'}
    assert {row["task_cid"] for row in exported} == set(batch.task_cids)
    assert requester.balance(token)["unallocated_in_batches"] == unallocated  # this one reclaimed


def test_unaffordable_batch_is_refused_before_any_transaction(chain, keys, tmp_path, snapshot):
    poor = Requester(chain, Signer(keys[8]), StorePinner(ContentStore(tmp_path / "s")))
    with pytest.raises(BatchError, match="not enough balance"):
        poor.create_batch([{"t": 1}], "5", token="USDC")
    with pytest.raises(BatchError, match="at least one task"):
        poor.create_batch([], "1")


def test_reveal_gold_bonus_block_and_extend(chain, keys, requester, snapshot):
    batch = requester.create_batch([{"t": 1}, {"t": 2}], "0.01", token="ETH", gold=[{"task": 0, "label": "a"}])
    requester.reveal_gold(batch)
    worker = Signer(keys[5]).address
    before = chain.escrow.functions.balanceOf(ETH, worker).call()
    requester.bonus(batch.batch_id, worker, "0.002", "great work")
    assert chain.escrow.functions.balanceOf(ETH, worker).call() - before == to_base_units("0.002", 18)
    requester.block_worker(worker, "spam")
    assert chain.escrow.functions.isBlocked(requester.signer.address, worker).call()
    old = requester.batch(batch.batch_id)
    requester.extend(batch.batch_id, deadline=30 * 24 * 3600, answers_per_task=2, top_up="0.02")
    new = requester.batch(batch.batch_id)
    assert new["deadline"] > old["deadline"] and new["answersPerTask"] == 2
    assert new["funds"] == old["funds"] + to_base_units("0.02", 18)
    with pytest.raises(BatchError, match="unknown batch"):
        requester.batch(10_000)


def test_approve_spanning_groups_and_workers_is_one_transaction(chain, keys, requester, snapshot):
    """Answers of two workers in two 96-task groups: one approve, one event per worker and group,
    naming exactly the approved answers; an answer named twice is refused before any transaction."""
    batch = requester.create_batch([{"t": i} for i in range(100)], "0.001", token="ETH", answers_per_task=2)
    workers = [Signer(k) for k in keys[4:6]]
    answered = {workers[0]: [0, 5, 95, 96, 99], workers[1]: [1, 95, 97]}
    signed = [sign_answer(chain.domain, w, batch.batch_id, t, {"label": "x"})
              for w, tasks in answered.items() for t in tasks]
    submit_direct(chain, Signer(keys[7]), signed)
    pending = requester.list_answers(batch.batch_id, "pending")
    chosen = [a for a in pending if (a.worker, a.task_index) != (workers[0].address, 5)]  # one stays pending
    assert len(chosen) == 7

    nonce = chain.w3.eth.get_transaction_count(requester.signer.address)
    tx_hash = requester.approve(batch.batch_id, chosen)
    assert chain.w3.eth.get_transaction_count(requester.signer.address) == nonce + 1
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    events = chain.escrow.events.AnswersApproved().process_receipt(receipt, errors=DISCARD)  # reputation logs too
    assert sorted((e.args.worker.lower(), e.args.firstTask) for e in events) == sorted(
        {(w.address.lower(), t - t % 96) for w, tasks in answered.items() for t in tasks})  # one per set
    named = [(e.args.worker, t) for e in events for t in reviewed_tasks(e.args)]
    assert sorted(named) == sorted((a.worker, a.task_index) for a in chosen)  # each exactly once
    statuses = {(a.worker, a.task_index): a.status for a in requester.list_answers(batch.batch_id)}
    assert statuses.pop((workers[0].address, 5)) == "pending" and set(statuses.values()) == {"approved"}

    left = requester.list_answers(batch.batch_id, "pending")
    nonce = chain.w3.eth.get_transaction_count(requester.signer.address)
    for call in (lambda: requester.approve(batch.batch_id, left + left),
                 lambda: requester.release(batch.batch_id, [(workers[0].address, 5), (workers[0].address.lower(), 5)]),
                 lambda: requester.reject(batch.batch_id, left * 2, "named twice")):
        with pytest.raises(BatchError, match="named twice"):
            call()
    assert chain.w3.eth.get_transaction_count(requester.signer.address) == nonce  # nothing was sent
    assert [a.status for a in requester.list_answers(batch.batch_id, "pending")] == ["pending"]


def _deploy(chain, key, name, *args) -> str:
    from kempelen.chain import artifacts

    art = artifacts.load(name)
    factory = chain.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    return chain.transact(key, factory.constructor(*args)).contractAddress


def test_erc20_funding_is_one_multicall_with_a_permit(chain, keys, requester, snapshot):
    """permitDeposit + createBatch in one multicall: no approve transaction, no allowance left."""
    usdc = chain.token(chain.deployment.tokens["USDC"])
    escrow = chain.escrow.address
    assert usdc.functions.allowance(requester.signer.address, escrow).call() == 0
    nonce = chain.w3.eth.get_transaction_count(requester.signer.address)
    wallet = usdc.functions.balanceOf(requester.signer.address).call()

    batch = requester.create_batch([{"t": 1}, {"t": 2}], "0.05", token="USDC", answers_per_task=3, relay_fee="0.01")

    assert chain.w3.eth.get_transaction_count(requester.signer.address) == nonce + 1
    tx = chain.w3.eth.get_transaction("0x" + batch.tx_hash.removeprefix("0x"))
    assert tx["to"] == escrow and bytes(tx["input"])[:4] == keccak(text="multicall(bytes[])")[:4]
    assert batch.deposit == 2 * 3 * 60_000 and requester.batch(batch.batch_id)["funds"] == batch.deposit
    assert wallet - usdc.functions.balanceOf(requester.signer.address).call() == batch.deposit
    assert usdc.functions.allowance(requester.signer.address, escrow).call() == 0  # the permit was spent exactly


def test_a_token_without_permit_is_approved_then_deposited(chain, keys, requester, snapshot):
    plain = chain.token(_deploy(chain, keys[0], "FeeOnTransferToken", 0))  # no fee, no EIP-2612 permit
    chain.transact(keys[1], plain.functions.mint(requester.signer.address, 10**18))
    nonce = chain.w3.eth.get_transaction_count(requester.signer.address)

    batch = requester.create_batch([{"t": 1}], "0.1", token=plain.address)

    assert chain.w3.eth.get_transaction_count(requester.signer.address) == nonce + 2  # approve, createBatch
    assert requester.batch(batch.batch_id)["funds"] == batch.deposit == 10**17
