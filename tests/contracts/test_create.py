"""createBatch, and multicall([permitDeposit, createBatch]) to approve and fund in one transaction:
deposits in ETH and a 6-decimal ERC-20, terms validation."""

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


def _permit_holder(owner, stablecoin):
    """A fresh key-holding worker account, given gas and 100 test USDC, no allowance."""
    brownie.accounts[0].transfer(owner, 10**18)
    stablecoin.mint(owner, 100 * USDC, {"from": owner})
    return owner


def _permit_and_create(escrow, token, value, deadline, signature, batch_terms) -> list[bytes]:
    """multicall's calls: permitDeposit, then createBatch (one transaction, ERC-20 only)."""
    v, r, s = signature
    return [escrow.permitDeposit.encode_input(token, value, deadline, v, r, s),
            escrow.createBatch.encode_input(as_tuple(batch_terms))]


def test_permit_and_create_in_one_transaction(escrow, stablecoin, workers, permit_signature):
    owner = _permit_holder(workers[0], stablecoin)  # signs the permit, pays gas itself
    t = terms(stablecoin)
    deposit = deposit_of(t)
    deadline = chain.time() + DAY
    signature = permit_signature(owner.private_key, owner, escrow, deposit, deadline)
    nonce = owner.nonce

    tx = escrow.multicall(_permit_and_create(escrow, stablecoin, deposit, deadline, signature, t), {"from": owner})
    assert owner.nonce == nonce + 1  # one transaction
    assert tx.events["BatchCreated"]["requester"] == owner
    assert tx.events["BatchCreated"]["deposit"] == deposit
    permit_result, create_result = tx.return_value
    assert bytes(permit_result) == b""
    assert int.from_bytes(bytes(create_result), "big") == tx.events["BatchCreated"]["batchId"] == 1
    assert escrow.batch(1)["requester"] == owner
    assert stablecoin.balanceOf(escrow) == deposit
    assert stablecoin.allowance(owner, escrow) == 0
    assert stablecoin.nonces(owner) == 1


def test_a_front_run_permit_still_funds_the_batch(escrow, stablecoin, workers, outsider, permit_signature):
    owner = _permit_holder(workers[1], stablecoin)
    t = terms(stablecoin)
    deposit = deposit_of(t)
    deadline = chain.time() + DAY
    signature = permit_signature(owner.private_key, owner, escrow, deposit, deadline)
    # Someone copies the permit from the mempool and spends it first: the allowance is in place.
    stablecoin.permit(owner, escrow, deposit, deadline, *signature, {"from": outsider})

    tx = escrow.multicall(_permit_and_create(escrow, stablecoin, deposit, deadline, signature, t), {"from": owner})
    assert tx.events["BatchCreated"]["deposit"] == deposit
    assert stablecoin.allowance(owner, escrow) == 0


@pytest.mark.parametrize("spent", ["expired", "wrong-signer", "used-nonce"])
def test_a_spent_permit_is_ignored_when_an_allowance_exists(escrow, stablecoin, workers, permit_signature, spent):
    owner = _permit_holder(workers[2], stablecoin)
    t = terms(stablecoin)
    deposit = deposit_of(t)
    stablecoin.approve(escrow, deposit, {"from": owner})
    deadline = chain.time() + DAY
    if spent == "expired":
        deadline = chain.time() - 1
        signature = permit_signature(owner.private_key, owner, escrow, deposit, deadline)
    elif spent == "wrong-signer":
        signature = permit_signature(workers[3].private_key, owner, escrow, deposit, deadline)
    else:
        signature = permit_signature(owner.private_key, owner, escrow, deposit, deadline, nonce=7)
    with brownie.reverts():  # the token refuses it...
        stablecoin.permit(owner, escrow, deposit, deadline, *signature, {"from": owner})
    # ...permitDeposit swallows that, and createBatch spends the allowance there is.
    tx = escrow.multicall(_permit_and_create(escrow, stablecoin, deposit, deadline, signature, t), {"from": owner})
    assert tx.events["BatchCreated"]["deposit"] == deposit
    assert stablecoin.allowance(owner, escrow) == 0


