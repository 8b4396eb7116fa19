"""Attacks on the escrow: re-entrancy, fee-on-transfer tokens, forced ETH, other people's money."""

import brownie
import pytest
from _helpers import (  # noqa: F401  (fixtures)
    ETH,
    MANIFEST_CID,
    PAID,
    PENDING,
    REASON_CID,
    REENTRANCY_SELECTOR,
    _isolate,
    assert_money_invariant,
    batch_field,
    create_batch,
    deployment,
    deposit_of,
    fund_gas,
    locked_in_batches,
    now,
    sets,
    signed_answer,
    status,
    submit,
    terms,
    token_balance,
    withdrawal_signature,
)
from brownie import (
    FeeOnTransferToken,
    ForceSend,
    ReentrantReceiver,
    ReentrantToken,
    chain,
    web3,
)

OFF, CATCH, BUBBLE = 0, 1, 2
REWARD = 1_000_000
RELAY_FEE = 10_000
BONUS = 123_456


def _holders(d, *extra):
    return [d.requester, d.other_requester, d.relay, d.stranger] + d.workers + list(extra)


def _assert_reentry_refused(attacker):
    """The one armed re-entrant call ran, and the guard turned it away."""
    assert attacker.reentries() == 1
    assert attacker.lastSuccess() is False
    assert bytes(attacker.lastReturnData())[:4] == REENTRANCY_SELECTOR


def _past(deadline):
    chain.sleep(deadline - now() + 1)
    chain.mine()  # so that calls (not only transactions) see the new time


# ---------------------------------------------------------------- re-entrancy: ETH receiver


@pytest.fixture
def receiver(deployment):
    return ReentrantReceiver.deploy({"from": deployment.owner})


@pytest.fixture
def eth_batch(deployment):
    batch_id, _ = create_batch(
        deployment.escrow, deployment.requester, terms(reward=REWARD, relay_fee=RELAY_FEE)
    )
    return batch_id


def test_receiver_reenters_withdraw_eth_refused(deployment, receiver, eth_batch):
    d, escrow = deployment, deployment.escrow
    # The receiver earns as a relay (fees) and as a bonus recipient.
    signed = [signed_answer(escrow, d.workers[i], eth_batch, 0 if i < 2 else 1) for i in range(3)]
    answers, signatures = [a for a, _ in signed], [s for _, s in signed]
    receiver.execute(
        escrow, escrow.submitAnswers.encode_input(answers, signatures), {"from": d.stranger}
    )
    escrow.bonus(eth_batch, receiver, BONUS, REASON_CID, {"from": d.requester, "value": BONUS})
    owed = 3 * RELAY_FEE + BONUS
    assert escrow.balanceOf(ETH, receiver) == owed
    escrow_eth = escrow.balance()

    receiver.arm(escrow, escrow.withdraw.encode_input(ETH), CATCH, {"from": d.stranger})
    tx = receiver.execute(escrow, escrow.withdraw.encode_input(ETH), {"from": d.stranger})
    _assert_reentry_refused(receiver)
    assert receiver.received() == owed  # paid exactly once
    assert receiver.balance() == owed
    assert escrow.balance() == escrow_eth - owed
    assert escrow.balanceOf(ETH, receiver) == 0
    assert [(e["account"], e["amount"]) for e in tx.events["Withdrawn"]] == [(receiver, owed)]
    assert_money_invariant(escrow, ETH, _holders(d, receiver))


def test_receiver_reentry_bubbles_and_withdraw_reverts_whole(deployment, receiver, eth_batch):
    d, escrow = deployment, deployment.escrow
    escrow.bonus(eth_batch, receiver, BONUS, REASON_CID, {"from": d.requester, "value": BONUS})
    receiver.arm(escrow, escrow.withdraw.encode_input(ETH), BUBBLE, {"from": d.stranger})
    with brownie.reverts("ReentrancyGuardReentrantCall: "):
        receiver.execute(escrow, escrow.withdraw.encode_input(ETH), {"from": d.stranger})
    assert escrow.balanceOf(ETH, receiver) == BONUS  # nothing moved
    assert receiver.balance() == 0
    assert_money_invariant(escrow, ETH, _holders(d, receiver))
    # Disarmed, the receiver can still withdraw its balance.
    receiver.arm(escrow, b"", OFF, {"from": d.stranger})
    receiver.execute(escrow, escrow.withdraw.encode_input(ETH), {"from": d.stranger})
    assert receiver.balance() == BONUS


