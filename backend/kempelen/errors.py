"""The package's exceptions: every error Kempelen raises derives from KempelenError."""


class KempelenError(Exception):
    """Root of every error Kempelen raises on purpose; the CLI prints its message."""