def test_permit_and_create_fails_without_allowance(escrow, stablecoin, workers, permit_signature):
    owner = _permit_holder(workers[2], stablecoin)
    t = terms(stablecoin)
    deadline = chain.time() + DAY
    signature = permit_signature(owner.private_key, owner, escrow, 1, deadline)  # wrong value signed
    calls = _permit_and_create(escrow, stablecoin, deposit_of(t), deadline, signature, t)
    with reverts("ERC20InsufficientAllowance", escrow, 0, deposit_of(t)):
        escrow.multicall(calls, {"from": owner})
    assert escrow.batchCount() == 0
    assert stablecoin.nonces(owner) == 0  # the whole transaction reverted


def test_permit_deposit_only_permits_for_the_caller(escrow, stablecoin, workers, outsider, permit_signature):
    """permitDeposit passes msg.sender as the permit's owner: someone else's permit does nothing
    (for them or for its signer) when they post it through the escrow."""
    owner = _permit_holder(workers[3], stablecoin)
    deadline = chain.time() + DAY
    signature = permit_signature(owner.private_key, owner, escrow, 5 * USDC, deadline)
    escrow.permitDeposit(stablecoin, 5 * USDC, deadline, *signature, {"from": outsider})
    assert stablecoin.allowance(owner, escrow) == 0
    assert stablecoin.allowance(outsider, escrow) == 0
    escrow.permitDeposit(stablecoin, 5 * USDC, deadline, *signature, {"from": owner})
    assert stablecoin.allowance(owner, escrow) == 5 * USDC


def test_permit_deposit_ignores_a_contract_without_permit(escrow, reputation, requester):
    tx = escrow.permitDeposit(reputation, 1, 0, 27, b"\x00" * 32, b"\x00" * 32, {"from": requester})
    assert tx.status == 1


def test_an_eth_batch_through_multicall_fails_cleanly(escrow, requester):
    """multicall is not payable: an ETH batch cannot be funded through it, with or without value,
    and nothing is created or kept."""
    assert escrow.multicall.abi["stateMutability"] == "nonpayable"
    t = terms()
    deposit = deposit_of(t)
    create = escrow.createBatch.encode_input(as_tuple(t))
    balance = requester.balance()
    with reverts("EscrowWrongDeposit", deposit, 0):
        escrow.multicall([create], {"from": requester})
    with brownie.reverts():
        escrow.multicall([create], {"from": requester, "value": deposit})
    # A permit for "ETH" (no token contract) in front does not help.
    permit = escrow.permitDeposit.encode_input(ZERO_ADDRESS, deposit, 0, 27, b"\x00" * 32, b"\x00" * 32)
    with brownie.reverts():
        escrow.multicall([permit, create], {"from": requester})
    assert escrow.batchCount() == 0
    assert escrow.balance() == 0
    assert requester.balance() == balance


def test_multicall_cannot_reuse_msg_value(escrow, requester):
    """Two ETH batches paid by one deposit: refused (multicall takes no value at all), where a
    payable multicall would let every delegated createBatch see the same msg.value."""
    t = terms()
    deposit = deposit_of(t)
    create = escrow.createBatch.encode_input(as_tuple(t))
    for value in (deposit, 2 * deposit):
        with brownie.reverts():
            escrow.multicall([create, create], {"from": requester, "value": value})
    with reverts("EscrowWrongDeposit", deposit, 0):
        escrow.multicall([create, create], {"from": requester})
    assert escrow.batchCount() == 0
    assert escrow.balance() == 0
    # createBatch itself still takes the value, once per call.
    escrow.createBatch(as_tuple(t), {"from": requester, "value": deposit})
    assert escrow.balance() == deposit


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
