"""createBatch / createBatchWithPermit: deposits in ETH and a 6-decimal ERC-20, terms validation."""

import brownie
import pytest
from _helpers import token_balance
from brownie import ZERO_ADDRESS, chain
from conftest import DAY, MANIFEST_CID, USDC, as_tuple, deposit_of, reverts, terms


def test_create_eth_batch_stores_terms_and_emits(escrow, requester):
    t = terms(goldCommitment=b"\x11" * 32, minReputation=3)
    deposit = deposit_of(t)
    before = escrow.balance()
    tx = escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit})

    assert tx.return_value == 1
    assert escrow.batchCount() == 1
    assert escrow.balance() - before == deposit
    assert token_balance(ZERO_ADDRESS, escrow) == deposit
    assert escrow.batch(1).dict() == {
        "requester": requester, "deadline": t["deadline"], "reviewWindow": t["reviewWindow"],
        "answersPerTask": t["answersPerTask"], "token": ZERO_ADDRESS, "taskCount": t["taskCount"],
        "minReputation": 3, "reward": t["reward"], "relayFee": t["relayFee"], "funds": deposit,
        "pending": 0, "goldCommitment": "0x" + "11" * 32,
    }
    event = tx.events["BatchCreated"]
    assert dict(event) == {
        "batchId": 1, "requester": requester, "token": ZERO_ADDRESS, "taskCount": t["taskCount"],
        "answersPerTask": t["answersPerTask"], "reward": t["reward"], "relayFee": t["relayFee"],
        "deadline": t["deadline"], "reviewWindow": t["reviewWindow"], "minReputation": 3,
        "goldCommitment": "0x" + "11" * 32, "deposit": deposit, "manifestCid": "0x" + MANIFEST_CID.hex(),
    }


def test_create_erc20_batch_pulls_deposit(escrow, funded_requester, stablecoin):
    t = terms(stablecoin, taskCount=10, answersPerTask=3, reward=250_000, relayFee=5_000)
    deposit = deposit_of(t)
    assert deposit == 10 * 3 * 255_000
    before = stablecoin.balanceOf(funded_requester)
    tx = escrow.createBatch(as_tuple(t), {"from": funded_requester})

    assert stablecoin.balanceOf(escrow) == deposit
    assert stablecoin.balanceOf(funded_requester) == before - deposit
    assert token_balance(stablecoin, escrow) == deposit
    assert escrow.batch(tx.return_value)["funds"] == deposit
    assert tx.events["BatchCreated"]["token"] == stablecoin
    assert tx.events["BatchCreated"]["deposit"] == deposit


def test_batch_ids_are_sequential(escrow, requester):
    t = terms()
    ids = [escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit_of(t)}).return_value
           for _ in range(3)]
    assert ids == [1, 2, 3]
    assert escrow.batchCount() == 3


def test_create_with_permit_in_one_transaction(escrow, stablecoin, workers, permit_signature):
    owner = workers[0]  # a fresh key-holding account: it signs the permit, pays gas itself
    brownie.accounts[0].transfer(owner, 10**18)
    stablecoin.mint(owner, 100 * USDC, {"from": owner})
    t = terms(stablecoin)
    deposit = deposit_of(t)
    deadline = chain.time() + DAY
    v, r, s = permit_signature(owner.private_key, owner, escrow, deposit, deadline)

    tx = escrow.createBatchWithPermit(as_tuple(t), deadline, v, r, s, {"from": owner})
    assert tx.events["BatchCreated"]["requester"] == owner
    assert stablecoin.balanceOf(escrow) == deposit
    assert stablecoin.allowance(owner, escrow) == 0