@pytest.mark.parametrize("reenter", ["reclaim", "withdraw", "createBatch", "extend"])
def test_receiver_as_requester_reenters_during_reclaim(deployment, receiver, reenter):
    d, escrow = deployment, deployment.escrow
    batch_terms = terms(reward=REWARD, relay_fee=RELAY_FEE, task_count=3, answers_per_task=1)
    deposit = deposit_of(batch_terms)
    tx = receiver.execute(
        escrow, escrow.createBatch.encode_input(batch_terms), {"from": d.stranger, "value": deposit}
    )
    batch_id = tx.events["BatchCreated"]["batchId"]
    assert tx.events["BatchCreated"]["requester"] == receiver
    # Targets for cross-function re-entry that would succeed outside a callback: a second batch
    # of the receiver's, a bonus it paid itself (an ETH balance), stablecoins it approved.
    tx = receiver.execute(
        escrow, escrow.createBatch.encode_input(batch_terms), {"from": d.stranger, "value": deposit}
    )
    second_batch = tx.events["BatchCreated"]["batchId"]
    receiver.execute(
        escrow,
        escrow.bonus.encode_input(second_batch, receiver, BONUS, REASON_CID),
        {"from": d.stranger, "value": BONUS},
    )
    usdc_terms = terms(token=d.usdc, deadline=batch_terms[5] + 10**6)
    d.usdc.mint(receiver, deposit_of(usdc_terms), {"from": d.stranger})
    receiver.execute(
        d.usdc, d.usdc.approve.encode_input(escrow, deposit_of(usdc_terms)), {"from": d.stranger}
    )
    submit(escrow, d.relay, [signed_answer(escrow, d.workers[0], batch_id, 0)])
    receiver.execute(
        escrow, escrow.approve.encode_input(batch_id, sets([(d.workers[0], 0)])), {"from": d.stranger}
    )
    _past(batch_terms[5])

    unused = 2 * (REWARD + RELAY_FEE)
    assert batch_field(escrow, batch_id, "funds") == unused
    later = batch_terms[5] + 10**6
    calldata = {
        "reclaim": escrow.reclaim.encode_input(batch_id),
        "withdraw": escrow.withdraw.encode_input(ETH),
        "createBatch": escrow.createBatch.encode_input(usdc_terms),
        "extend": escrow.extend.encode_input(batch_id, later, 1, 0),
    }[reenter]
    receiver.arm(escrow, calldata, CATCH, {"from": d.stranger})
    before = receiver.received()
    tx = receiver.execute(escrow, escrow.reclaim.encode_input(batch_id), {"from": d.stranger})
    _assert_reentry_refused(receiver)
    assert receiver.received() - before == unused  # reclaimed exactly once
    assert tx.events["BatchReclaimed"]["amount"] == unused
    assert len(tx.events["BatchReclaimed"]) == 1
    assert batch_field(escrow, batch_id, "funds") == 0
    assert batch_field(escrow, batch_id, "deadline") == batch_terms[5]
    assert escrow.batchCount() == second_batch
    assert escrow.balanceOf(ETH, receiver) == BONUS
    assert_money_invariant(escrow, ETH, _holders(d, receiver))
    with brownie.reverts(f"EscrowNothingToReclaim: {batch_id}"):
        receiver.execute(escrow, escrow.reclaim.encode_input(batch_id), {"from": d.stranger})


# ---------------------------------------------------------------- re-entrancy: ERC-20 callbacks


@pytest.fixture
def rtoken(deployment):
    return ReentrantToken.deploy({"from": deployment.owner})


def _token_batch(d, token, requester=None, **kw):
    kw.setdefault("reward", REWARD)
    kw.setdefault("relay_fee", RELAY_FEE)
    batch_id, _ = create_batch(
        d.escrow, requester or d.requester, terms(token=token, **kw), token=token
    )
    return batch_id


