"""withdraw / withdrawFor: pull payments, and the gasless EIP-712 withdrawal a worker signs."""

import brownie
from _helpers import token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import DAY, reverts, sets, sign_withdrawal

REWARD = 10**6


def paid(escrow, requester, batch_id, worker, submit, tasks=(0,)):
    entries = [(worker, batch_id, t) for t in tasks]
    submit(entries)
    escrow.approve(batch_id, sets(entries), {"from": requester})


def test_withdraw_eth(escrow, requester, eth_batch, workers, submit):
    worker = workers[0]
    paid(escrow, requester, eth_batch, worker, submit, tasks=(0, 1))
    brownie.accounts[0].transfer(worker, 10**18)
    owed, before = token_balance(ZERO_ADDRESS, escrow), worker.balance()
    tx = escrow.withdraw(ZERO_ADDRESS, {"from": worker, "gas_price": 0})

    assert tx.return_value == 2 * REWARD
    assert worker.balance() == before + 2 * REWARD
    assert escrow.balanceOf(ZERO_ADDRESS, worker) == 0
    assert token_balance(ZERO_ADDRESS, escrow) == owed - 2 * REWARD
    assert dict(tx.events["Withdrawn"]) == {"account": worker, "token": ZERO_ADDRESS, "amount": 2 * REWARD}


def test_withdraw_erc20_and_relay_fees(escrow, stablecoin, funded_requester, usdc_batch, relayer, workers, submit):
    paid(escrow, funded_requester, usdc_batch, workers[0], submit)
    brownie.accounts[0].transfer(workers[0], 10**18)
    tx = escrow.withdraw(stablecoin, {"from": workers[0]})
    assert stablecoin.balanceOf(workers[0]) == REWARD
    assert dict(tx.events["Withdrawn"]) == {"account": workers[0], "token": stablecoin, "amount": REWARD}

    tx = escrow.withdraw(stablecoin, {"from": relayer})
    assert tx.return_value == 10_000
    assert stablecoin.balanceOf(relayer) == 10_000


def test_nothing_to_withdraw(escrow, outsider, stablecoin):
    with reverts("EscrowNothingToWithdraw", outsider, stablecoin):
        escrow.withdraw(stablecoin, {"from": outsider})


def test_withdraw_for_pays_the_signer_gaslessly(escrow, requester, outsider, eth_batch, workers, submit):
    worker = workers[1]  # holds no ETH at all
    paid(escrow, requester, eth_batch, worker, submit)
    assert worker.balance() == 0
    deadline = chain.time() + DAY
    signature = sign_withdrawal(escrow, worker, ZERO_ADDRESS, escrow.nonces(worker), deadline)
    tx = escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, signature, {"from": outsider})

    assert tx.return_value == REWARD
    assert worker.balance() == REWARD  # paid to the account itself, never the caller
    assert dict(tx.events["Withdrawn"]) == {"account": worker, "token": ZERO_ADDRESS, "amount": REWARD}
    assert escrow.nonces(worker) == 1
    # replaying the same signature: the nonce moved on, so it recovers someone else
    with brownie.reverts():
        escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, signature, {"from": outsider})


def test_withdraw_for_compact_signature(escrow, requester, outsider, eth_batch, workers, submit):
    from kempelen.protocol.signing import to_compact

    worker = workers[2]
    paid(escrow, requester, eth_batch, worker, submit)
    deadline = chain.time() + DAY
    signature = to_compact(sign_withdrawal(escrow, worker, ZERO_ADDRESS, 0, deadline))
    assert escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, signature, {"from": outsider}).return_value == REWARD


def test_withdraw_for_errors(escrow, requester, outsider, eth_batch, workers, submit):
    worker, other = workers[3], workers[4]
    paid(escrow, requester, eth_batch, worker, submit)
    deadline = chain.time() + DAY

    expired = chain[-1].timestamp - 1
    signature = sign_withdrawal(escrow, worker, ZERO_ADDRESS, 0, expired)
    with reverts("EscrowSignatureExpired", expired):
        escrow.withdrawFor(worker, ZERO_ADDRESS, expired, signature, {"from": outsider})

    forged = sign_withdrawal(escrow, worker, ZERO_ADDRESS, 0, deadline, signer=other)  # wrong key
    with reverts("EscrowInvalidSigner", worker, other):
        escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, forged, {"from": outsider})

    with reverts("EscrowInvalidSigner", worker, ZERO_ADDRESS):
        escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, b"\x01" * 10, {"from": outsider})

    used = sign_withdrawal(escrow, worker, ZERO_ADDRESS, 0, deadline)
    escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, used, {"from": outsider})
    replay_signer = None
    try:
        escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, used, {"from": outsider})
    except brownie.exceptions.VirtualMachineError as exc:
        replay_signer = exc.revert_msg
    assert replay_signer is not None and replay_signer.startswith("EscrowInvalidSigner")

    fresh = sign_withdrawal(escrow, worker, ZERO_ADDRESS, 1, deadline)
    with reverts("EscrowNothingToWithdraw", worker, ZERO_ADDRESS):
        escrow.withdrawFor(worker, ZERO_ADDRESS, deadline, fresh, {"from": outsider})


def test_balance_after_a_withdrawal_counts_from_zero(escrow, requester, eth_batch, workers, submit):
    worker = workers[5]
    brownie.accounts[0].transfer(worker, 10**18)
    paid(escrow, requester, eth_batch, worker, submit, tasks=(0,))
    escrow.withdraw(ZERO_ADDRESS, {"from": worker})
    assert escrow.balanceOf(ZERO_ADDRESS, worker) == 0
    with reverts("EscrowNothingToWithdraw", worker, ZERO_ADDRESS):
        escrow.withdraw(ZERO_ADDRESS, {"from": worker})
    paid(escrow, requester, eth_batch, worker, submit, tasks=(1, 2))
    assert escrow.balanceOf(ZERO_ADDRESS, worker) == 2 * REWARD
    assert escrow.withdraw(ZERO_ADDRESS, {"from": worker}).return_value == 2 * REWARD
