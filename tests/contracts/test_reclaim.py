"""reclaim: the requester takes back the unallocated deposit after the deadline."""

from _helpers import token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import DAY, REASON_CID, reverts, sets


def test_reclaim_refunds_exactly_the_unused_deposit(escrow, stablecoin, funded_requester, usdc_batch, workers, submit):
    batch = escrow.batch(usdc_batch)
    submit([(workers[0], usdc_batch, 0), (workers[1], usdc_batch, 0), (workers[0], usdc_batch, 1)])
    escrow.approve(usdc_batch, sets([(workers[0], 0), (workers[1], 0)]), {"from": funded_requester})
    escrow.reject(usdc_batch, sets([(workers[0], 1)]), REASON_CID, {"from": funded_requester})
    chain.sleep(8 * DAY)

    wallet = stablecoin.balanceOf(funded_requester)
    owed = token_balance(stablecoin, escrow)
    # 8 slots paid for; 3 accepted (3 relay fees spent), 2 paid, 1 rejected (its reward returned)
    expected = batch["funds"] - 3 * batch["relayFee"] - 2 * batch["reward"]
    tx = escrow.reclaim(usdc_batch, {"from": funded_requester})

    assert tx.return_value == expected
    assert dict(tx.events["BatchReclaimed"]) == {"batchId": usdc_batch, "requester": funded_requester, "amount": expected}
    assert stablecoin.balanceOf(funded_requester) == wallet + expected
    assert token_balance(stablecoin, escrow) == owed - expected
    assert escrow.batch(usdc_batch)["funds"] == 0
    # what is left in the escrow is exactly what workers and the relay are owed
    assert token_balance(stablecoin, escrow) == 2 * batch["reward"] + 3 * batch["relayFee"]


def test_reclaim_eth(escrow, requester, eth_batch):
    funds = escrow.batch(eth_batch)["funds"]
    chain.sleep(8 * DAY)
    before = requester.balance()
    escrow.reclaim(eth_batch, {"from": requester, "gas_price": 0})
    assert requester.balance() == before + funds
    assert token_balance(ZERO_ADDRESS, escrow) == 0


def test_reclaim_errors(escrow, requester, outsider, eth_batch, workers, submit):
    deadline = escrow.batch(eth_batch)["deadline"]
    with reverts("EscrowUnknownBatch", 3):
        escrow.reclaim(3, {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.reclaim(eth_batch, {"from": outsider})
    with reverts("EscrowDeadlineNotPassed", eth_batch, deadline):
        escrow.reclaim(eth_batch, {"from": requester})
    submit([(workers[0], eth_batch, 0)])
    chain.sleep(8 * DAY)
    with reverts("EscrowReviewsPending", eth_batch, 1):
        escrow.reclaim(eth_batch, {"from": requester})
    escrow.release(eth_batch, sets([(workers[0], 0)]), {"from": outsider})
    escrow.reclaim(eth_batch, {"from": requester})
    with reverts("EscrowNothingToReclaim", eth_batch):
        escrow.reclaim(eth_batch, {"from": requester})