def test_token_reenters_withdraw_refused(deployment, rtoken):
    """The token contract is itself owed (a bonus) and re-enters withdraw while being paid."""
    d, escrow = deployment, deployment.escrow
    batch_id = _token_batch(d, rtoken)
    rtoken.mint(d.requester, BONUS, {"from": d.requester})
    rtoken.approve(escrow, BONUS, {"from": d.requester})
    escrow.bonus(batch_id, rtoken, BONUS, REASON_CID, {"from": d.requester})
    held = rtoken.balanceOf(escrow)

    rtoken.arm(
        escrow, escrow.withdraw.encode_input(rtoken), CATCH, escrow, rtoken, {"from": d.stranger}
    )
    tx = rtoken.execute(escrow, escrow.withdraw.encode_input(rtoken), {"from": d.stranger})
    _assert_reentry_refused(rtoken)
    assert rtoken.balanceOf(rtoken) == BONUS
    assert rtoken.balanceOf(escrow) == held - BONUS
    assert escrow.balanceOf(rtoken, rtoken) == 0
    assert len(tx.events["Withdrawn"]) == 1
    assert_money_invariant(escrow, rtoken, _holders(d, rtoken))


def test_token_reentry_bubbles_and_withdraw_reverts_whole(deployment, rtoken):
    d, escrow = deployment, deployment.escrow
    batch_id = _token_batch(d, rtoken)
    rtoken.mint(d.requester, BONUS, {"from": d.requester})
    rtoken.approve(escrow, BONUS, {"from": d.requester})
    escrow.bonus(batch_id, rtoken, BONUS, REASON_CID, {"from": d.requester})
    rtoken.arm(
        escrow, escrow.withdraw.encode_input(rtoken), BUBBLE, escrow, rtoken, {"from": d.stranger}
    )
    with brownie.reverts("ReentrancyGuardReentrantCall: "):
        rtoken.execute(escrow, escrow.withdraw.encode_input(rtoken), {"from": d.stranger})
    assert escrow.balanceOf(rtoken, rtoken) == BONUS
    assert rtoken.balanceOf(rtoken) == 0
    assert_money_invariant(escrow, rtoken, _holders(d, rtoken))


def test_token_as_requester_reenters_reclaim_refused(deployment, rtoken):
    d, escrow = deployment, deployment.escrow
    batch_terms = terms(
        token=rtoken, reward=REWARD, relay_fee=RELAY_FEE, task_count=2, answers_per_task=1
    )
    deposit = deposit_of(batch_terms)
    rtoken.mint(rtoken, deposit, {"from": d.stranger})
    rtoken.execute(rtoken, rtoken.approve.encode_input(escrow, deposit), {"from": d.stranger})
    tx = rtoken.execute(escrow, escrow.createBatch.encode_input(batch_terms), {"from": d.stranger})
    batch_id = tx.events["BatchCreated"]["batchId"]
    _past(batch_terms[5])

    rtoken.arm(
        escrow, escrow.reclaim.encode_input(batch_id), CATCH, escrow, rtoken, {"from": d.stranger}
    )
    tx = rtoken.execute(escrow, escrow.reclaim.encode_input(batch_id), {"from": d.stranger})
    _assert_reentry_refused(rtoken)
    assert rtoken.balanceOf(rtoken) == deposit  # back once, not twice
    assert rtoken.balanceOf(escrow) == 0
    assert len(tx.events["BatchReclaimed"]) == 1
    assert batch_field(escrow, batch_id, "funds") == 0
    assert_money_invariant(escrow, rtoken, _holders(d, rtoken))


