"""extend: later deadline, more answers per task, optional top-up."""

from _helpers import token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import DAY, USDC, reverts


def test_extend_eth_batch(escrow, requester, eth_batch, workers, submit):
    batch = escrow.batch(eth_batch)
    new_deadline = batch["deadline"] + 2 * DAY
    owed = token_balance(ZERO_ADDRESS, escrow)
    tx = escrow.extend(eth_batch, new_deadline, 3, 500, {"from": requester, "value": 500})

    assert dict(tx.events["BatchExtended"]) == {
        "batchId": eth_batch, "deadline": new_deadline, "answersPerTask": 3, "topUp": 500,
    }
    after = escrow.batch(eth_batch)
    assert (after["deadline"], after["answersPerTask"], after["funds"]) == (new_deadline, 3, batch["funds"] + 500)
    assert token_balance(ZERO_ADDRESS, escrow) == owed + 500
    # a third answer per task is accepted now, and answers after the old deadline too
    submit([(workers[0], eth_batch, 0), (workers[1], eth_batch, 0)])
    chain.sleep(8 * DAY)
    assert submit([(workers[2], eth_batch, 0)]).return_value == 1


def test_extend_usdc_batch_pulls_top_up(escrow, stablecoin, funded_requester, usdc_batch):
    batch = escrow.batch(usdc_batch)
    escrow.extend(usdc_batch, batch["deadline"], 2, 7 * USDC, {"from": funded_requester})
    assert escrow.batch(usdc_batch)["funds"] == batch["funds"] + 7 * USDC
    assert stablecoin.balanceOf(escrow) == batch["funds"] + 7 * USDC


def test_extend_errors(escrow, requester, outsider, funded_requester, eth_batch, usdc_batch):
    deadline = escrow.batch(eth_batch)["deadline"]
    with reverts("EscrowUnknownBatch", 42):
        escrow.extend(42, deadline, 2, 0, {"from": requester})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.extend(eth_batch, deadline, 2, 0, {"from": outsider})
    with reverts("EscrowInvalidExtension", eth_batch):
        escrow.extend(eth_batch, deadline - 1, 2, 0, {"from": requester})
    with reverts("EscrowInvalidExtension", eth_batch):
        escrow.extend(eth_batch, deadline, 1, 0, {"from": requester})
    with reverts("EscrowInvalidExtension", eth_batch):
        escrow.extend(eth_batch, deadline, 2, 2**128, {"from": requester, "value": 0})
    with reverts("EscrowWrongDeposit", 100, 0):
        escrow.extend(eth_batch, deadline, 2, 100, {"from": requester})
    with reverts("EscrowUnexpectedValue", 3):  # the USDC batch's own deadline: created a moment later
        escrow.extend(usdc_batch, escrow.batch(usdc_batch)["deadline"], 2, 0, {"from": funded_requester, "value": 3})
