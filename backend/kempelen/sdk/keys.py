"""Private keys for the SDK and CLI: an encrypted keystore file or an environment variable.

Keys are never printed, logged or sent to the relay: only signatures leave this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account

from kempelen.errors import KempelenError

KEY_ENV = "KEMPELEN_PRIVATE_KEY"
PASSWORD_ENV = "KEMPELEN_KEYSTORE_PASSWORD"


class KeyLoadError(KempelenError):
    """A key that cannot be loaded: missing, malformed, or a wrong keystore password."""


class Signer:
    """A loaded private key; its repr shows the address only."""

    def __init__(self, private_key: str):
        try:
            self._account = Account.from_key(private_key)
        except (ValueError, TypeError):
            raise KeyLoadError("not a valid private key (expected 32 bytes of hex)") from None

    @property
    def address(self) -> str:
        return self._account.address

    @property
    def private_key(self) -> str:
        return "0x" + bytes(self._account.key).hex()

    def __repr__(self) -> str:
        return f"Signer({self.address})"


def load_signer(keystore: str | Path | None = None, password: str | None = None,
                env: str = KEY_ENV) -> Signer:
    """From `keystore` (password from the argument or $KEMPELEN_KEYSTORE_PASSWORD), else $env."""
    if keystore:
        path = Path(keystore)
        try:
            encrypted = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyLoadError(f"keystore file not found: {path}") from None
        except ValueError:
            raise KeyLoadError(f"keystore file is not JSON: {path}") from None
        password = password if password is not None else os.environ.get(PASSWORD_ENV)
        if password is None:
            raise KeyLoadError(f"keystore {path} needs a password (--password or ${PASSWORD_ENV})")
        try:
            return Signer("0x" + bytes(Account.decrypt(encrypted, password)).hex())
        except ValueError:
            raise KeyLoadError(f"wrong password for keystore {path}") from None
    value = os.environ.get(env)
    if not value:
        raise KeyLoadError(f"no key: pass --keystore FILE or set ${env}")
    return Signer(value)


def write_keystore(private_key: str, password: str, path: str | Path) -> Path:
    """Encrypt `private_key` into an eth-account (Web3 Secret Storage v3) keystore file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Account.encrypt(private_key, password)))
    path.chmod(0o600)
    return path
