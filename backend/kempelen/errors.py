"""The package's exceptions: every error Kempelen raises derives from KempelenError."""


class KempelenError(Exception):
    """Root of every error Kempelen raises on purpose; the CLI prints its message."""


class InvalidCID(KempelenError, ValueError):
    """A CID that is malformed, or outside what Kempelen uses (sha2-256; raw or dag-pb)."""
