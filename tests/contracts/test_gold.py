"""revealGold: the requester opens the gold-answer commitment made at creation."""

from eth_hash.auto import keccak
from conftest import new_batch, reverts

GOLD_CID = bytes.fromhex("01551220") + keccak(b"gold answers")
SALT = keccak(b"salt")


def test_reveal_gold(escrow, requester):
    batch_id = new_batch(escrow, requester, goldCommitment=keccak(GOLD_CID + SALT))
    tx = escrow.revealGold(batch_id, GOLD_CID, SALT, {"from": requester})
    assert dict(tx.events["GoldRevealed"]) == {
        "batchId": batch_id, "goldCid": "0x" + GOLD_CID.hex(), "salt": "0x" + SALT.hex(),
    }


def test_reveal_gold_errors(escrow, requester, outsider, eth_batch):
    batch_id = new_batch(escrow, requester, goldCommitment=keccak(GOLD_CID + SALT))
    with reverts("EscrowGoldMismatch", batch_id):
        escrow.revealGold(batch_id, GOLD_CID, keccak(b"other salt"), {"from": requester})
    with reverts("EscrowGoldMismatch", eth_batch):  # committed to nothing
        escrow.revealGold(eth_batch, GOLD_CID, SALT, {"from": requester})
    with reverts("EscrowNotRequester", batch_id, outsider):
        escrow.revealGold(batch_id, GOLD_CID, SALT, {"from": outsider})
    with reverts("EscrowUnknownBatch", 99):
        escrow.revealGold(99, GOLD_CID, SALT, {"from": requester})
