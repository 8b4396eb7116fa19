"""bonus: the requester tips a worker from its own wallet, credited to the worker's balance."""

from _helpers import token_balance
from brownie import ZERO_ADDRESS
from conftest import REASON_CID, USDC, reverts


def test_bonus_in_eth(escrow, requester, eth_batch, workers):
    owed = token_balance(ZERO_ADDRESS, escrow)
    tx = escrow.bonus(eth_batch, workers[0], 12345, REASON_CID, {"from": requester, "value": 12345})
    assert escrow.balanceOf(ZERO_ADDRESS, workers[0]) == 12345
    assert token_balance(ZERO_ADDRESS, escrow) == owed + 12345
    assert dict(tx.events["BonusPaid"]) == {
        "batchId": eth_batch, "worker": workers[0], "amount": 12345, "reasonCid": "0x" + REASON_CID.hex(),
    }


def test_bonus_in_usdc_comes_from_the_wallet_not_the_batch(escrow, stablecoin, funded_requester, usdc_batch, workers):
    funds = escrow.batch(usdc_batch)["funds"]
    wallet = stablecoin.balanceOf(funded_requester)
    escrow.bonus(usdc_batch, workers[1], 5 * USDC, b"", {"from": funded_requester})
    assert escrow.balanceOf(stablecoin, workers[1]) == 5 * USDC
    assert stablecoin.balanceOf(funded_requester) == wallet - 5 * USDC
    assert escrow.batch(usdc_batch)["funds"] == funds


def test_bonus_errors(escrow, requester, outsider, funded_requester, eth_batch, usdc_batch, workers):
    with reverts("EscrowUnknownBatch", 99):
        escrow.bonus(99, workers[0], 1, b"", {"from": requester, "value": 1})
    with reverts("EscrowNotRequester", eth_batch, outsider):
        escrow.bonus(eth_batch, workers[0], 1, b"", {"from": outsider, "value": 1})
    with reverts("EscrowInvalidTerms", "worker"):
        escrow.bonus(eth_batch, ZERO_ADDRESS, 1, b"", {"from": requester, "value": 1})
    with reverts("EscrowInvalidTerms", "amount"):
        escrow.bonus(eth_batch, workers[0], 0, b"", {"from": requester})
    with reverts("EscrowWrongDeposit", 10, 9):
        escrow.bonus(eth_batch, workers[0], 10, b"", {"from": requester, "value": 9})
    with reverts("EscrowUnexpectedValue", 1):
        escrow.bonus(usdc_batch, workers[0], 10, b"", {"from": funded_requester, "value": 1})