@pytest.mark.parametrize("entry", ["createBatch", "extend", "bonus"])
@pytest.mark.parametrize("reenter", ["createBatch", "submitAnswers", "withdraw", "release"])
def test_token_reenters_while_deposit_is_pulled(deployment, rtoken, entry, reenter):
    """The hook fires inside transferFrom(requester -> escrow), between the escrow's balance
    readings of its fee-on-transfer check."""
    d, escrow = deployment, deployment.escrow
    batch_id = _token_batch(d, rtoken)
    # What the token contract could legitimately do outside a callback: it is a relay with a
    # signed answer in hand, holds a bonus, and can fund batches of its own.
    signed = signed_answer(escrow, d.workers[0], batch_id, 0)
    rtoken.mint(d.requester, 10**12, {"from": d.requester})
    rtoken.approve(escrow, 10**12, {"from": d.requester})
    escrow.bonus(batch_id, rtoken, BONUS, REASON_CID, {"from": d.requester})
    submit(escrow, d.relay, [signed_answer(escrow, d.workers[1], batch_id, 1)])
    chain.sleep(601)
    nested_terms = terms(token=rtoken, task_count=1, answers_per_task=1, reward=5, relay_fee=0)
    rtoken.mint(rtoken, 5, {"from": d.stranger})
    rtoken.execute(rtoken, rtoken.approve.encode_input(escrow, 5), {"from": d.stranger})
    calldata = {
        "createBatch": escrow.createBatch.encode_input(nested_terms),
        "submitAnswers": escrow.submitAnswers.encode_input([signed[0]], [signed[1]]),
        "withdraw": escrow.withdraw.encode_input(rtoken),
        "release": escrow.release.encode_input(batch_id, sets([(d.workers[1], 1)])),
    }[reenter]
    count = escrow.batchCount()
    relay_balance = escrow.balanceOf(rtoken, rtoken)

    rtoken.arm(escrow, calldata, CATCH, d.requester, escrow, {"from": d.stranger})
    if entry == "createBatch":
        tx = escrow.createBatch(terms(token=rtoken), {"from": d.requester})
        assert tx.events["BatchCreated"]["batchId"] == count + 1
    elif entry == "extend":
        tx = escrow.extend(batch_id, now() + 7200, 2, 777, {"from": d.requester})
        assert tx.events["BatchExtended"]["topUp"] == 777
    else:
        tx = escrow.bonus(batch_id, d.workers[2], 777, REASON_CID, {"from": d.requester})
        assert escrow.balanceOf(rtoken, d.workers[2]) == 777
    _assert_reentry_refused(rtoken)
    # The re-entrant call left no trace.
    assert escrow.batchCount() == count + (entry == "createBatch")
    assert status(escrow, batch_id, d.workers[0], 0) == 0
    assert status(escrow, batch_id, d.workers[1], 1) == PENDING
    assert escrow.balanceOf(rtoken, rtoken) == relay_balance
    assert escrow.balanceOf(rtoken, d.workers[1]) == 0
    assert_money_invariant(escrow, rtoken, _holders(d, rtoken))


# ---------------------------------------------------------------- fee-on-transfer tokens


@pytest.fixture
def fot(deployment):
    return FeeOnTransferToken.deploy(0, {"from": deployment.owner})


