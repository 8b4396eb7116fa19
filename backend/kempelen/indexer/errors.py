"""Errors of the indexer; the CLI prints their message as one line."""

from kempelen.errors import KempelenError


class IndexerError(KempelenError):
    """Root of the indexer's errors."""


class RpcError(IndexerError):
    """The JSON-RPC endpoint failed, refused a request or answered nonsense."""


class RangeTooLarge(RpcError):
    """The node refused an eth_getLogs range as too large; the caller retries a smaller one."""


class ReorgTooDeep(IndexerError):
    """The chain reorganised below the oldest block hash the indexer kept."""


class CheckpointConflict(IndexerError):
    """The checkpoint moved under us: another indexer writes the same chain into this database."""
