"""Contract-event indexer: escrow and reputation events mirrored into SQL, reorg-safe.

`source` fetches raw logs, `projection` turns decoded events into rows (pure), `store`
writes rows and the checkpoint in one transaction, `runner` drives the loop, `cli` is
`kempelen index`.
"""

from kempelen.indexer.errors import IndexerError

__all__ = ["IndexerError"]