def _fee(amount, bps=100):
    return max(1, amount * bps // 10_000)


def test_fee_on_transfer_refused_on_create(deployment, fot):
    d, escrow = deployment, deployment.escrow
    fot.setFee(100, {"from": d.owner})
    batch_terms = terms(token=fot)
    deposit = deposit_of(batch_terms)
    fot.mint(d.requester, deposit, {"from": d.requester})
    fot.approve(escrow, deposit, {"from": d.requester})
    expected = (
        f"EscrowFeeOnTransferToken: {fot.address.lower()}, {deposit}, {deposit - _fee(deposit)}"
    )
    with brownie.reverts(expected):
        escrow.createBatch(batch_terms, {"from": d.requester})
    assert escrow.batchCount() == 0
    assert token_balance(fot, escrow) == 0
    assert fot.balanceOf(d.requester) == deposit


def test_fee_switched_on_later_refused_on_extend_and_bonus(deployment, fot):
    d, escrow = deployment, deployment.escrow
    batch_id = _token_batch(d, fot)
    funds = batch_field(escrow, batch_id, "funds")
    fot.setFee(100, {"from": d.owner})
    fot.mint(d.requester, 10**9, {"from": d.requester})
    fot.approve(escrow, 10**9, {"from": d.requester})
    deadline = batch_field(escrow, batch_id, "deadline")
    with brownie.reverts(
        f"EscrowFeeOnTransferToken: {fot.address.lower()}, 5000, {5000 - _fee(5000)}"
    ):
        escrow.extend(batch_id, deadline, 2, 5000, {"from": d.requester})
    with brownie.reverts(f"EscrowFeeOnTransferToken: {fot.address.lower()}, 1, 0"):
        escrow.bonus(batch_id, d.workers[0], 1, REASON_CID, {"from": d.requester})
    assert batch_field(escrow, batch_id, "funds") == funds
    assert escrow.balanceOf(fot, d.workers[0]) == 0
    # An extension without a top-up moves no tokens and stays possible.
    escrow.extend(batch_id, deadline + 10, 2, 0, {"from": d.requester})
    assert_money_invariant(escrow, fot, _holders(d))


def test_fee_on_outgoing_transfer_keeps_books_exact(deployment, fot):
    """Once accepted, a fee on payouts costs the payee, never the escrow's other creditors."""
    d, escrow = deployment, deployment.escrow
    w = d.workers[0]
    batch_id = _token_batch(d, fot, task_count=2, answers_per_task=1)
    submit(escrow, d.relay, [signed_answer(escrow, w, batch_id, 0)])
    escrow.approve(batch_id, sets([(w, 0)]), {"from": d.requester})
    fot.setFee(100, {"from": d.owner})
    fund_gas(w)
    escrow.withdraw(fot, {"from": w})
    assert fot.balanceOf(w) == REWARD - _fee(REWARD)
    assert escrow.balanceOf(fot, w) == 0
    assert_money_invariant(escrow, fot, _holders(d))
    _past(batch_field(escrow, batch_id, "deadline"))
    escrow.reclaim(batch_id, {"from": d.requester})
    escrow.withdraw(fot, {"from": d.relay})
    assert token_balance(fot, escrow) == 0
    assert fot.balanceOf(escrow) == 0


# ---------------------------------------------------------------- surplus nobody is owed


def test_forced_eth_is_surplus_and_escrow_keeps_working(deployment):
    d, escrow = deployment, deployment.escrow
    w0, w1 = d.workers[:2]
    forced = 7 * 10**17
    ForceSend.deploy(escrow, {"from": d.stranger, "value": forced})
    assert escrow.balance() == forced
    assert locked_in_batches(escrow, ETH) == 0  # owed to nobody
    assert web3.eth.get_code(escrow.address) != b""  # not the escrow that self-destructed

    batch_terms = terms(reward=REWARD, relay_fee=RELAY_FEE, task_count=2, answers_per_task=1)
    deposit = deposit_of(batch_terms)
    # Forced ETH cannot stand in for a deposit.
    with brownie.reverts(f"EscrowWrongDeposit: {deposit}, 0"):
        escrow.createBatch(batch_terms, {"from": d.requester})
    batch_id, _ = create_batch(escrow, d.requester, batch_terms)
    holders = _holders(d)
    assert_money_invariant(escrow, ETH, holders, surplus=forced)

    submit(
        escrow,
        d.relay,
        [signed_answer(escrow, w0, batch_id, 0), signed_answer(escrow, w1, batch_id, 1)],
    )
    escrow.approve(batch_id, sets([(w0, 0)]), {"from": d.requester})
    chain.sleep(601)
    escrow.release(batch_id, sets([(w1, 1)]), {"from": d.stranger})
    assert_money_invariant(escrow, ETH, holders, surplus=forced)
    for w in (w0, w1):
        fund_gas(w)
        escrow.withdraw(ETH, {"from": w})
    escrow.withdraw(ETH, {"from": d.relay})
    # Nobody can withdraw the surplus: it is owed to no account.
    with brownie.reverts(f"EscrowNothingToWithdraw: {d.stranger.address.lower()}, {ETH}"):
        escrow.withdraw(ETH, {"from": d.stranger})
    assert locked_in_batches(escrow, ETH) == 0
    assert escrow.balance() == forced
    assert_money_invariant(escrow, ETH, holders, surplus=forced)


def test_plain_eth_transfer_refused(deployment):
    """Without a receive(), ETH can only be forced in: none gets stuck by mistake."""
    with brownie.reverts():
        deployment.stranger.transfer(deployment.escrow, 1)
    assert deployment.escrow.balance() == 0


def test_tokens_sent_directly_are_surplus(deployment):
    d, escrow, usdc = deployment, deployment.escrow, deployment.usdc
    batch_id = _token_batch(d, usdc)
    usdc.mint(d.stranger, 999, {"from": d.stranger})
    usdc.transfer(escrow, 999, {"from": d.stranger})
    owed = locked_in_batches(escrow, usdc)  # the batch's deposit; the 999 are owed to nobody
    assert owed == deposit_of(terms(token=usdc, reward=REWARD, relay_fee=RELAY_FEE))
    assert_money_invariant(escrow, usdc, _holders(d), surplus=999)
    _past(batch_field(escrow, batch_id, "deadline"))
    assert escrow.reclaim.call(batch_id, {"from": d.requester}) == owed  # not owed + 999
    escrow.reclaim(batch_id, {"from": d.requester})
    assert_money_invariant(escrow, usdc, _holders(d), surplus=999)


# ---------------------------------------------------------------- only the requester


@pytest.fixture
def reviewed_batch(deployment, eth_batch):
    """The ETH batch with two pending answers."""
    d = deployment
    submit(
        d.escrow,
        d.relay,
        [
            signed_answer(d.escrow, d.workers[0], eth_batch, 0),
            signed_answer(d.escrow, d.workers[1], eth_batch, 0),
        ],
    )
    return eth_batch


def _requester_calls(d, batch_id):
    w = d.workers[0]
    deadline = batch_field(d.escrow, batch_id, "deadline")
    return {
        "approve": lambda tx: d.escrow.approve(batch_id, sets([(w, 0)]), tx),
        "reject": lambda tx: d.escrow.reject(batch_id, sets([(w, 0)]), REASON_CID, tx),
        "extend": lambda tx: d.escrow.extend(batch_id, deadline + 60, 3, 0, tx),
        "extend_topup": lambda tx: d.escrow.extend(batch_id, deadline, 2, 100, dict(tx, value=100)),
        "reclaim": lambda tx: d.escrow.reclaim(batch_id, tx),
        "bonus": lambda tx: d.escrow.bonus(batch_id, w, 5, REASON_CID, dict(tx, value=5)),
        "revealGold": lambda tx: d.escrow.revealGold(batch_id, b"\x01", bytes(32), tx),
    }


@pytest.mark.parametrize(
    "call", ["approve", "reject", "extend", "extend_topup", "reclaim", "bonus", "revealGold"]
)
@pytest.mark.parametrize("caller", ["stranger", "other_requester", "relay", "worker"])
def test_only_requester_may_act_on_batch(deployment, reviewed_batch, call, caller):
    d, escrow = deployment, deployment.escrow
    who = d.workers[0] if caller == "worker" else getattr(d, caller)
    if caller == "worker":
        fund_gas(who)
    # Give the other requester a batch of its own: owning some batch is not owning this one.
    create_batch(escrow, d.other_requester, terms())
    if call == "reclaim":
        _past(batch_field(escrow, reviewed_batch, "deadline"))
    batch_before = escrow.batch(reviewed_batch)
    with brownie.reverts(f"EscrowNotRequester: {reviewed_batch}, {who.address.lower()}"):
        _requester_calls(d, reviewed_batch)[call]({"from": who})
    assert escrow.batch(reviewed_batch) == batch_before
    assert status(escrow, reviewed_batch, d.workers[0], 0) == PENDING
    assert escrow.balanceOf(ETH, d.workers[0]) == 0


@pytest.mark.parametrize(
    "call", ["approve", "reject", "extend", "reclaim", "bonus", "revealGold", "release"]
)
def test_calls_on_unknown_batch_revert(deployment, call):
    d = deployment
    unknown = d.escrow.batchCount() + 1
    w = d.workers[0]
    fn = {
        "approve": lambda: d.escrow.approve(unknown, sets([(w, 0)]), {"from": d.requester}),
        "reject": lambda: d.escrow.reject(unknown, sets([(w, 0)]), REASON_CID, {"from": d.requester}),
        "extend": lambda: d.escrow.extend(unknown, 2**40 - 1, 1, 0, {"from": d.requester}),
        "reclaim": lambda: d.escrow.reclaim(unknown, {"from": d.requester}),
        "bonus": lambda: d.escrow.bonus(
            unknown, w, 5, REASON_CID, {"from": d.requester, "value": 5}
        ),
        "revealGold": lambda: d.escrow.revealGold(
            unknown, b"\x01", bytes(32), {"from": d.requester}
        ),
        "release": lambda: d.escrow.release(unknown, sets([(w, 0)]), {"from": d.requester}),
    }[call]
    with brownie.reverts(f"EscrowUnknownBatch: {unknown}"):
        fn()
    assert d.escrow.batchCount() == unknown - 1


def test_requester_cannot_pay_a_worker_who_did_not_answer(deployment, reviewed_batch):
    """Approval names the answer; the reward cannot be redirected to another account."""
    d, escrow = deployment, deployment.escrow
    for who, task in ((d.workers[2], 0), (d.requester, 0), (d.workers[0], 1)):
        with brownie.reverts(
            f"EscrowAnswerNotPending: {reviewed_batch}, {who.address.lower()}, {task}, 0"
        ):
            escrow.approve(reviewed_batch, sets([(who, task)]), {"from": d.requester})
    assert escrow.balanceOf(ETH, d.requester) == 0


def test_release_credits_the_worker_not_the_caller(deployment, reviewed_batch):
    d, escrow = deployment, deployment.escrow
    w = d.workers[0]
    with brownie.reverts():
        escrow.release(reviewed_batch, sets([(w, 0)]), {"from": d.stranger})  # window still open
    chain.sleep(601)
    tx = escrow.release(reviewed_batch, sets([(w, 0)]), {"from": d.stranger})
    assert tx.events["AnswersReleased"]["worker"] == w
    assert (tx.events["AnswersReleased"]["firstTask"], tx.events["AnswersReleased"]["tasks"]) == (0, 1)
    assert escrow.balanceOf(ETH, w) == REWARD
    assert escrow.balanceOf(ETH, d.stranger) == 0
    assert status(escrow, reviewed_batch, w, 0) == PAID


# ---------------------------------------------------------------- nobody else moves a balance


@pytest.fixture
def paid_worker(deployment, reviewed_batch):
    d = deployment
    d.escrow.approve(reviewed_batch, sets([(d.workers[0], 0)]), {"from": d.requester})
    assert d.escrow.balanceOf(ETH, d.workers[0]) == REWARD
    return d.workers[0]


def test_withdraw_pays_only_the_caller(deployment, paid_worker):
    d, escrow = deployment, deployment.escrow
    for who in (d.stranger, d.requester, d.workers[1]):
        if who == d.workers[1]:
            fund_gas(who)
        with brownie.reverts(f"EscrowNothingToWithdraw: {who.address.lower()}, {ETH}"):
            escrow.withdraw(ETH, {"from": who})
    with brownie.reverts(
        f"EscrowNothingToWithdraw: {d.stranger.address.lower()}, {d.usdc.address.lower()}"
    ):
        escrow.withdraw(d.usdc, {"from": d.stranger})
    assert escrow.balanceOf(ETH, paid_worker) == REWARD
    fund_gas(paid_worker)
    before = paid_worker.balance()
    tx = escrow.withdraw(ETH, {"from": paid_worker})
    assert paid_worker.balance() == before + REWARD - tx.gas_used * tx.gas_price
    assert (tx.events["Withdrawn"]["account"], tx.events["Withdrawn"]["amount"]) == (
        paid_worker,
        REWARD,
    )


def test_withdraw_for_pays_the_account_not_the_submitter(deployment, paid_worker):
    d, escrow = deployment, deployment.escrow
    deadline = now() + 3600
    nonce = escrow.nonces(paid_worker)
    signature = withdrawal_signature(escrow, paid_worker, ETH, deadline, nonce=nonce)
    worker_eth, relay_escrow = paid_worker.balance(), escrow.balanceOf(ETH, d.stranger)
    tx = escrow.withdrawFor(paid_worker, ETH, deadline, signature, {"from": d.stranger})
    assert paid_worker.balance() == worker_eth + REWARD
    assert escrow.balanceOf(ETH, paid_worker) == 0
    assert escrow.balanceOf(ETH, d.stranger) == relay_escrow
    assert tx.events["Withdrawn"]["account"] == paid_worker
    assert escrow.nonces(paid_worker) == nonce + 1

    # Earn again: the spent signature must not work a second time.
    batch_id, _ = create_batch(escrow, d.requester, terms(reward=REWARD, relay_fee=RELAY_FEE))
    submit(escrow, d.relay, [signed_answer(escrow, paid_worker, batch_id, 0)])
    escrow.approve(batch_id, sets([(paid_worker, 0)]), {"from": d.requester})
    with brownie.reverts(
        revert_pattern=f"EscrowInvalidSigner: {paid_worker.address.lower()}, 0x[0-9a-f]{{40}}"
    ):
        escrow.withdrawFor(paid_worker, ETH, deadline, signature, {"from": d.stranger})
    assert escrow.balanceOf(ETH, paid_worker) == REWARD


@pytest.mark.parametrize(
    "forgery", ["other_signer", "other_token", "other_chain", "other_deadline", "wrong_nonce"]
)
def test_withdraw_for_refuses_forged_authorization(deployment, paid_worker, forgery):
    d, escrow = deployment, deployment.escrow
    deadline = now() + 3600
    thief = d.workers[3]
    kwargs = {}
    signer = paid_worker
    if forgery == "other_signer":
        signer = thief
        kwargs["account"] = paid_worker.address
    elif forgery == "other_token":
        kwargs["token"] = d.usdc.address
    elif forgery == "other_chain":
        kwargs["chain_id"] = chain.id + 1
    elif forgery == "wrong_nonce":
        kwargs["nonce"] = escrow.nonces(paid_worker) + 1
    token = kwargs.pop("token", ETH)
    signature = withdrawal_signature(escrow, signer, token, deadline, **kwargs)
    submitted_deadline = deadline + 1 if forgery == "other_deadline" else deadline
    expected_recovered = thief.address.lower() if forgery == "other_signer" else "0x[0-9a-f]{40}"
    with brownie.reverts(
        revert_pattern=f"EscrowInvalidSigner: {paid_worker.address.lower()}, {expected_recovered}"
    ):
        escrow.withdrawFor(paid_worker, ETH, submitted_deadline, signature, {"from": d.stranger})
    assert escrow.balanceOf(ETH, paid_worker) == REWARD


def test_withdraw_for_expired_signature(deployment, paid_worker):
    d, escrow = deployment, deployment.escrow
    deadline = now() + 100
    signature = withdrawal_signature(
        escrow, paid_worker, ETH, deadline, nonce=escrow.nonces(paid_worker)
    )
    chain.sleep(200)
    with brownie.reverts(f"EscrowSignatureExpired: {deadline}"):
        escrow.withdrawFor(paid_worker, ETH, deadline, signature, {"from": d.stranger})
    assert escrow.balanceOf(ETH, paid_worker) == REWARD


def test_withdraw_for_zero_account_with_garbage_signature(deployment, paid_worker):
    """ecrecover's address(0) must not authorize the zero account (nor anyone)."""
    d, escrow = deployment, deployment.escrow
    with brownie.reverts():
        escrow.withdrawFor(ETH, ETH, now() + 3600, bytes(65), {"from": d.stranger})
    with brownie.reverts():
        escrow.withdrawFor(paid_worker, ETH, now() + 3600, bytes(65), {"from": d.stranger})
    assert escrow.balanceOf(ETH, paid_worker) == REWARD


def test_only_authorized_escrows_record_reputation(deployment):
    d = deployment
    w = d.workers[0]
    with brownie.reverts(f"ReputationUnauthorizedEscrow: {d.stranger.address.lower()}"):
        d.reputation.record(d.requester, 0, [w], [1000], {"from": d.stranger})
    with brownie.reverts(f"ReputationUnauthorizedEscrow: {d.requester.address.lower()}"):
        d.reputation.record(d.requester, 0, [w], [1000], {"from": d.requester})
    with brownie.reverts(revert_pattern=r"OwnableUnauthorizedAccount: .*"):
        d.reputation.setEscrow(d.stranger, True, {"from": d.stranger})
    assert d.reputation.score(w) == 0
    assert not d.reputation.isEscrow(d.stranger)
