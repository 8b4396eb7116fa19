"""A batch's settled words as the chain's events record them: what `settle` and `openSettled` need.

The escrow keeps only a digest of each worker's settled words (kempelen.protocol.sealed); the
words themselves are in the batch's AnswersSettled events, and SettledWordsOpened says whose
words were stored for the direct path. `settled_history` reads both in one eth_getLogs and
rebuilds the SettledBook the SDK signs restated entries and `before` from, and the relay posts
settlements and opens sealed workers with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from kempelen.chain import artifacts
from kempelen.chain.contracts import Chain, ChainUnavailable
from kempelen.protocol.events import EventDecoder
from kempelen.protocol.sealed import SettledBook
from kempelen.protocol.settlement import settled_words_of_event

SETTLED_EVENTS = ("AnswersSettled", "SettledWordsOpened")


@dataclass(frozen=True)
class SettledOn:
    """Where a settlement paid an answer."""

    block_number: int
    tx_hash: str


@dataclass
class SettledHistory:
    """The batch's SettledBook, and for each answer its settlements paid, where."""

    book: SettledBook = field(default_factory=SettledBook)
    paid: dict[tuple[str, int], SettledOn] = field(default_factory=dict)  # (worker lower-case, task)

    def is_settled(self, worker: str, task_index: int) -> bool:
        return (worker.lower(), task_index) in self.paid


@cache
def _decoder() -> EventDecoder:
    return EventDecoder(artifacts.load("TaskEscrow").abi)


def settled_history(chain: Chain, batch_id: int) -> SettledHistory:
    """The batch's AnswersSettled and SettledWordsOpened events, folded; raises ChainUnavailable
    when the node does not answer (never guess: an empty book would mean "nothing settled")."""
    decoder = _decoder()
    try:
        reply = chain.w3.provider.make_request("eth_getLogs", [{
            "address": chain.escrow.address, "fromBlock": hex(chain.deployment.deploy_block), "toBlock": "latest",
            "topics": [decoder.topics(*SETTLED_EVENTS), "0x" + batch_id.to_bytes(32, "big").hex()],
        }])
    except Exception as exc:  # noqa: BLE001  (requests/httpx/OS errors vary by provider)
        raise ChainUnavailable(f"cannot read the settlements of batch {batch_id} ({type(exc).__name__})") from None
    if "error" in reply:
        raise ChainUnavailable(f"cannot read the settlements of batch {batch_id}: {reply['error'].get('message')}")
    history = SettledHistory()
    for event in decoder.decode_all(reply["result"]):
        if event.name == "SettledWordsOpened":
            history.book.opened.add(event.args["worker"])
            continue
        words = settled_words_of_event(event.args["settled"])
        history.book.add(words)
        where = SettledOn(event.block_number, event.transaction_hash)
        for word in words:
            for task_index in word.task_indexes():
                history.paid[(word.worker.lower(), task_index)] = where
    return history


def settled_book(chain: Chain, batch_id: int) -> SettledBook:
    return settled_history(chain, batch_id).book
