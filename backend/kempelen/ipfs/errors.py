"""Errors of the content stores; all derive from KempelenError."""

from kempelen.errors import KempelenError


class ContentError(KempelenError):
    """Something about stored or fetched content-addressed data is wrong."""


class BlockNotFound(ContentError, KeyError):
    """The store has no block for this CID."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "block not found"


class CorruptBlock(ContentError):
    """A block's bytes do not hash to the CID they were stored or sent under."""


class MalformedBlock(ContentError):
    """A block hashes correctly but is not valid dag-pb / UnixFS."""


class NotAFile(ContentError):
    """The CID names a UnixFS directory or other non-file node."""


class CarFormatError(ContentError):
    """A CAR stream that is not a valid CARv1."""


class ReplicationError(ContentError):
    """A Kubo node or pinning service refused, failed, or returned a different CID."""
