"""Shared fixtures for the contract tests: deployments, funded requester, worker keys, signed answers.

Deployments are module-scoped and every test runs in its own snapshot (`fn_isolation`), so
tests are independent and cheap. Helpers other test modules reuse:

    sign_answers(escrow, [(worker, batch_id, task_index), ...], compact=False) -> (answers, sigs)
    new_batch(escrow, requester, token=..., **terms) -> batch id (ETH if token is None)
    revert_msg("EscrowUnknownBatch", 7) -> the string `brownie.reverts` compares against
    settled(tx, "AnswersApproved") -> [(worker, taskIndex), ...] in emission order
    sets([(worker, taskIndex), ...] or entries) -> TaskSet tuples for approve / reject / release
    submitted(tx) -> [(worker, taskIndex, answerDigest), ...] the AnswersSubmitted events accept
"""

from __future__ import annotations

import brownie
import pytest
from _helpers import outcomes, reviewed, sets, single, submitted  # noqa: F401  (re-exported for the tests importing from conftest)
from brownie import Reputation, TaskEscrow, TestStablecoin, accounts, chain
from eth_account import Account
from eth_hash.auto import keccak

from kempelen.protocol.signing import (
    Answer,
    Domain,
    Withdrawal,
    answer_digest,
    permit_typed_data,
    sign,
    to_compact,
)

USDC = 10**6  # one unit of the 6-decimal test stablecoin
DAY = 86_400
MANIFEST_CID = bytes.fromhex("01551220") + keccak(b"manifest")  # any binary CID will do
REASON_CID = bytes.fromhex("01551220") + keccak(b"reason")
N_WORKERS = 6


# ------------------------------------------------------------------ plain helpers


def revert_msg(error: str, *args) -> str:
    """The revert string brownie decodes for a custom error: `Name: arg1, arg2`.

    Addresses are compared lowercase (that is how brownie decodes them), enums as ints.
    """
    parts = []
    for arg in args:
        if hasattr(arg, "address"):
            arg = arg.address
        if isinstance(arg, str) and arg.startswith("0x") and len(arg) == 42:
            arg = arg.lower()
        if hasattr(arg, "value") and not isinstance(arg, (int, bytes)):  # enum.Enum
            arg = arg.value
        parts.append(str(arg))
    return f"{error}: {', '.join(parts)}"


def reverts(error: str, *args):
    """`with reverts("EscrowUnknownBatch", 7): ...` — a custom error with its arguments."""
    return brownie.reverts(revert_msg(error, *args))


def digest_for(worker, batch_id: int, task_index: int) -> bytes:
    """A deterministic answer digest: sha256 of a small JSON answer payload."""
    return answer_digest(f'{{"batch":{batch_id},"task":{task_index},"worker":"{worker.address}"}}'.encode())


def sign_answers(escrow, entries, compact: bool = False):
    """Signed answers for `entries` of (worker LocalAccount, batch_id, task_index[, digest]).

    Returns (answers as ABI tuples, signatures as bytes) ready for `escrow.submitAnswers`.
    """
    domain = Domain(chain.id, escrow.address)
    answers, signatures = [], []
    for entry in entries:
        worker, batch_id, task_index = entry[:3]
        digest = entry[3] if len(entry) > 3 else digest_for(worker, batch_id, task_index)
        answer = Answer(batch_id, task_index, digest, worker.address)
        signature = sign(domain.digest(answer.struct_hash()), worker.private_key)
        answers.append(answer.as_tuple())
        signatures.append(to_compact(signature) if compact else signature)
    return answers, signatures


def sign_withdrawal(escrow, worker, token, nonce: int, deadline: int, signer=None) -> bytes:
    """The worker's Withdrawal signature (signed by `signer`'s key instead, to forge one)."""
    domain = Domain(chain.id, escrow.address)
    withdrawal = Withdrawal(worker.address, str(token), nonce, deadline)
    return sign(domain.digest(withdrawal.struct_hash()), (signer or worker).private_key)


def terms(token=None, **overrides) -> dict:
    """Batch terms with small defaults; amounts in the token's base unit."""
    values = {
        "token": str(token) if token is not None else brownie.ZERO_ADDRESS,
        "taskCount": 4,
        "answersPerTask": 2,
        "reward": 1 * USDC,
        "relayFee": 10_000,
        "deadline": chain.time() + 7 * DAY,
        "reviewWindow": 3 * DAY,
        "minReputation": 0,
        "goldCommitment": b"\x00" * 32,
        "manifestCid": MANIFEST_CID,
    }
    values.update(overrides)
    return values