def test_create_with_permit_survives_front_run_permit(escrow, stablecoin, workers, outsider, permit_signature):
    owner = workers[1]
    brownie.accounts[0].transfer(owner, 10**18)
    stablecoin.mint(owner, 100 * USDC, {"from": owner})
    t = terms(stablecoin)
    deposit = deposit_of(t)
    deadline = chain.time() + DAY
    v, r, s = permit_signature(owner.private_key, owner, escrow, deposit, deadline)
    # Someone copies the permit from the mempool and spends it first: the allowance is in place.
    stablecoin.permit(owner, escrow, deposit, deadline, v, r, s, {"from": outsider})

    tx = escrow.createBatchWithPermit(as_tuple(t), deadline, v, r, s, {"from": owner})
    assert tx.events["BatchCreated"]["deposit"] == deposit


def test_create_with_permit_fails_without_allowance(escrow, stablecoin, workers, permit_signature):
    owner = workers[2]
    brownie.accounts[0].transfer(owner, 10**18)
    stablecoin.mint(owner, 100 * USDC, {"from": owner})
    t = terms(stablecoin)
    deadline = chain.time() + DAY
    v, r, s = permit_signature(owner.private_key, owner, escrow, 1, deadline)  # wrong value signed
    with reverts("ERC20InsufficientAllowance", escrow, 0, deposit_of(t)):
        escrow.createBatchWithPermit(as_tuple(t), deadline, v, r, s, {"from": owner})


def test_create_with_permit_refuses_eth(escrow, requester):
    with reverts("EscrowInvalidTerms", "token"):
        escrow.createBatchWithPermit(as_tuple(terms()), 0, 27, b"\x00" * 32, b"\x00" * 32, {"from": requester})


def test_eth_deposit_must_be_exact(escrow, requester):
    t = terms()
    deposit = deposit_of(t)
    with reverts("EscrowWrongDeposit", deposit, deposit - 1):
        escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit - 1})
    with reverts("EscrowWrongDeposit", deposit, deposit + 1):
        escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit + 1})


def test_erc20_batch_refuses_eth(escrow, funded_requester, stablecoin):
    with reverts("EscrowUnexpectedValue", 5):
        escrow.createBatch(as_tuple(terms(stablecoin)), {"from": funded_requester, "value": 5})


@pytest.mark.parametrize(
    "field,value",
    [("taskCount", 0), ("answersPerTask", 0), ("reward", 0), ("reviewWindow", 0), ("manifestCid", b"")],
)
def test_invalid_terms(escrow, requester, field, value):
    t = terms(**{field: value})
    with reverts("EscrowInvalidTerms", field):
        escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit_of(t)})


def test_deadline_must_be_in_the_future(escrow, requester):
    t = terms(deadline=chain[-1].timestamp - 1)
    with reverts("EscrowInvalidTerms", "deadline"):
        escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit_of(t)})


def test_deposit_must_fit_the_batch_funds(escrow, requester):
    t = terms(taskCount=2**32 - 1, answersPerTask=255, reward=2**96 - 1)
    with reverts("EscrowInvalidTerms", "deposit"):
        escrow.createBatch(as_tuple(t), {"from": requester, "value": 0})


@pytest.mark.parametrize("field", ["reward", "relayFee"])
def test_reward_and_fee_fit_96_bits(escrow, requester, stablecoin, field):
    """The batch record packs reward and relay fee into 96 bits each (token + reward in one slot)."""
    stablecoin.mint(requester, 2**98, {"from": requester})
    stablecoin.approve(escrow, 2**98, {"from": requester})
    t = terms(stablecoin, taskCount=1, answersPerTask=1, **{field: 2**96})
    with reverts("EscrowInvalidTerms", field):
        escrow.createBatch(as_tuple(t), {"from": requester})
    t = terms(stablecoin, taskCount=1, answersPerTask=1, **{field: 2**96 - 1})
    escrow.createBatch(as_tuple(t), {"from": requester})
    assert escrow.batch(escrow.batchCount())[field] == 2**96 - 1


def test_unknown_batch_view_is_empty(escrow):
    assert escrow.batch(42)["requester"] == ZERO_ADDRESS
    assert escrow.reputation() != ZERO_ADDRESS
