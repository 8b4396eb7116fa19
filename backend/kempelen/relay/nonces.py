"""The relayer's nonce, kept locally so several transactions can be in flight, re-synced from the chain."""

from __future__ import annotations

from collections.abc import Callable


class NonceManager:
    """Hands out consecutive nonces for one relayer account.

    Starts from the chain's pending transaction count (which counts our broadcast but unmined
    transactions) and goes back to it whenever the node says a nonce was already used, e.g.
    after an operator sent a transaction from the same key by hand.
    """

    def __init__(self, pending_count: Callable[[], int]):
        self._pending_count = pending_count
        self._next: int | None = None

    def take(self) -> int:
        """The nonce for the next new transaction."""
        if self._next is None:
            self._next = self._pending_count()
        nonce = self._next
        self._next += 1
        return nonce

    def give_back(self, nonce: int) -> None:
        """Return the most recently taken nonce when its transaction was never broadcast."""
        if self._next is not None and nonce == self._next - 1:
            self._next = nonce

    def resync(self, at_least: int = 0) -> int:
        """Forget the local count and take the chain's (never below `at_least`)."""
        self._next = max(self._pending_count(), at_least)
        return self._next

    @property
    def next(self) -> int | None:
        return self._next