def as_tuple(batch_terms: dict) -> tuple:
    keys = ["token", "taskCount", "answersPerTask", "reward", "relayFee", "deadline",
            "reviewWindow", "minReputation", "goldCommitment", "manifestCid"]
    return tuple(batch_terms[k] for k in keys)


def deposit_of(batch_terms: dict) -> int:
    return batch_terms["taskCount"] * batch_terms["answersPerTask"] * (
        batch_terms["reward"] + batch_terms["relayFee"]
    )


def new_batch(escrow, requester, token=None, **overrides) -> int:
    """Create a funded batch (ETH when token is None; the requester must have approved the token)."""
    batch_terms = terms(token, **overrides)
    value = deposit_of(batch_terms) if token is None else 0
    tx = escrow.createBatch(as_tuple(batch_terms), {"from": requester, "value": value})
    return tx.return_value


def settled(tx, event: str) -> list[tuple[str, int]]:
    return [(worker, task) for _, worker, task in reviewed(tx, event)]


def ints(values) -> tuple[int, ...]:
    """A returned tuple as plain ints (brownie's ReturnValue does not compare with int tuples)."""
    return tuple(int(x) for x in values)


def status(escrow, batch_id, worker, task_index) -> tuple[int, int]:
    """answerStatus as plain ints: (AnswerStatus, reviewDeadline)."""
    return tuple(int(x) for x in escrow.answerStatus(batch_id, worker, task_index))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture(scope="module")
def deployer():
    return accounts[0]


@pytest.fixture(scope="module")
def requester():
    return accounts[1]


@pytest.fixture(scope="module")
def relayer():
    return accounts[2]


@pytest.fixture(scope="module")
def outsider():
    return accounts[3]


@pytest.fixture(scope="module")
def workers():
    """Workers with known private keys (`.private_key`) and no ETH: they only sign."""
    keys = [keccak(f"kempelen test worker {i}".encode()) for i in range(N_WORKERS)]
    return [accounts.add(key) for key in keys]


@pytest.fixture(scope="module")
def reputation(deployer):
    return Reputation.deploy(deployer, {"from": deployer})


@pytest.fixture(scope="module")
def escrow(reputation, deployer):
    escrow = TaskEscrow.deploy(reputation, {"from": deployer})
    reputation.setEscrow(escrow, True, {"from": deployer})
    return escrow


@pytest.fixture(scope="module")
def stablecoin(deployer):
    return TestStablecoin.deploy({"from": deployer})


@pytest.fixture(scope="module")
def funded_requester(requester, stablecoin, escrow):
    """The requester holding 1,000,000 test USDC, escrow approved for all of it."""
    stablecoin.mint(requester, 1_000_000 * USDC, {"from": requester})
    stablecoin.approve(escrow, 2**256 - 1, {"from": requester})
    return requester


@pytest.fixture
def eth_batch(escrow, requester):
    """An ETH batch with default terms: 4 tasks x 2 answers, reward 1e6 wei, fee 1e4 wei."""
    return new_batch(escrow, requester)


@pytest.fixture
def usdc_batch(escrow, funded_requester, stablecoin):
    """A test-USDC batch with default terms: 4 tasks x 2 answers, 1 USDC reward, 0.01 fee."""
    return new_batch(escrow, funded_requester, stablecoin)


@pytest.fixture
def submit(escrow, relayer):
    """submit(entries, compact=False, sender=relayer) -> tx: sign and relay answers."""

    def _submit(entries, compact=False, sender=None):
        answers, signatures = sign_answers(escrow, entries, compact)
        return escrow.submitAnswers(answers, signatures, {"from": sender or relayer})

    return _submit


@pytest.fixture
def permit_signature(stablecoin):
    """permit_signature(owner_key, owner, spender, value, deadline, nonce=None) -> (v, r, s)."""

    def _sign(owner_key, owner, spender, value, deadline, nonce=None):
        nonce = stablecoin.nonces(owner) if nonce is None else nonce
        message = permit_typed_data(stablecoin.name(), chain.id, stablecoin.address, str(owner), str(spender),
                                    value, nonce, deadline)
        signed = Account.sign_typed_data(owner_key, full_message=message)
        return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")

    return _sign


__all__ = [
    "DAY", "MANIFEST_CID", "REASON_CID", "USDC", "as_tuple", "deposit_of", "digest_for",
    "ints", "new_batch", "sets", "single", "status", "revert_msg", "reverts", "settled", "sign_answers", "sign_withdrawal",
    "terms",
]
